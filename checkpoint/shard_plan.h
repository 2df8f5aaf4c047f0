// Shard planning: which rank writes which rows of every replicated tensor, so that each
// of N ranks writes a disjoint ~1/N of the bytes ("sharded on write").
//
// The tensors are laid end to end in a fixed order (a byte stream of T bytes); rank r
// owns the stream bytes [floor(r*T/N), floor((r+1)*T/N)). Each tensor is cut along its
// first axis: a row goes to the rank owning the row's first byte. Every tensor thus has
// at most one piece per rank, each piece a contiguous run of whole rows (a hyperslab
// that an HDF5 virtual dataset maps back into place). 0-d tensors are a single "row".
//
//   auto pieces = plan_shards({{"model/w", at::kFloat, {1024, 1024}}, ...}, /*world=*/4);
//
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <c10/core/ScalarType.h>

namespace dtrain::checkpoint {

struct TensorMeta {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;

  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }
  int64_t numel() const;
  int64_t bytes() const;
  // Bytes of one first-axis row (the whole tensor for 0-d).
  int64_t row_bytes() const;
};

struct Piece {
  size_t tensor = 0;     // index into the planned tensors
  int shard = 0;         // rank that writes it
  int64_t row_start = 0;
  int64_t row_count = 0;
  int64_t bytes = 0;
};

// Pieces of every tensor, ordered by tensor then row_start. Every row of every tensor
// is in exactly one piece; a tensor with no rows gets one empty piece. Throws
// dtrain::Error when world_size < 1.
std::vector<Piece> plan_shards(const std::vector<TensorMeta>& tensors, int world_size);

}  // namespace dtrain::checkpoint
