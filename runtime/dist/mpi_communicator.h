// The MPI backend of Communicator: CPU tensors, collectives over a private duplicate of
// MPI_COMM_WORLD (or of a given communicator).
//
//   dtrain::dist::MpiRuntime mpi(&argc, &argv);
//   dtrain::dist::MpiCommunicator comm;          // collective: every rank constructs it
//   comm.all_reduce(grads, dtrain::dist::ReduceOp::kAvg);
//
// Supported dtypes: float32, float64, float16, bfloat16, int8, uint8, int16, int32, int64,
// bool. broadcast() copies bytes, so it takes any dtype. Reductions:
//   - float16/bfloat16 are reduced through a float32 temporary (sum in float32, rounded
//     once when copied back);
//   - kAvg sums then divides in place by size(); for integer dtypes the division
//     truncates toward zero (like C++ `/`);
//   - bool: kSum and kMax are logical or, kMin is logical and, kAvg is rejected.
// Messages longer than Options::max_count_per_call elements (INT_MAX by default, MPI's
// limit for counts) are split into several MPI calls, so any size works.
//
// Errors are CommError naming the backend ("mpi"), the operation, the rank and host, and
// MPI_Error_string's text (the duplicate communicator uses MPI_ERRORS_RETURN). Argument
// errors (non-CPU, non-contiguous, unsupported dtype, bad root) are raised before any MPI
// call, on the ranks that passed them; MPI errors are raised on the ranks MPI reports them
// to. Neither is agreed among ranks: callers that must keep ranks in step do that.
#pragma once

#include <mpi.h>

#include <climits>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/dist/communicator.h"
#include "runtime/dist/mpi_runtime.h"

namespace dtrain::dist {

// Tuning of an MpiCommunicator.
struct MpiCommunicatorOptions {
  // Most elements (bytes for broadcast and the *_bytes calls) passed to one MPI call;
  // larger messages are split. Lowering it only serves tests of the splitting.
  int64_t max_count_per_call = INT_MAX;
  // all_reduce_async runs a blocking MPI_Allreduce on a thread of this communicator's
  // (as Horovod's background thread does), which needs MPI_THREAD_SERIALIZED (MpiRuntime
  // asks for it). Without it, or with this off, it is an MPI_Iallreduce, which advances
  // only inside MPI calls on most MPI builds and, in Open MPI 4.1, runs ~1.4x slower than
  // MPI_Allreduce for large buffers (libnbc's algorithms).
  bool async_thread = true;
};

// Communicator over MPI. Not thread-safe: use from one thread (the one that initialized
// MPI). Construction and destruction are collective over the base communicator. With the
// async thread, every other call first waits until the all-reduces queued before it have
// run, so that MPI is never called from two threads at once and every rank issues its
// collectives in the order they were called.
class MpiCommunicator : public Communicator {
 public:
  using Options = MpiCommunicatorOptions;

  // Duplicates MPI_COMM_WORLD. Throws CommError if MPI is not initialized.
  MpiCommunicator();
  // Duplicates `base` (e.g. a sub-communicator) with `options`.
  explicit MpiCommunicator(MPI_Comm base, Options options = Options());
  ~MpiCommunicator() override;

  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  std::string backend_name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }

  void barrier() override;
  void broadcast(at::Tensor& tensor, int root) override;
  void all_reduce(at::Tensor& tensor, ReduceOp op) override;
  // Queued to the async thread (see MpiCommunicatorOptions::async_thread), which runs
  // the all-reduces in order, each followed by the kAvg division (and the copy back for
  // float16/bfloat16); wait() blocks until it ran and is_completed() never calls MPI.
  // The tensor must not be touched until then. Without the thread: MPI_Iallreduce,
  // wait() is MPI_Waitall plus the division, is_completed() is MPI_Testall. Either way,
  // destroying the Work before it completed waits for it.
  std::shared_ptr<Work> all_reduce_async(at::Tensor& tensor, ReduceOp op) override;
  // Exchanges the sizes (MPI_Allgather), then the bytes (MPI_Allgatherv, in rounds when
  // the total exceeds max_count_per_call).
  std::vector<std::string> all_gather_bytes(const std::string& mine) override;
  // Broadcasts the size, then the bytes.
  void broadcast_bytes(std::string& bytes, int root) override;
  std::string send_recv_bytes(const std::string& send, int dest, int source) override;
  // Non-blocking sends and receives (mpi_exchange.cpp): each dest gets the length, then
  // the bytes in chunks; each source's bytes are received once its length arrived. Each
  // exchange has tags of its own (from a count of calls, the same on every rank), so
  // exchanges in flight at once between the same ranks do not mix.
  std::unique_ptr<Exchange> exchange_bytes_async(std::string_view send, std::shared_ptr<const void> keep,
                                                 const std::vector<int>& dests,
                                                 const std::vector<int>& sources) override;

  // The private communicator the collectives run on (e.g. for MPI-IO); owned by this
  // object, do not free it.
  MPI_Comm mpi_comm() const { return comm_.get(); }
  // The processor name (host) of this rank, used in error messages.
  const std::string& host() const { return host_; }

 private:
  // Throws CommError for `op` unless `rc` is MPI_SUCCESS.
  void check(int rc, const char* op) const;
  // Throws CommError for `op` with `what` (an argument error).
  [[noreturn]] void fail(const char* op, const std::string& what) const;
  void check_root(int root, const char* op) const;
  void check_tensor(const at::Tensor& tensor, const char* op) const;
  // Calls MPI_Bcast on `nbytes` bytes at `data`, split into chunks.
  void broadcast_raw(void* data, int64_t nbytes, int root, const char* op);
  // Waits until the async thread ran everything queued (no-op without it).
  void drain();

  class AsyncThread;
  friend class MpiExchange;
  struct ExchangeState;
  // Before the communicator is freed: waits for nothing, but tests the cancelled
  // requests of the exchanges given up and keeps (leaks) the buffers of those still open.
  void settle_orphans() noexcept;
  // Exchanges given up unfinished, their requests cancelled (mpi_exchange.cpp).
  std::vector<std::shared_ptr<ExchangeState>> orphans_;
  int64_t live_exchanges_ = 0;  // exchanges not yet destroyed
  int64_t exchanges_ = 0;       // exchange_bytes_async calls so far (their tags)
  MpiCommHandle comm_;
  Options options_;
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;
  std::string host_;
  bool use_thread_ = false;
  std::unique_ptr<AsyncThread> thread_;  // started by the first all_reduce_async
};

}  // namespace dtrain::dist
