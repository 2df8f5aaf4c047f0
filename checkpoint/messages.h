// The checkpointer's control messages between ranks (internal), each a struct
// serialized in one place (messages.cpp, JSON) and sent with dist::all_gather /
// dist::broadcast (runtime/dist/agree.h). decode() throws CheckpointError naming the
// sending rank on bytes it cannot read (a bug or a mismatched dtrain build on some rank).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "checkpoint/format.h"

namespace dtrain::checkpoint {

// What one rank sees of a checkpoint directory (a load) or of a save's temporary
// directory: whether it can read it, and which files it reads (the boot id plus the
// directory's device and inode: ranks with equal, non-empty keys read the very same
// files through the same page cache) together with what it loads of them (its
// checkpointables and their scopes), which a load plan depends on.
struct Visibility {
  bool readable = false;
  std::string files;  // "" when unknown (then this rank shares its files with no one)

  std::string encode() const;
  static Visibility decode(const std::string& bytes, int from_rank);
};

// One rank's report of its part of a save, sent to rank 0 before the commit: its error,
// or how long its shard write took and the manifest of each shard it wrote (its own and
// those it stood in for).
struct ShardReport {
  std::string error;  // empty when the writes succeeded
  double write_seconds = 0.0;
  std::map<int, ShardManifest> shards;

  std::string encode() const;
  static ShardReport decode(const std::string& bytes, int from_rank);
};

// Named tensors (a rank's per-rank state, sent to the rank that writes its shard).
struct TensorPack {
  std::vector<std::pair<std::string, at::Tensor>> tensors;

  // A JSON header line (name, dtype, shape of each) followed by their bytes.
  std::string encode() const;
  static TensorPack decode(const std::string& bytes, int from_rank);
};

// A list of names or paths, as rank 0 broadcasts them.
struct NameList {
  std::vector<std::string> names;

  std::string encode() const;
  static NameList decode(const std::string& bytes, int from_rank);
};

}  // namespace dtrain::checkpoint
