// Synthetic classification and token datasets (see synthetic.h).
#include "runtime/data/synthetic.h"

#include <algorithm>
#include <array>
#include <cmath>

#include <ATen/ops/empty.h>
#include <fmt/format.h>

#include "runtime/base/error.h"
#include "runtime/data/rng.h"

namespace dtrain::data {
namespace {

// Stream ids for mix_seed: each kind of draw gets its own independent stream.
constexpr uint64_t kCentersStream = 0x5EED'C1A5'0000'0001ull;
constexpr uint64_t kTrainSamplesStream = 0x5EED'C1A5'0000'0002ull;
constexpr uint64_t kTestSamplesStream = 0x5EED'C1A5'0000'0003ull;
constexpr uint64_t kChainStream = 0x5EED'70CE'0000'0001ull;
constexpr uint64_t kTrainWalkStream = 0x5EED'70CE'0000'0002ull;
constexpr uint64_t kTestWalkStream = 0x5EED'70CE'0000'0003ull;

// Successor probabilities of the token chain (truncated and renormalized for tiny vocabs).
constexpr std::array<double, 3> kSuccessorProbs = {0.6, 0.3, 0.1};

std::string split_name(bool train) { return train ? "train" : "test"; }

void validate(const SyntheticClassificationOptions& o) {
  DTRAIN_CHECK_T(ConfigError, o.num_samples >= 1,
                 "synthetic_classification: DATASETS.SYNTHETIC.{} must be >= 1, got {}",
                 o.train ? "NUM_TRAIN" : "NUM_TEST", o.num_samples);
  DTRAIN_CHECK_T(ConfigError, !o.input_shape.empty(),
                 "synthetic_classification: DATASETS.SYNTHETIC.INPUT_SHAPE is empty");
  for (int64_t d : o.input_shape) {
    DTRAIN_CHECK_T(ConfigError, d >= 1,
                   "synthetic_classification: DATASETS.SYNTHETIC.INPUT_SHAPE [{}] has an "
                   "entry < 1",
                   fmt::join(o.input_shape, ", "));
  }
  DTRAIN_CHECK_T(ConfigError, o.num_classes >= 1,
                 "synthetic_classification: DATASETS.SYNTHETIC.NUM_CLASSES must be >= 1, got {}",
                 o.num_classes);
  DTRAIN_CHECK_T(ConfigError, o.noise >= 0 && std::isfinite(o.noise),
                 "synthetic_classification: DATASETS.SYNTHETIC.NOISE must be >= 0, got {}",
                 o.noise);
}

}  // namespace

// ---- SyntheticClassification -------------------------------------------------------

at::Tensor SyntheticClassification::class_centers(const SyntheticClassificationOptions& o) {
  validate(o);
  const int64_t channels = o.input_shape[0];
  int64_t row = 1;
  for (int64_t d : o.input_shape) row *= d;
  const int64_t per_channel = row / channels;
  std::vector<int64_t> shape = o.input_shape;
  shape.insert(shape.begin(), o.num_classes);
  at::Tensor centers = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
  float* c = centers.data_ptr<float>();

  Rng rng(mix_seed(o.seed, kCentersStream));
  std::vector<double> offsets(static_cast<size_t>(o.num_classes * channels));
  for (double& v : offsets) v = rng.normal();
  const double scale = 1.0 / std::sqrt(2.0);
  for (int64_t k = 0; k < o.num_classes; ++k) {
    for (int64_t ch = 0; ch < channels; ++ch) {
      const double offset = offsets[k * channels + ch];
      float* dst = c + k * row + ch * per_channel;
      for (int64_t j = 0; j < per_channel; ++j) {
        dst[j] = static_cast<float>((offset + rng.normal()) * scale);
      }
    }
  }
  return centers;
}

SyntheticClassification::Samples SyntheticClassification::generate(
    const SyntheticClassificationOptions& o) {
  at::Tensor centers = class_centers(o);  // validates
  const int64_t row = centers.numel() / o.num_classes;
  std::vector<int64_t> shape = o.input_shape;
  shape.insert(shape.begin(), o.num_samples);
  Samples s;
  s.inputs = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
  s.labels = at::empty({o.num_samples}, at::TensorOptions().dtype(at::kLong));
  Rng rng(mix_seed(o.seed, o.train ? kTrainSamplesStream : kTestSamplesStream));
  const float* c = centers.data_ptr<float>();
  float* x = s.inputs.data_ptr<float>();
  int64_t* y = s.labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < o.num_samples; ++i) {
    const int64_t label = static_cast<int64_t>(rng.below(static_cast<uint64_t>(o.num_classes)));
    y[i] = label;
    const float* center = c + label * row;
    float* dst = x + i * row;
    for (int64_t k = 0; k < row; ++k) {
      dst[k] = static_cast<float>(center[k] + o.noise * rng.normal());
    }
  }
  return s;
}

SyntheticClassification::SyntheticClassification(const SyntheticClassificationOptions& o)
    : SyntheticClassification(o, generate(o)) {}

SyntheticClassification::SyntheticClassification(const SyntheticClassificationOptions& o,
                                                 Samples samples)
    : ClassificationDataset(std::move(samples.inputs), std::move(samples.labels), o.num_classes,
                            fmt::format("synthetic_classification({}, seed {}, noise {})",
                                        split_name(o.train), o.seed, o.noise)) {}

// ---- SyntheticTokens ---------------------------------------------------------------

namespace {

void validate(const SyntheticTokensOptions& o) {
  DTRAIN_CHECK_T(ConfigError, o.num_sequences >= 1,
                 "synthetic_tokens: DATASETS.SYNTHETIC.{} must be >= 1, got {}",
                 o.train ? "NUM_TRAIN" : "NUM_TEST", o.num_sequences);
  DTRAIN_CHECK_T(ConfigError, o.context_length >= 1,
                 "synthetic_tokens: MODEL.GPT.CONTEXT_LENGTH must be >= 1, got {}",
                 o.context_length);
  DTRAIN_CHECK_T(ConfigError, o.vocab_size >= 1,
                 "synthetic_tokens: MODEL.GPT.VOCAB_SIZE must be >= 1, got {}", o.vocab_size);
}

int64_t num_successors(int64_t vocab_size) {
  return std::min<int64_t>(static_cast<int64_t>(kSuccessorProbs.size()), vocab_size);
}

}  // namespace

at::Tensor SyntheticTokens::successors(const SyntheticTokensOptions& o) {
  validate(o);
  const int64_t v = o.vocab_size;
  const int64_t m = num_successors(v);
  Rng rng(mix_seed(o.seed, kChainStream));
  // Successor 0 follows a random cycle through all tokens: the chain is irreducible.
  std::vector<int64_t> cycle(static_cast<size_t>(v));
  for (int64_t i = 0; i < v; ++i) cycle[i] = i;
  shuffle(cycle, rng);
  at::Tensor table = at::empty({v, m}, at::TensorOptions().dtype(at::kLong));
  int64_t* t = table.data_ptr<int64_t>();
  for (int64_t i = 0; i < v; ++i) t[cycle[i] * m] = cycle[(i + 1) % v];
  // The others: distinct random tokens (rejection; m is tiny).
  for (int64_t tok = 0; tok < v; ++tok) {
    int64_t* row = t + tok * m;
    for (int64_t j = 1; j < m; ++j) {
      int64_t cand;
      bool taken;
      do {
        cand = static_cast<int64_t>(rng.below(static_cast<uint64_t>(v)));
        taken = false;
        for (int64_t q = 0; q < j; ++q) taken = taken || row[q] == cand;
      } while (taken);
      row[j] = cand;
    }
  }
  return table;
}

at::Tensor SyntheticTokens::generate(const SyntheticTokensOptions& o) {
  at::Tensor table = successors(o);  // validates
  const int64_t m = table.size(1);
  double total = 0;
  for (int64_t j = 0; j < m; ++j) total += kSuccessorProbs[j];
  std::array<double, kSuccessorProbs.size()> cumulative{};
  double acc = 0;
  for (int64_t j = 0; j < m; ++j) cumulative[j] = (acc += kSuccessorProbs[j] / total);

  const int64_t length = o.num_sequences * o.context_length + 1;
  at::Tensor stream = at::empty({length}, at::TensorOptions().dtype(at::kLong));
  int64_t* s = stream.data_ptr<int64_t>();
  const int64_t* t = table.data_ptr<int64_t>();
  Rng rng(mix_seed(o.seed, o.train ? kTrainWalkStream : kTestWalkStream));
  int64_t token = static_cast<int64_t>(rng.below(static_cast<uint64_t>(o.vocab_size)));
  for (int64_t i = 0; i < length; ++i) {
    s[i] = token;
    const double u = rng.uniform();
    int64_t j = 0;
    while (j + 1 < m && u >= cumulative[j]) ++j;
    token = t[token * m + j];
  }
  return stream;
}

SyntheticTokens::SyntheticTokens(const SyntheticTokensOptions& o)
    : TokenDataset(generate(o), o.context_length, o.vocab_size,
                   fmt::format("synthetic_tokens({}, seed {})", split_name(o.train), o.seed)) {}

double synthetic_tokens_entropy(int64_t vocab_size) {
  const int64_t m = num_successors(vocab_size);
  double total = 0;
  for (int64_t j = 0; j < m; ++j) total += kSuccessorProbs[j];
  double h = 0;
  for (int64_t j = 0; j < m; ++j) {
    const double p = kSuccessorProbs[j] / total;
    h -= p * std::log(p);
  }
  return h;
}

}  // namespace dtrain::data
