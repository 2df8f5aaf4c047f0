// Reading and checking a committed checkpoint directory in one process, with no model and
// no communicator: its index, whole tensors assembled from their pieces, and a full
// verification (index, shard files, every piece's shape and xxHash64, the virtual
// datasets). Used by `dtrain ckpt`, the download cache (remote.cpp) and tests.
//
//   std::vector<std::string> problems = verify_checkpoint("out/model_final");  // {} valid
//   CheckpointIndex index = load_index("out/model_final");
//   std::map<std::string, at::Tensor> all = read_all_tensors("out/model_final");
//
// Local (no MPI) and read-only. Not thread-safe; the functions share HDF5's library lock
// (h5/handle.h) with the rest of the process but keep no other state.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "checkpoint/format.h"
#include "checkpoint/index.h"

namespace dtrain::checkpoint {

// The parsed index of checkpoint directory `dir`. Throws CheckpointError naming the file
// when checkpoint.h5 is missing, is not a dtrain checkpoint, or has another format version.
CheckpointIndex load_index(const std::string& dir);

// "ranks/RRRRR/<name>": the path (below checkpoint.h5's root) of rank `rank`'s value of
// per-rank tensor `name`, and its key in read_all_tensors().
std::string per_rank_path(int rank, const std::string& name);

// `piece` of `record` read into a new tensor of the piece's shape, shape and checksum
// verified (ShardReader::read_piece). `dir` names the checkpoint in errors.
at::Tensor read_piece_tensor(ShardReader& reader, const TensorRecord& record,
                             const PieceRecord& piece, const std::string& dir);

// One replicated tensor of checkpoint `dir`, assembled whole from its pieces (checksums
// verified). Throws CheckpointError.
at::Tensor read_full_tensor(ShardReader& reader, const TensorRecord& record, const std::string& dir);

// Every tensor of checkpoint `dir`, assembled whole from its pieces with checksum
// verification: replicated tensors by name ("model/fc1.weight"), per-rank tensors as
// per_rank_path() ("ranks/RRRRR/<name>"). Throws CheckpointError.
std::map<std::string, at::Tensor> read_all_tensors(const std::string& dir);

// The config YAML stored in `dir`/checkpoint.h5 at /dtrain/config_yaml ("" when there
// is none). Throws dtrain::CheckpointError naming the file when it cannot be read.
std::string read_config_yaml(const std::string& dir);

// What verify_checkpoint() / verify_shards() looked at.
struct VerifyStats {
  bool index_ok = false;  // checkpoint.h5 was readable and of this format version
  int world_size = 0;
  int64_t iteration = -1;
  int64_t tensors = 0, pieces = 0, bytes = 0;  // checked (pieces, bytes: read and valid)
};

// Checks checkpoint directory `dir` without loading it into a model. Returns every
// problem, one line each naming the file and tensor (empty: valid): missing or
// unreadable index, wrong format version, root attributes disagreeing with the index,
// missing or unreadable shard files, piece shape and checksum mismatches, missing virtual
// datasets. Fills `stats` when given. Local (not collective); throws nothing for a
// damaged checkpoint.
std::vector<std::string> verify_checkpoint(const std::string& dir, VerifyStats* stats = nullptr);

// The first `shown` problems, then one line "... and N more problems" when there are
// more: what a report prints (a damaged 300,000-tensor index is not 600,000 lines).
std::vector<std::string> capped_problems(const std::vector<std::string>& problems,
                                         size_t shown = 50);

// The shard part of verify_checkpoint() against an index already read: each shard file
// exists and opens (one problem per unusable file, naming the tensors it holds), then
// every piece in the usable ones is read and checked. `only_shard` >= 0 checks that
// shard's file and pieces only (e.g. a downloaded shard as it arrives).
std::vector<std::string> verify_shards(const std::string& dir, const CheckpointIndex& index,
                                       int only_shard = -1, VerifyStats* stats = nullptr);

}  // namespace dtrain::checkpoint
