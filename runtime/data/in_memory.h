// Datasets held entirely in memory: labelled inputs (classification) and a token stream
// cut into language-model sequences. The synthetic generators and the HDF5 loader
// produce these.
//
//   ClassificationDataset ds(images_u8, labels, /*num_classes=*/10, "cifar.h5");
//   Batch b = ds.get_batch({0, 5});        // inputs float32 [2, 3, 32, 32] in [0, 1]
//
//   TokenDataset lm(stream, /*context_length=*/64, /*vocab_size=*/256, "tokens.h5");
//   Batch s = lm.get_batch({3});           // inputs = stream[192, 256), targets shifted by 1
//
// Immutable after construction: get_batch is thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "runtime/data/dataset.h"

namespace dtrain::data {

// How uint8 inputs become float32: (x / 255 - mean) / std.
struct ByteNormalization {
  float mean = 0.0f;
  float std = 1.0f;
};

// The float32 each uint8 value becomes under `norm`, computed once: the one formula
// every dataset that decodes bytes uses, so they agree bit for bit. Throws dtrain::Error
// naming `what` unless mean and std are finite and std > 0.
std::array<float, 256> byte_values(const ByteNormalization& norm, const std::string& what);

// Samples (inputs[i], labels[i]). Inputs are float32, or uint8 that get_batch scales to
// [0, 1] (x / 255), then normalizes with `norm`, so that byte images take a quarter of
// the memory.
class ClassificationDataset : public Dataset {
 public:
  // `inputs`: [N, ...] float32 or uint8, contiguous CPU; `labels`: [N] int64 in
  // [0, num_classes). `description` names the source in describe() ("cifar.h5",
  // "synthetic_classification(train, seed 0)"). Throws dtrain::Error on mismatched
  // shapes or dtypes; label ranges are the caller's to check.
  ClassificationDataset(at::Tensor inputs, at::Tensor labels, int64_t num_classes,
                        std::string description, ByteNormalization norm = {});

  int64_t size() const override { return size_; }
  // inputs float32 [B, ...], targets int64 [B]. Throws dtrain::Error for an index
  // outside [0, size()).
  Batch get_batch(const std::vector<int64_t>& indices) const override;
  // "<description>: 8192 samples of [3, 32, 32] uint8->float32, 10 classes".
  std::string describe() const override;

  int64_t num_classes() const { return num_classes_; }
  // Shape of one input (without the sample axis).
  std::vector<int64_t> sample_shape() const override;
  // byte_value(0) for uint8 inputs, else 0.
  float padding_value() const override;
  // The stored tensors (inputs as stored: uint8 stays uint8).
  const at::Tensor& inputs() const { return inputs_; }
  const at::Tensor& labels() const { return labels_; }

 private:
  at::Tensor inputs_;
  at::Tensor labels_;
  int64_t num_classes_;
  std::string description_;
  int64_t size_;
  std::array<float, 256> byte_value_;  // the float32 each uint8 input value becomes
};

// Language-model sequences from one token stream of length L: sequence i is
// stream[i*T, i*T + T + 1) (T = context_length; consecutive windows overlap by one
// token so every token is a target exactly once), inputs = seq[:-1], targets = seq[1:].
// size() = (L - 1) / T; a tail shorter than a sequence is unused.
class TokenDataset : public Dataset {
 public:
  // `stream`: [L] int64 contiguous CPU with values in [0, vocab_size), L >= T + 1.
  // Throws dtrain::Error otherwise (values are the caller's to check).
  TokenDataset(at::Tensor stream, int64_t context_length, int64_t vocab_size,
               std::string description);

  int64_t size() const override { return size_; }
  // inputs and targets int64 [B, T]. Throws dtrain::Error for an index out of range.
  Batch get_batch(const std::vector<int64_t>& indices) const override;
  // "<description>: 8192 sequences of 64 tokens (vocab 256) from a stream of 524289".
  std::string describe() const override;

  int64_t context_length() const { return context_length_; }
  int64_t vocab_size() const { return vocab_size_; }
  const at::Tensor& stream() const { return stream_; }

 private:
  at::Tensor stream_;
  int64_t context_length_;
  int64_t vocab_size_;
  std::string description_;
  int64_t size_;
};

}  // namespace dtrain::data
