// Synthetic datasets, generated once at construction and deterministic given the seed
// (docs/DATASETS.md):
//
//   synthetic_classification: each class k has a fixed centre c_k (a per-channel offset,
//     broadcast over the other axes, plus an i.i.d. pattern, both N(0, 1), scaled by
//     1/sqrt(2)); a sample is c_label + NOISE * N(0, 1) with a uniform label. Learnable
//     by an MLP (the pattern) and by a CNN with global pooling (the channel offsets).
//   synthetic_tokens: a fixed sparse Markov chain over the vocabulary: each token has 3
//     successors with probabilities 0.6 / 0.3 / 0.1, the first one along a random cycle
//     through every token (so the chain is irreducible and train/test walks share it);
//     sequences are windows of one long walk (as TokenDataset cuts a stream). A model
//     that learns the transition table reaches the chain's entropy rate,
//     synthetic_tokens_entropy() (~0.90 nats/token), instead of ln(vocab).
//
// Class centres and the Markov chain depend only on the seed; train and test splits are
// different draws from them. Generation uses dtrain::data::Rng, never the global torch
// RNG, so building a dataset does not change model initialization.
//
//   SyntheticClassificationOptions o;
//   o.input_shape = {3, 32, 32};
//   o.seed = 42;
//   SyntheticClassification train(o);                  // o.train = true by default
//
// Immutable after construction: get_batch is thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/data/in_memory.h"

namespace dtrain::data {

struct SyntheticClassificationOptions {
  int64_t num_samples = 8192;             // DATASETS.SYNTHETIC.NUM_TRAIN / NUM_TEST
  std::vector<int64_t> input_shape{784};  // DATASETS.SYNTHETIC.INPUT_SHAPE
  int64_t num_classes = 10;               // DATASETS.SYNTHETIC.NUM_CLASSES
  double noise = 0.5;                     // DATASETS.SYNTHETIC.NOISE
  uint64_t seed = 0;                      // SEED
  bool train = true;                      // which split
};

class SyntheticClassification : public ClassificationDataset {
 public:
  // Generates the split. Throws dtrain::ConfigError (naming the config key) for a
  // non-positive size, shape entry or class count, or a negative noise.
  explicit SyntheticClassification(const SyntheticClassificationOptions& options);

  // The class centres, float32 [num_classes, input_shape...] (same for both splits).
  static at::Tensor class_centers(const SyntheticClassificationOptions& options);

 private:
  struct Samples {
    at::Tensor inputs;
    at::Tensor labels;
  };
  static Samples generate(const SyntheticClassificationOptions& options);
  SyntheticClassification(const SyntheticClassificationOptions& options, Samples samples);
};

struct SyntheticTokensOptions {
  int64_t num_sequences = 8192;  // DATASETS.SYNTHETIC.NUM_TRAIN / NUM_TEST
  int64_t context_length = 64;   // MODEL.GPT.CONTEXT_LENGTH
  int64_t vocab_size = 256;      // MODEL.GPT.VOCAB_SIZE
  uint64_t seed = 0;             // SEED
  bool train = true;             // which split
};

class SyntheticTokens : public TokenDataset {
 public:
  // Generates the split: a walk of num_sequences * context_length + 1 tokens. Throws
  // dtrain::ConfigError (naming the config key) for non-positive sizes.
  explicit SyntheticTokens(const SyntheticTokensOptions& options);

  // The chain's successor table: [vocab_size, 3] int64 (column j has probability
  // 0.6 / 0.3 / 0.1); fewer columns when vocab_size < 3. Same for both splits.
  static at::Tensor successors(const SyntheticTokensOptions& options);

 private:
  static at::Tensor generate(const SyntheticTokensOptions& options);
};

// Entropy rate of the synthetic token chain in nats per token: the lowest expected
// cross-entropy any model can reach on synthetic_tokens.
double synthetic_tokens_entropy(int64_t vocab_size);

}  // namespace dtrain::data
