// The checkpoint index: every logical tensor (dtype, global shape, which shard holds
// which rows, xxHash64 of each piece) and every scalar, as stored (JSON text) in
// checkpoint.h5 at /dtrain/index. See docs/FORMAT.md.
//
//   CheckpointIndex idx = CheckpointIndex::from_json(text, "ckpt/checkpoint.h5");
//   const TensorRecord* t = idx.find_tensor("model/fc1.weight");
//
// Plain data; not thread-safe for mutation.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime/base/stateful.h"

namespace dtrain::checkpoint {

inline constexpr int kFormatVersion = 1;
inline constexpr const char* kFormatName = "dtrain-checkpoint";
// The largest world size a checkpoint may record (bounds every per-shard loop).
inline constexpr int kMaxWorldSize = 1 << 20;
inline constexpr const char* kIndexFile = "checkpoint.h5";
inline constexpr const char* kIndexDataset = "/dtrain/index";

// "shard-RRRRR-of-NNNNN.h5".
std::string shard_file_name(int rank, int world_size);

struct PieceRecord {
  int shard = 0;
  int64_t row_start = 0;
  int64_t row_count = 0;
  int64_t bytes = 0;
  uint64_t xxh64 = 0;
  std::vector<int64_t> shape;  // the piece's own shape as stored in the shard
};

struct TensorRecord {
  std::string name;                 // "model/fc1.weight"
  std::string dtype;                // dtype_name(): "float32", "bfloat16", ...
  std::vector<int64_t> shape;       // global shape (per-rank tensors: rank 0's)
  bool per_rank = false;            // one whole value per rank (RNG states)
  std::vector<PieceRecord> pieces;  // replicated: row ranges; per-rank: one per shard
};

struct CheckpointIndex {
  int format_version = kFormatVersion;
  int world_size = 1;
  int64_t iteration = -1;
  std::string created;                       // ISO 8601 UTC
  std::map<std::string, std::string> versions;  // dtrain, torch, hdf5, mpi
  std::vector<TensorRecord> tensors;
  std::map<std::string, StateValue> scalars;  // int64, double or string values only

  const TensorRecord* find_tensor(const std::string& name) const;
  std::string to_json() const;
  // Checks what a load relies on: format version, world size, unique names, known
  // dtypes, each piece's shard, shape and byte count, and that the pieces of every
  // replicated tensor tile its first axis. Throws dtrain::CheckpointError naming
  // `origin` and what is wrong.
  void validate(const std::string& origin) const;
  // Parses and validates (format name, version, required fields, piece coverage).
  // Throws dtrain::CheckpointError naming `origin` and what is wrong.
  static CheckpointIndex from_json(const std::string& text, const std::string& origin);
};

// 16 lowercase hex digits.
std::string hex64(uint64_t v);

}  // namespace dtrain::checkpoint
