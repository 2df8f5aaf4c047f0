// Datasets stored in HDF5 files (layouts in docs/DATASETS.md), read whole into memory
// at construction through checkpoint/h5:
//
//   layout A (classification): images (N, ...) float32/float16/float64 or uint8 (uint8
//     scaled to [0, 1] per batch), labels (N,) integer;
//   layout B (language model): tokens (L,) integer, cut into sequences of
//     CONTEXT_LENGTH + 1 tokens with stride CONTEXT_LENGTH.
//   Optional root attributes: num_classes (A), vocab_size (B), description (both).
//
//   H5DatasetOptions o;
//   o.context_length = 64;
//   std::shared_ptr<Dataset> ds = load_h5_dataset("data/train.h5", o);
//
// Immutable after construction: get_batch is thread-safe.
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
};

// Loads `path` as layout A (a ClassificationDataset) or B (a TokenDataset). Throws
// dtrain::ConfigError naming the file and the offending dataset: missing file, neither
// or both layouts, wrong dtype or rank, images/labels count mismatch, labels outside
// [0, num_classes), tokens outside [0, vocab_size), too few tokens for one sequence.
std::shared_ptr<Dataset> load_h5_dataset(const std::string& path, const H5DatasetOptions& options);

}  // namespace dtrain::data
