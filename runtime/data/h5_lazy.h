// The lazy HDF5 datasets: samples read from the file when get_batch asks for them
// (through H5RowReader's small block cache), so that each rank reads only the samples
// its sampler hands it and a file larger than memory trains. load_h5_dataset
// (h5_dataset.h) builds these for files whose data is larger than
// H5DatasetOptions::in_memory_max_bytes, after validating the layout.
//
//   auto rows = std::make_unique<H5RowReader>(std::move(f), std::move(images), at::kByte, {});
//   H5ClassificationDataset ds(std::move(rows), labels, 10, "big.h5", {0.286f, 0.353f});
//   Batch b = ds.get_batch({7, 3, 7});            // same tensors as ClassificationDataset
//
// Thread-safe: get_batch is const and may be called from several threads at once (the
// reader serializes HDF5 and guards its cache; decoding runs outside both locks).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "runtime/data/dataset.h"
#include "runtime/data/h5_rows.h"
#include "runtime/data/in_memory.h"

namespace dtrain::data {

// Layout A read lazily: images from the file, labels held in memory (read and checked
// at open). Batches equal ClassificationDataset's for the same data, bit for bit.
class H5ClassificationDataset : public Dataset {
 public:
  // `images`: a reader of dtype uint8 or float32; `labels`: [N] int64 (N = its rows),
  // already range-checked. Throws dtrain::Error on mismatched sizes or dtypes.
  H5ClassificationDataset(std::unique_ptr<H5RowReader> images, at::Tensor labels,
                          int64_t num_classes, std::string description,
                          ByteNormalization norm = {});

  int64_t size() const override { return images_->num_rows(); }
  // inputs float32 [B, ...], targets int64 [B]. Throws dtrain::Error for an index
  // outside [0, size()) or a failed read (naming the file).
  Batch get_batch(const std::vector<int64_t>& indices) const override;
  // "<description>: 1000000 samples of [3, 32, 32] uint8->float32, 10 classes, read
  // lazily (blocks of 21 samples, cache 4 MiB)".
  std::string describe() const override;
  std::vector<int64_t> sample_shape() const override;
  // The float a zero byte becomes for uint8 images, else 0.
  float padding_value() const override;

  int64_t num_classes() const { return num_classes_; }
  const H5RowReader& reader() const { return *images_; }

 private:
  std::unique_ptr<H5RowReader> images_;
  at::Tensor labels_;
  int64_t num_classes_;
  std::string description_;
  std::array<float, 256> byte_value_;
};

// Layout B read lazily: sequence i is tokens[i*T, i*T + T + 1) (as TokenDataset), read
// from the file. Every block of tokens read is range-checked by the reader's validator
// (see load_h5_dataset) before it is used.
class H5TokenDataset : public Dataset {
 public:
  // `tokens`: a 1-D reader of dtype int64 with at least context_length + 1 rows.
  H5TokenDataset(std::unique_ptr<H5RowReader> tokens, int64_t context_length,
                 int64_t vocab_size, std::string description);

  int64_t size() const override { return size_; }
  // inputs and targets int64 [B, T]. Throws dtrain::Error for an index out of range, a
  // failed read, or a token outside the vocabulary (naming the file and its position).
  Batch get_batch(const std::vector<int64_t>& indices) const override;
  std::string describe() const override;

  int64_t context_length() const { return context_length_; }
  int64_t vocab_size() const { return vocab_size_; }
  const H5RowReader& reader() const { return *tokens_; }

 private:
  std::unique_ptr<H5RowReader> tokens_;
  int64_t context_length_;
  int64_t vocab_size_;
  std::string description_;
  int64_t size_;
};

}  // namespace dtrain::data
