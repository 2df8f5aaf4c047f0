// Rows of an HDF5 dataset read on demand through a block cache (see h5_rows.h).
#include "runtime/data/h5_rows.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>

#include <fmt/format.h>

#include "runtime/base/error.h"

namespace dtrain::data {

int64_t checked_row_bytes(const std::vector<int64_t>& dims, int64_t element_bytes,
                          const std::string& file, const std::string& dataset) {
  int64_t bytes = element_bytes;
  for (size_t k = 1; k < dims.size(); ++k) {
    DTRAIN_CHECK_T(ConfigError,
                   dims[k] >= 1 && dims[k] <= kMaxRowBytes && bytes * dims[k] <= kMaxRowBytes,
                   "'{}': '{}' has shape ({}): a sample must have extents >= 1 and take at "
                   "most {} bytes",
                   file, dataset, fmt::join(dims, ", "), kMaxRowBytes);
    bytes *= dims[k];
  }
  return bytes;
}

H5RowReader::H5RowReader(h5::File file, h5::Dataset dataset, at::ScalarType as,
                         const H5RowsOptions& options, Validator validate)
    : file_(std::move(file)),
      dataset_(std::move(dataset)),
      file_name_(file_.file_name()),
      dtype_(as),
      validate_(std::move(validate)) {
  DTRAIN_CHECK(options.cache_bytes >= 0 && options.block_bytes >= 1,
               "'{}': cache size must be >= 0 and block size >= 1, got {} and {}", file_name_,
               options.cache_bytes, options.block_bytes);
  // Every extent comes from an untrusted file: checked before it sizes anything.
  const std::vector<int64_t> dims = dataset_.shape();
  const std::string& path = dataset_.path();
  DTRAIN_CHECK_T(ConfigError, !dims.empty(), "'{}': '{}' is a scalar, expected rows", file_name_,
                 path);
  DTRAIN_CHECK_T(ConfigError, dims[0] >= 0, "'{}': '{}' has a first extent beyond 2^63",
                 file_name_, path);
  num_rows_ = dims[0];
  row_shape_.assign(dims.begin() + 1, dims.end());
  const int64_t element = static_cast<int64_t>(c10::elementSize(as));
  row_bytes_ = checked_row_bytes(dims, element, file_name_, path);
  row_elements_ = row_bytes_ / element;

  // Block geometry (h5_rows.h). The chunk shape is untrusted too: only a chunk that
  // fits a quarter of the cache becomes the block.
  const int64_t quarter = options.cache_bytes / 4;
  const std::optional<std::vector<int64_t>> chunk = dataset_.chunk_shape();
  const int64_t chunk_rows = chunk && !chunk->empty() && (*chunk)[0] >= 1 ? (*chunk)[0] : 0;
  if (chunk_rows > 0 && chunk_rows <= quarter / row_bytes_) {
    block_rows_ = chunk_rows;
  } else {
    block_rows_ = std::max<int64_t>(1, options.block_bytes / row_bytes_);
    if (chunk_rows > 0) block_rows_ = std::min(block_rows_, chunk_rows);
  }
  const int64_t block_bytes = block_rows_ * row_bytes_;
  const bool cached = block_bytes <= quarter;
  if (!cached) block_rows_ = 1;
  cache_ = std::make_unique<BlockCache>(cached ? options.cache_bytes : 0);
  const int64_t group_bytes = std::max(options.cache_bytes, kMinGroupBytes);
  group_blocks_ = std::max<int64_t>(1, group_bytes / (block_rows_ * row_bytes_));
}

std::vector<BlockCache::Block> H5RowReader::read_blocks(int64_t first, int64_t n) const {
  const int64_t start = first * block_rows_;
  const int64_t end = std::min(num_rows_, (first + n) * block_rows_);
  at::Tensor rows = dataset_.read_rows(start, end - start, dtype_);  // library_mutex inside
  file_reads_.fetch_add(1);
  blocks_read_.fetch_add(n);
  std::vector<BlockCache::Block> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) {
    const int64_t s = (first + k) * block_rows_;
    const int64_t e = std::min(num_rows_, s + block_rows_);
    // A cached block owns its bytes (the cache counts them); others may be views.
    at::Tensor block = rows.narrow(0, s - start, e - s);
    if (n > 1 && cache_->capacity_bytes() > 0) block = block.clone();
    if (validate_) validate_(s, block);
    out.push_back(std::make_shared<const at::Tensor>(std::move(block)));
  }
  return out;
}

void H5RowReader::gather(const std::vector<int64_t>& starts, int64_t count, void* dst) const {
  if (starts.empty()) return;
  DTRAIN_CHECK(count >= 1 && count <= num_rows_,
               "'{}': reading {} rows at a time from '{}', which has {}", file_name_, count,
               dataset_.path(), num_rows_);
  for (int64_t s : starts) {
    DTRAIN_CHECK(s >= 0 && s <= num_rows_ - count,
                 "'{}': rows [{}, {}) are outside '{}', which has {} rows", file_name_, s,
                 s + count, dataset_.path(), num_rows_);
  }
  // Requests by start; with one count for all, their ends are sorted too.
  std::vector<size_t> order(starts.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return starts[a] < starts[b]; });
  std::vector<int64_t> blocks;  // every block touched, ascending, once
  for (size_t r : order) {
    const int64_t lo = starts[r] / block_rows_, hi = (starts[r] + count - 1) / block_rows_;
    for (int64_t b = blocks.empty() ? lo : std::max(lo, blocks.back() + 1); b <= hi; ++b) {
      blocks.push_back(b);
    }
  }

  auto* out = static_cast<uint8_t*>(dst);
  size_t next = 0;  // first request (in `order`) that may still overlap a later block
  for (size_t g = 0; g < blocks.size(); g += static_cast<size_t>(group_blocks_)) {
    const size_t g_end = std::min(blocks.size(), g + static_cast<size_t>(group_blocks_));
    // Look up the group, then read each run of consecutive missing blocks at once.
    std::vector<BlockCache::Block> held(g_end - g);
    for (size_t i = g; i < g_end; ++i) held[i - g] = cache_->get(blocks[i]);
    for (size_t i = g; i < g_end;) {
      if (held[i - g]) {
        ++i;
        continue;
      }
      size_t j = i + 1;
      while (j < g_end && !held[j - g] && blocks[j] == blocks[j - 1] + 1) ++j;
      std::vector<BlockCache::Block> fresh =
          read_blocks(blocks[i], static_cast<int64_t>(j - i));
      for (size_t k = i; k < j; ++k) {
        held[k - g] = std::move(fresh[k - i]);
        cache_->put(blocks[k], held[k - g]);
      }
      i = j;
    }
    // Copy every overlap of a request with a block of the group.
    for (size_t i = g; i < g_end; ++i) {
      const int64_t b_start = blocks[i] * block_rows_;
      const int64_t b_end = b_start + held[i - g]->size(0);
      const auto* src = static_cast<const uint8_t*>(held[i - g]->data_ptr());
      while (next < order.size() && starts[order[next]] + count <= b_start) ++next;
      for (size_t q = next; q < order.size() && starts[order[q]] < b_end; ++q) {
        const size_t r = order[q];
        const int64_t lo = std::max(b_start, starts[r]);
        const int64_t hi = std::min(b_end, starts[r] + count);
        if (lo >= hi) continue;
        std::memcpy(out + (static_cast<int64_t>(r) * count + (lo - starts[r])) * row_bytes_,
                    src + (lo - b_start) * row_bytes_, static_cast<size_t>((hi - lo) * row_bytes_));
      }
    }
  }
}

}  // namespace dtrain::data
