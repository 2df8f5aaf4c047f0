// Shard planning (see shard_plan.h).
#include "checkpoint/shard_plan.h"

#include <algorithm>

#include <c10/core/ScalarType.h>

#include "runtime/base/error.h"

namespace dtrain::checkpoint {

int64_t TensorMeta::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t TensorMeta::bytes() const {
  return numel() * static_cast<int64_t>(c10::elementSize(dtype));
}

int64_t TensorMeta::row_bytes() const {
  const int64_t r = rows();
  return r == 0 ? 0 : bytes() / r;
}

std::vector<Piece> plan_shards(const std::vector<TensorMeta>& tensors, int world_size) {
  DTRAIN_CHECK(world_size >= 1, "plan_shards: world size must be >= 1, got {}", world_size);
  int64_t total = 0;
  for (const auto& t : tensors) total += t.bytes();
  // boundary[r] = first stream byte owned by rank r; boundary[N] = total.
  std::vector<int64_t> boundary(world_size + 1);
  for (int r = 0; r <= world_size; ++r) {
    // r * total may exceed int64 only beyond 2^63 / N bytes; use 128-bit to be safe.
    boundary[r] = static_cast<int64_t>((static_cast<__int128>(total) * r) / world_size);
  }
  auto owner = [&](int64_t byte) {
    // Last rank whose boundary <= byte (ranks with empty ranges are skipped).
    auto it = std::upper_bound(boundary.begin(), boundary.end() - 1, byte);
    return std::max(0, static_cast<int>(it - boundary.begin()) - 1);
  };

  std::vector<Piece> pieces;
  int64_t offset = 0;
  for (size_t ti = 0; ti < tensors.size(); ++ti) {
    const TensorMeta& t = tensors[ti];
    const int64_t rows = t.rows(), row_bytes = t.row_bytes();
    if (rows == 0 || row_bytes == 0) {
      pieces.push_back({ti, owner(std::min(offset, std::max<int64_t>(total - 1, 0))), 0, rows, 0});
      offset += t.bytes();
      continue;
    }
    int64_t row = 0;
    while (row < rows) {
      const int r = owner(offset + row * row_bytes);
      // First row whose first byte lies at or beyond the next rank's boundary.
      int64_t end = rows;
      if (r + 1 < world_size) {
        const int64_t next = boundary[r + 1] - offset;  // stream bytes into this tensor
        end = std::min(rows, std::max(row + 1, (next + row_bytes - 1) / row_bytes));
      }
      pieces.push_back({ti, r, row, end - row, (end - row) * row_bytes});
      row = end;
    }
    offset += t.bytes();
  }
  return pieces;
}

}  // namespace dtrain::checkpoint
