// The commit protocol of a save (internal to the checkpointer; docs/FORMAT.md "Commit"):
//
//   1. begin:        rank 0 creates a hidden temporary directory in save_dir; the ranks
//                    agree on who sees it (a rank that does not has its shard written
//                    by one that does);
//   2. write shards: every rank writes and fsyncs its shard (synchronously, or in the
//                    background for an asynchronous save) while rank 0 begins
//                    checkpoint.h5 on a thread of its own;
//   3. commit:       every rank sends rank 0 its ShardReport; rank 0 builds and checks
//                    the index, finishes checkpoint.h5, renames the directory into
//                    place and updates last_checkpoint; every rank gets the outcome.
//
// Until the rename nothing is visible; a failure anywhere removes the temporary
// directory and throws the same CheckpointError on every rank. Every function is
// collective (the same calls on every rank, on the communicator's thread) except
// during_shard_fault.
#pragma once

#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/async_writer.h"
#include "checkpoint/format.h"
#include "checkpoint/messages.h"
#include "runtime/base/env.h"
#include "runtime/dist/communicator.h"

namespace dtrain::checkpoint::save_protocol {

// A save between begin() and commit().
struct PendingSave {
  std::string name;
  std::string final_dir;
  std::string tmp;  // the hidden temporary directory the shards are written into
  Env* env = nullptr;  // every file-system step of the save (the Checkpointer's)
  int64_t iteration = -1;
  CollectedState state;  // what the index describes (names, dtypes, shapes, scalars)
  std::chrono::steady_clock::time_point t0;
  std::string error;  // an error of this rank before its shard write started
  // writer_of[s]: the rank that writes shard s: s itself when it sees the temporary
  // directory, otherwise one of the ranks that do (OUTPUT_DIR not shared).
  std::vector<int> writer_of;
  bool shared() const;
  // Rank 0: the index as the shard plan fixes it, and checkpoint.h5 being begun with it
  // on a thread of its own while the shards are written. Declared last: destroyed
  // (joined) first, before what the thread reads.
  CheckpointIndex planned;
  std::future<void> index_begun;

  void begin_index(const CollectedState& live, const std::vector<Piece>& plan, int world,
                   const std::string& config_yaml);
};

// What a Checkpointer remembers between saves.
struct SaveDirState {
  bool cleaned_stale = false;      // leftovers of crashed runs removed
  bool warned_not_shared = false;  // the "OUTPUT_DIR not visible" warning given
};

// Step 1. `iteration` is stored in the index (-1: none).
std::unique_ptr<PendingSave> begin(dist::Communicator& comm, Env& env, const std::string& save_dir,
                                   const std::string& name, int64_t iteration, SaveDirState& dir_state);

// Step 2, synchronously: writes this rank's shard, and those of ranks that do not see
// the directory that this rank stands in for, from ps.state (collected by the caller;
// a collection error is in ps.error). Returns this rank's report (errors included).
ShardReport write_shards(dist::Communicator& comm, PendingSave& ps, const std::string& config_yaml);

// Step 2, asynchronously (every rank sees the directory): snapshots `live` into host
// memory (reusing `buffers`, then remembering the new snapshot there) and starts this
// rank's shard write on `writer`. Errors go to ps.error. Not a collective call.
void start_async_write(dist::Communicator& comm, PendingSave& ps, const CollectedState& live,
                       CollectedState& buffers, AsyncShardWriter& writer,
                       const std::string& config_yaml);
// This rank's report of the asynchronous write (waits for it).
ShardReport finish_async_write(dist::Communicator& comm, const PendingSave& ps, AsyncShardWriter& writer);

// Step 3. Returns the slowest rank's shard write, in seconds.
double commit(dist::Communicator& comm, PendingSave& ps, const std::string& save_dir,
              const ShardReport& mine);

}  // namespace dtrain::checkpoint::save_protocol
