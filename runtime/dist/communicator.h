// The Communicator interface (shaped like PyTorch c10d's Backend) and its factory.
//
// One Communicator per job connects all ranks. Collectives are called by every rank in
// the same order; tensors are reduced/broadcast in place and must be contiguous.
//
//   auto comm = dtrain::dist::make_communicator("auto", /*device=*/"cpu");
//   comm->all_reduce(grad_bucket, dtrain::dist::ReduceOp::kAvg);
//   auto flags = comm->all_gather_bytes(can_read ? "1" : "0");
//
// Errors are dtrain::CommError carrying the backend, the operation, the rank and the
// underlying library's message. An operation a backend does not support fails with the
// backend's name.
//
// Threads (the one statement of this contract; DataParallel, dist/agree.h and the
// other users of a Communicator refer to it): a Communicator is not thread-safe. Its
// calls, and those of the Work objects it returns, are serialized by the caller (never
// two at once) and made from the training thread, with one exception: all_reduce_async()
// and Work::is_completed()/wait() may also come from a thread working for the training
// thread while it waits. That is DataParallel's gradient hooks during backward(): for
// CPU parameters autograd runs them on the training thread itself, for CUDA parameters
// on autograd's device thread while the training thread is blocked in backward()
// (DataParallel requires every parameter on one device, so there is one such thread).
// Backends may run threads of their own behind this interface (the MPI backend's
// async all-reduce thread).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

namespace dtrain::dist {

enum class ReduceOp { kSum, kAvg, kMax, kMin };

// Handle to an asynchronous collective (c10d's Work).
class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the operation finished; throws CommError if it failed.
  virtual void wait() = 0;
  // True once the operation finished (successfully or not); never blocks.
  virtual bool is_completed() = 0;
};

// Point-to-point transfers in flight (Communicator::exchange_bytes_async).
class Exchange {
 public:
  // Destroying an unfinished exchange gives it up: the backend cancels what it can and
  // keeps the buffers of what it cannot until the communicator is destroyed.
  virtual ~Exchange() = default;
  // Advances the transfers without waiting; true once every send and receive finished.
  // Throws CommError if one failed.
  virtual bool test() = 0;
  // Waits until every transfer finished and returns what each source sent, in the order
  // of the `sources` given. Throws CommError if one failed. Call it once.
  virtual std::vector<std::string> wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  // "mpi", "nccl" or "local".
  virtual std::string backend_name() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Rank and rank count among the ranks that share this node's memory.
  virtual int local_rank() const = 0;
  virtual int local_size() const = 0;

  virtual void barrier() = 0;
  // Copies `tensor` of rank `root` into `tensor` of every rank (same shape and dtype).
  virtual void broadcast(at::Tensor& tensor, int root) = 0;
  // Reduces `tensor` over all ranks, in place. kAvg divides the sum by size().
  virtual void all_reduce(at::Tensor& tensor, ReduceOp op) = 0;
  // Starts an all-reduce; `tensor` must stay alive and untouched until wait().
  // The default runs all_reduce() synchronously and returns a completed Work.
  virtual std::shared_ptr<Work> all_reduce_async(at::Tensor& tensor, ReduceOp op);
  // Every rank's `mine`, indexed by rank (sizes may differ per rank).
  virtual std::vector<std::string> all_gather_bytes(const std::string& mine) = 0;
  // Replaces `bytes` on every rank by rank `root`'s `bytes`.
  virtual void broadcast_bytes(std::string& bytes, int root) = 0;
  // One round of point-to-point transfers: sends `send` to rank `dest` (nothing when
  // dest < 0) and returns what rank `source` sent to this rank ("" when source < 0).
  // Every rank calls it, and the pairs must match: rank a names b as dest exactly when
  // b names a as source. The default goes through all_gather_bytes (every rank receives
  // every payload); the MPI backend sends point to point (MPI_Sendrecv).
  virtual std::string send_recv_bytes(const std::string& send, int dest, int source);
  // Starts sending `send` to every rank of `dests` and receiving one message from every
  // rank of `sources`, and returns at once. Every rank calls it at the same point of its
  // sequence of calls, and the pairs match: rank a lists b in dests exactly when b lists
  // a in sources. `keep` owns the memory `send` views until the exchange finished.
  // The MPI backend posts non-blocking sends and receives (a length, then the bytes), on
  // tags of their own: they advance in test(), wait() and any other MPI call of the
  // process (with the MPI backend's async thread, the gradient all-reduces; with NCCL
  // gradients, only test() and the MPI calls of checkpointing), while other calls of this
  // communicator go on. An exchange dropped unfinished cancels its requests; the
  // communicator should then be on its way out (its tags come round again after 4096).
  // The default runs the whole exchange in this call, through all_gather_bytes (every
  // rank receives every payload), and returns a finished one.
  virtual std::unique_ptr<Exchange> exchange_bytes_async(std::string_view send,
                                                         std::shared_ptr<const void> keep,
                                                         const std::vector<int>& dests,
                                                         const std::vector<int>& sources);

  // Convenience wrappers built on the above.
  int64_t all_reduce_int(int64_t value, ReduceOp op);
  double all_reduce_double(double value, ReduceOp op);
};

// For backends' exchange_bytes_async: throws CommError unless every rank of `dests` and
// of `sources` is another rank of `comm`, named once.
void check_exchange_ranks(const Communicator& comm, const std::vector<int>& dests,
                          const std::vector<int>& sources);

// Builds the communicator for `backend`: "mpi", "nccl", "local" (world of one), or
// "auto" (nccl when device is cuda and NCCL was built in, else mpi). The MPI runtime
// must have been initialized (MpiRuntime) for "mpi" and "nccl".
std::shared_ptr<Communicator> make_communicator(const std::string& backend,
                                                const std::string& device);

// True when this build includes the NCCL backend.
bool nccl_available();

}  // namespace dtrain::dist
