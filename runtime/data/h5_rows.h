// Rows of one HDF5 dataset (slices along its first axis), read from the file on demand
// in blocks of consecutive rows through a small BlockCache: what the lazy HDF5 datasets
// (h5_lazy.h) are built on, so that a file larger than memory can be trained from.
//
//   h5::File f = h5::File::open("big.h5");
//   h5::Dataset d = f.open_own_dataset("images");
//   H5RowReader rows(std::move(f), std::move(d), at::kByte, {});
//   std::vector<uint8_t> out(2 * rows.row_bytes());
//   rows.gather({70, 3}, /*count=*/1, out.data());     // rows 70 and 3, in that order
//
// Blocks: rows [k * block_rows(), (k + 1) * block_rows()). A chunked dataset's blocks are
// its chunks along the first axis (HDF5 reads a whole chunk anyway) when a chunk takes
// at most a quarter of the cache; otherwise, and for contiguous datasets, blocks are
// about `block_bytes` (4 KiB) of rows. Rows larger than a quarter of the cache are read
// one by one and not cached. A gather sorts its ranges, reads each run of consecutive
// missing blocks with one hyperslab read, and works through its blocks in groups of at
// most max(cache, 1 MiB, one block) bytes, so that it holds at most that much besides
// `dst`.
//
// Thread-safety: gather() is const and thread-safe. HDF5 calls are serialized by the h5
// layer's library_mutex() (Debian's HDF5 is not thread-safe); the cache has its own
// mutex; validation and copying run outside both. Two threads missing the same block
// may both read it (harmless; the second put replaces the first).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "runtime/data/block_cache.h"
#include "runtime/h5/dataset.h"
#include "runtime/h5/file.h"

namespace dtrain::data {

struct H5RowsOptions {
  int64_t cache_bytes = int64_t{4} << 20;  // BlockCache capacity (>= 0)
  int64_t block_bytes = int64_t{4} << 10;  // target block size of contiguous datasets (>= 1)
};

// The most bytes one row (one sample) may take: a larger row in a file is refused.
inline constexpr int64_t kMaxRowBytes = int64_t{1} << 30;
// Bytes of one row (the extents after the first) of a dataset of shape `dims` whose
// elements take `element_bytes`. The extents come from an untrusted file: throws
// dtrain::ConfigError "'<file>': '<dataset>' has shape (...): a sample must have extents
// >= 1 and take at most <kMaxRowBytes> bytes" before anything is sized by them.
int64_t checked_row_bytes(const std::vector<int64_t>& dims, int64_t element_bytes,
                          const std::string& file, const std::string& dataset);

// The least a gather works on at once (see above), so that a small or no cache still
// reads long runs with few HDF5 calls.
inline constexpr int64_t kMinGroupBytes = int64_t{1} << 20;

class H5RowReader {
 public:
  // Called with the first row of a block just read from the file and the block
  // ([rows, ...] of the reader's dtype), before it is cached or copied out; throws to
  // refuse the data (e.g. a token outside the vocabulary).
  using Validator = std::function<void(int64_t first_row, const at::Tensor& block)>;

  // Reads `dataset` of `file` (both kept open) as `as` (HDF5 converts the stored type).
  // Throws dtrain::ConfigError naming the file and dataset for a scalar dataset, an
  // extent < 0 (or 0 beyond the first axis), or rows larger than kMaxRowBytes.
  H5RowReader(h5::File file, h5::Dataset dataset, at::ScalarType as,
              const H5RowsOptions& options, Validator validate = {});

  int64_t num_rows() const { return num_rows_; }
  // Shape of one row (the dataset's shape without the first axis).
  const std::vector<int64_t>& row_shape() const { return row_shape_; }
  int64_t row_elements() const { return row_elements_; }
  int64_t row_bytes() const { return row_bytes_; }
  int64_t block_rows() const { return block_rows_; }
  at::ScalarType dtype() const { return dtype_; }
  const std::string& file_name() const { return file_name_; }

  // Copies rows [starts[i], starts[i] + count) to dst + i * count * row_bytes() for
  // every i (starts in any order, repeats allowed). Throws dtrain::Error naming the file
  // for count < 1 or a range outside [0, num_rows()), or what reading or the validator
  // throws (dst is then partly written).
  void gather(const std::vector<int64_t>& starts, int64_t count, void* dst) const;

  const BlockCache& cache() const { return *cache_; }
  // Hyperslab reads made, and blocks they returned, since construction.
  int64_t file_reads() const { return file_reads_.load(); }
  int64_t blocks_read() const { return blocks_read_.load(); }

 private:
  // Reads blocks [first, first + n) with one hyperslab read, validates them.
  std::vector<BlockCache::Block> read_blocks(int64_t first, int64_t n) const;

  h5::File file_;  // declared before dataset_: closed after it
  h5::Dataset dataset_;
  std::string file_name_;
  at::ScalarType dtype_;
  Validator validate_;
  int64_t num_rows_ = 0;
  std::vector<int64_t> row_shape_;
  int64_t row_elements_ = 1;
  int64_t row_bytes_ = 0;
  int64_t block_rows_ = 1;
  int64_t group_blocks_ = 1;  // blocks worked on at once by gather
  std::unique_ptr<BlockCache> cache_;  // its methods are thread-safe
  mutable std::atomic<int64_t> file_reads_{0};
  mutable std::atomic<int64_t> blocks_read_{0};
};

}  // namespace dtrain::data
