// Datasets: indexable collections of (input, target) samples, and the factory that
// builds them from DATASETS.TRAIN / DATASETS.TEST names.
//
//   auto ds = dtrain::data::build_dataset("synthetic_classification", cfg, /*train=*/true);
//   dtrain::data::Batch b = ds->get_batch({4, 17, 3});   // inputs [3, ...], targets [3]
//
// Names: "synthetic_classification", "synthetic_tokens", or a path to an HDF5 dataset
// file (layout in docs/DATASETS.md). Every dataset is deterministic given SEED.
// get_batch is const and thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "runtime/base/config.h"

namespace dtrain::data {

struct Batch {
  at::Tensor inputs;   // float [B, ...] for classification, int64 [B, T] for tokens
  at::Tensor targets;  // int64 [B] for classification, int64 [B, T] for tokens
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  // Number of samples (sequences for token datasets).
  virtual int64_t size() const = 0;
  // The samples at `indices`, stacked in that order. Throws dtrain::Error for an
  // index out of range.
  virtual Batch get_batch(const std::vector<int64_t>& indices) const = 0;
  // One line for logs: kind, source, size, sample shape.
  virtual std::string describe() const = 0;
  // Shape of one input without the sample axis. The default reads sample 0.
  virtual std::vector<int64_t> sample_shape() const;
  // The float32 value a zero input (a black pixel) becomes after normalization: what
  // random-crop padding fills with. The default is 0.
  virtual float padding_value() const { return 0.0f; }
};

// Throws dtrain::Error "<what>: sample index <index> out of range [0, <size>)" unless
// 0 <= index < size: the check every get_batch makes.
void check_sample_index(int64_t index, int64_t size, const std::string& what);

// Builds the dataset `name` (see above). `train` selects the training or the test split
// of synthetic data. Throws dtrain::ConfigError for an unknown name or an HDF5 file of
// the wrong layout (naming the file and the dataset inside it).
std::shared_ptr<Dataset> build_dataset(const std::string& name, const Config& cfg, bool train);

}  // namespace dtrain::data
