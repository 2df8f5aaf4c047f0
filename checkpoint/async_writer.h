// Background shard writing for asynchronous checkpoints: a snapshot of the state in host
// memory is written by a Boost.Asio I/O pool while training continues; the collective
// commit happens later on the training thread (Checkpointer::save_async/finish_async).
//
//   CollectedState snap = snapshot(state, nullptr, &plan, rank);  // the only stall
//   AsyncShardWriter writer;
//   writer.start(path, rank, std::move(snap), plan);
//   ... training steps ...
//   if (writer.done()) ShardManifest m = writer.wait();
//
// Thread-safety: start/done/wait are called from one thread (the training thread);
// the write itself runs on the pool's thread and touches only the snapshot and the
// shard file (HDF5 calls are serialized by h5::library_mutex(), runtime/h5). No MPI calls.
#pragma once

#include <atomic>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/format.h"

namespace dtrain::checkpoint {

// Copies the tensors of `state` into host memory (pinned for CUDA tensors, so that
// device-to-host copies are fast), so that training may change the originals while the
// copy is written. With `plan`, only the rows of replicated tensors that `rank` writes
// are copied (its shard is all that is written from the snapshot; the other rows are
// left uninitialized and, in fresh buffers, untouched, so they take no memory);
// per-rank tensors are copied whole. Tensors of `reuse` (an earlier snapshot nobody
// reads any more) are written into instead of fresh memory where name, dtype and shape
// match: a fresh buffer costs a page fault per 4 KiB, as much as the copy itself.
CollectedState snapshot(const CollectedState& state, const CollectedState* reuse = nullptr,
                        const std::vector<Piece>* plan = nullptr, int rank = 0);

class AsyncShardWriter {
 public:
  AsyncShardWriter();
  ~AsyncShardWriter();  // waits for a write in flight (errors are dropped)
  AsyncShardWriter(const AsyncShardWriter&) = delete;
  AsyncShardWriter& operator=(const AsyncShardWriter&) = delete;

  // Starts writing `state` (a snapshot) as rank `rank`'s shard at `path`, synced
  // through `env` (which must outlive the write). Throws dtrain::Error when a write is
  // already in flight.
  void start(std::string path, int rank, CollectedState state, std::vector<Piece> plan,
             ShardWriteObserver observer = nullptr, Env& env = Env::posix());
  // Runs `job` (which writes a shard some other way and returns its manifest) on the
  // I/O thread, as start() runs write_shard; wait() returns what it returns.
  void start_job(std::function<ShardManifest()> job);
  // Whether a write was started and has not been collected by wait().
  bool in_flight() const { return in_flight_; }
  // Whether the write in flight has finished (successfully or not). Never blocks.
  bool done() const { return finished_.load(std::memory_order_acquire); }
  // Blocks until the write finished; returns its manifest or rethrows its error.
  ShardManifest wait();
  // Seconds the last write took on the I/O thread.
  double last_write_seconds() const { return write_s_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  bool in_flight_ = false;
  std::atomic<bool> finished_{false};
  ShardManifest manifest_;
  std::exception_ptr error_;
  double write_s_ = 0.0;
};

}  // namespace dtrain::checkpoint
