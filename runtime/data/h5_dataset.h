// Datasets stored in HDF5 files (layouts in docs/DATASETS.md), through runtime/h5:
// read whole into memory when their data is small (in_memory_max_bytes), otherwise read
// lazily, sample by sample as get_batch asks, through a small block cache (h5_lazy.h):
//
//   layout A (classification): images (N, ...) float32/float16/float64 or uint8 (uint8
//     scaled to [0, 1] per batch), labels (N,) integer;
//   layout B (language model): tokens (L,) integer, cut into sequences of
//     CONTEXT_LENGTH + 1 tokens with stride CONTEXT_LENGTH.
//   Optional root attributes: num_classes, mean, std (A; uint8 images become
//   (x / 255 - mean) / std), vocab_size (B), description (both).
//
//   H5DatasetOptions o;
//   o.context_length = 64;
//   std::shared_ptr<Dataset> ds = load_h5_dataset("data/train.h5", o);
//
// The datasets returned are immutable after construction: get_batch is thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/data/dataset.h"

namespace dtrain::data {

struct H5DatasetOptions {
  int64_t context_length = 64;                     // layout B: MODEL.GPT.CONTEXT_LENGTH
  int64_t vocab_size = 0;                          // layout B: tokens must be < this (0: no limit)
  int64_t num_classes = 0;                         // layout A: labels must be < this (0: no limit)
  std::string vocab_key = "MODEL.GPT.VOCAB_SIZE";  // names the limits in messages
  std::string classes_key = "the model's NUM_CLASSES";
  // Data (images as uint8 or float32, tokens as int64) of at most this many bytes is
  // read whole at load (a ClassificationDataset / TokenDataset); larger data is read
  // lazily (an H5ClassificationDataset / H5TokenDataset). 0: always lazily.
  int64_t in_memory_max_bytes = kDefaultInMemoryMaxBytes;
  // Lazy datasets: the block cache of recently read rows (see h5_rows.h), per dataset.
  int64_t cache_bytes = kDefaultCacheBytes;

  static constexpr int64_t kDefaultInMemoryMaxBytes = int64_t{256} << 20;  // 256 MiB
  static constexpr int64_t kDefaultCacheBytes = int64_t{4} << 20;          // 4 MiB
};

// The most labels a file may hold (they are read whole): 2^28 (2 GiB as int64).
inline constexpr int64_t kMaxLabels = int64_t{1} << 28;

// Loads `path` as layout A (a ClassificationDataset, or H5ClassificationDataset when
// lazy) or B (a TokenDataset or H5TokenDataset); see in_memory_max_bytes. Throws
// dtrain::ConfigError naming the file and the offending dataset: missing file, neither
// or both layouts, wrong dtype or rank, a sample larger than 1 GiB or with an extent of
// 0, more than kMaxLabels labels, images/labels count mismatch, labels outside
// [0, num_classes), bad mean/std attributes, tokens outside [0, vocab_size), too few
// tokens for one sequence. Lazily read tokens are range-checked as they are read: a bad
// one makes get_batch throw that ConfigError instead.
std::shared_ptr<Dataset> load_h5_dataset(const std::string& path, const H5DatasetOptions& options);

}  // namespace dtrain::data
