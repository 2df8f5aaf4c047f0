// MpiCommunicator: Communicator collectives over MPI (CPU tensors, chunked for any size).
#include "runtime/dist/mpi_communicator.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>

#include "runtime/base/error.h"
#include "runtime/dist/chunks.h"
#include "runtime/dist/reduce_rules.h"

namespace dtrain::dist {
namespace {

using detail::for_each_chunk;

// Who reports an error: this rank of its communicator, and its host.
struct Who {
  int rank;
  int size;
  std::string host;
};

std::string describe_mpi_failure(const Who& who, const char* op, int rc) {
  return fmt::format("mpi backend: {} failed on rank {} of {} (host {}): {}", op, who.rank,
                     who.size, who.host, mpi_error_string(rc));
}

// The MPI datatype reductions of `dtype` use, or MPI_DATATYPE_NULL when unsupported.
MPI_Datatype reduce_datatype(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return MPI_FLOAT;
    case at::kDouble:
      return MPI_DOUBLE;
    case at::kChar:
      return MPI_INT8_T;
    case at::kByte:
      return MPI_UINT8_T;
    case at::kShort:
      return MPI_INT16_T;
    case at::kInt:
      return MPI_INT32_T;
    case at::kLong:
      return MPI_INT64_T;
    case at::kBool:
      return MPI_C_BOOL;
    default:
      return MPI_DATATYPE_NULL;
  }
}

// The MPI operation for `op` on `dtype`, or MPI_OP_NULL when unsupported (bool avg).
MPI_Op reduce_mpi_op(at::ScalarType dtype, ReduceOp op) {
  if (dtype == at::kBool) {
    switch (op) {
      case ReduceOp::kSum:
      case ReduceOp::kMax:
        return MPI_LOR;
      case ReduceOp::kMin:
        return MPI_LAND;
      case ReduceOp::kAvg:
        return MPI_OP_NULL;
    }
  }
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return MPI_SUM;
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
  }
  return MPI_OP_NULL;
}

// One all-reduce, prepared: what MPI reduces and what to do once it finished.
struct Reduction {
  at::Tensor tensor;  // the caller's tensor
  at::Tensor buffer;  // what MPI reduces in place: `tensor` or a float32 copy of it
  MPI_Datatype datatype = MPI_DATATYPE_NULL;
  MPI_Op mpi_op = MPI_OP_NULL;
  bool divide = false;  // kAvg
  int size = 1;
};

// Applies the kAvg division and copies a float32 temporary back into the caller's tensor.
void finish_reduction(Reduction& r) {
  at::NoGradGuard no_grad;
  if (r.divide) {
    if (at::isFloatingType(r.buffer.scalar_type())) {
      r.buffer.div_(r.size);
    } else {
      r.buffer.div_(r.size, "trunc");
    }
  }
  if (!r.buffer.is_same(r.tensor)) r.tensor.copy_(r.buffer);
}

// Validates dtype/op and prepares the buffer MPI reduces; throws via `fail`.
template <typename FailFn>
Reduction prepare_reduction(at::Tensor& tensor, ReduceOp op, int size, FailFn fail) {
  Reduction r;
  r.tensor = tensor;
  r.size = size;
  r.divide = op == ReduceOp::kAvg;
  const at::ScalarType dtype = tensor.scalar_type();
  const at::ScalarType reduced = reduced_via_float32(dtype) ? at::kFloat : dtype;
  if (std::string why = reduction_error(dtype, op); !why.empty()) fail(why);
  r.datatype = reduce_datatype(reduced);
  r.mpi_op = reduce_mpi_op(dtype, op);
  if (reduced != dtype) {
    at::NoGradGuard no_grad;
    r.buffer = tensor.to(at::kFloat);
  } else {
    r.buffer = tensor;
  }
  return r;
}

// Work of an MPI_Iallreduce (one request per chunk).
class MpiWork : public Work {
 public:
  MpiWork(std::vector<MPI_Request> requests, Reduction reduction, Who who)
      : requests_(std::move(requests)), reduction_(std::move(reduction)), who_(std::move(who)) {}

  ~MpiWork() override {
    if (!done_ && !MpiRuntime::is_finalized()) {
      MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE);
    }
  }

  void wait() override {
    if (!done_) {
      std::vector<MPI_Status> statuses(requests_.size());
      const int rc =
          MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), statuses.data());
      complete(rc, statuses);
    }
    if (!error_.empty()) throw CommError(error_);
  }

  bool is_completed() override {
    if (done_) return true;
    std::vector<MPI_Status> statuses(requests_.size());
    int flag = 0;
    const int rc =
        MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &flag, statuses.data());
    if (rc != MPI_SUCCESS || flag) complete(rc, statuses);
    return done_;
  }

 private:
  // Records the outcome; on success applies the division / copy-back.
  void complete(int rc, const std::vector<MPI_Status>& statuses) {
    done_ = true;
    if (rc == MPI_ERR_IN_STATUS) {
      for (const MPI_Status& status : statuses) {
        if (status.MPI_ERROR != MPI_SUCCESS && status.MPI_ERROR != MPI_ERR_PENDING) {
          rc = status.MPI_ERROR;
          break;
        }
      }
    }
    if (rc != MPI_SUCCESS) {
      error_ = describe_mpi_failure(who_, "all_reduce_async", rc);
      return;
    }
    try {
      finish_reduction(reduction_);
    } catch (const std::exception& e) {
      error_ = fmt::format("mpi backend: all_reduce_async on rank {} of {} (host {}): {}",
                           who_.rank, who_.size, who_.host, e.what());
    }
  }

  std::vector<MPI_Request> requests_;
  Reduction reduction_;
  Who who_;
  bool done_ = false;
  std::string error_;  // empty unless the operation failed
};

// The outcome of an all-reduce queued to the async thread, shared by the thread's task
// and the caller's Work.
class ThreadOutcome {
 public:
  void wait_done() {
    std::unique_lock lock(mutex_);
    done_cv_.wait(lock, [&] { return done_; });
  }
  bool done() {
    std::lock_guard lock(mutex_);
    return done_;
  }
  const std::string& error() const { return error_; }  // after done
  void complete(std::string error) {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
      error_ = std::move(error);
    }
    done_cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable done_cv_;
  bool done_ = false;
  std::string error_;
};

// The caller's side: as MpiWork, destroying it before completion waits.
class ThreadWork : public Work {
 public:
  explicit ThreadWork(std::shared_ptr<ThreadOutcome> outcome) : outcome_(std::move(outcome)) {}
  ~ThreadWork() override { outcome_->wait_done(); }
  void wait() override {
    outcome_->wait_done();
    if (!outcome_->error().empty()) throw CommError(outcome_->error());
  }
  bool is_completed() override { return outcome_->done(); }

 private:
  std::shared_ptr<ThreadOutcome> outcome_;
};

}  // namespace

// One thread that runs queued tasks (blocking MPI calls) in order. The owner's thread
// makes no MPI call while a task may run: it drains the queue first.
class MpiCommunicator::AsyncThread {
 public:
  AsyncThread() : thread_([this] { loop(); }) {}
  ~AsyncThread() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();  // runs what is queued first: its buffers are alive in the tasks
  }
  AsyncThread(const AsyncThread&) = delete;
  AsyncThread& operator=(const AsyncThread&) = delete;

  // `task` must not throw.
  void post(std::function<void()> task) {
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(std::move(task));
    }
    cv_.notify_all();
  }

  void drain() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return queue_.empty() && !busy_; });
  }

 private:
  void loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, nothing left
      std::function<void()> task = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
      lock.unlock();
      task();
      task = nullptr;  // release the task's tensors before reporting idle
      lock.lock();
      busy_ = false;
      cv_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool busy_ = false;
  bool stop_ = false;
  std::thread thread_;  // last: started once the members above exist
};

MpiCommunicator::MpiCommunicator() : MpiCommunicator(MPI_COMM_WORLD) {}

MpiCommunicator::MpiCommunicator(MPI_Comm base, Options options) : options_(options) {
  DTRAIN_CHECK_T(CommError, MpiRuntime::is_initialized() && !MpiRuntime::is_finalized(),
                 "mpi backend: MPI is not initialized (or already finalized); construct a "
                 "dtrain::dist::MpiRuntime at the start of main() before creating an MPI "
                 "communicator");
  DTRAIN_CHECK_T(CommError,
                 options_.max_count_per_call >= 1 && options_.max_count_per_call <= INT_MAX,
                 "mpi backend: max_count_per_call must be in [1, {}], got {}", INT_MAX,
                 options_.max_count_per_call);
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int name_length = 0;
  if (MPI_Get_processor_name(name, &name_length) == MPI_SUCCESS) {
    host_.assign(name, static_cast<size_t>(name_length));
  }
  MPI_Comm dup = MPI_COMM_NULL;
  check(MPI_Comm_dup(base, &dup), "init (MPI_Comm_dup)");
  comm_.reset(dup);
  check(MPI_Comm_set_errhandler(comm_.get(), MPI_ERRORS_RETURN), "init (set error handler)");
  check(MPI_Comm_rank(comm_.get(), &rank_), "init (MPI_Comm_rank)");
  check(MPI_Comm_size(comm_.get(), &size_), "init (MPI_Comm_size)");
  MPI_Comm local = MPI_COMM_NULL;
  check(MPI_Comm_split_type(comm_.get(), MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local),
        "init (MPI_Comm_split_type)");
  MpiCommHandle local_handle(local);
  check(MPI_Comm_rank(local, &local_rank_), "init (local MPI_Comm_rank)");
  check(MPI_Comm_size(local, &local_size_), "init (local MPI_Comm_size)");
  int level = MPI_THREAD_SINGLE;
  check(MPI_Query_thread(&level), "init (MPI_Query_thread)");
  use_thread_ = options_.async_thread && level >= MPI_THREAD_SERIALIZED;
}

MpiCommunicator::~MpiCommunicator() {
  thread_.reset();  // runs what is queued, then joins, before the communicator is freed
  settle_orphans();
}

void MpiCommunicator::drain() {
  if (thread_) thread_->drain();
}

void MpiCommunicator::check(int rc, const char* op) const {
  if (rc != MPI_SUCCESS) throw CommError(describe_mpi_failure({rank_, size_, host_}, op, rc));
}

void MpiCommunicator::fail(const char* op, const std::string& what) const {
  throw CommError(
      fmt::format("mpi backend: {} on rank {} of {} (host {}): {}", op, rank_, size_, host_, what));
}

void MpiCommunicator::check_root(int root, const char* op) const {
  if (std::string why = root_error(root, size_); !why.empty()) fail(op, why);
}

void MpiCommunicator::check_tensor(const at::Tensor& tensor, const char* op) const {
  if (std::string why = cpu_tensor_error(tensor, "use the nccl backend for GPU tensors"); !why.empty()) fail(op, why);
}

void MpiCommunicator::broadcast_raw(void* data, int64_t nbytes, int root, const char* op) {
  auto* bytes = static_cast<char*>(data);
  for_each_chunk(nbytes, options_.max_count_per_call, [&](int64_t offset, int count) {
    check(MPI_Bcast(bytes + offset, count, MPI_BYTE, root, comm_.get()), op);
  });
}

void MpiCommunicator::barrier() {
  drain();
  check(MPI_Barrier(comm_.get()), "barrier");
}

void MpiCommunicator::broadcast(at::Tensor& tensor, int root) {
  check_tensor(tensor, "broadcast");
  check_root(root, "broadcast");
  drain();
  broadcast_raw(tensor.data_ptr(), static_cast<int64_t>(tensor.nbytes()), root, "broadcast");
}

void MpiCommunicator::all_reduce(at::Tensor& tensor, ReduceOp op) {
  const char* name = "all_reduce";
  check_tensor(tensor, name);
  Reduction r =
      prepare_reduction(tensor, op, size_, [&](const std::string& what) { fail(name, what); });
  drain();
  auto* base = static_cast<char*>(r.buffer.data_ptr());
  const int64_t element_size = r.buffer.element_size();
  for_each_chunk(r.buffer.numel(), options_.max_count_per_call, [&](int64_t offset, int count) {
    check(MPI_Allreduce(MPI_IN_PLACE, base + offset * element_size, count, r.datatype, r.mpi_op,
                        comm_.get()),
          name);
  });
  try {
    finish_reduction(r);
  } catch (const std::exception& e) {
    fail(name, e.what());
  }
}

std::shared_ptr<Work> MpiCommunicator::all_reduce_async(at::Tensor& tensor, ReduceOp op) {
  const char* name = "all_reduce_async";
  check_tensor(tensor, name);
  Reduction r =
      prepare_reduction(tensor, op, size_, [&](const std::string& what) { fail(name, what); });
  if (use_thread_) {
    if (!thread_) thread_ = std::make_unique<AsyncThread>();
    auto outcome = std::make_shared<ThreadOutcome>();
    thread_->post([this, outcome, r = std::move(r), name]() mutable {
      std::string error;
      try {
        auto* data = static_cast<char*>(r.buffer.data_ptr());
        const int64_t element_size = r.buffer.element_size();
        for_each_chunk(r.buffer.numel(), options_.max_count_per_call,
                       [&](int64_t offset, int count) {
                         check(MPI_Allreduce(MPI_IN_PLACE, data + offset * element_size, count,
                                             r.datatype, r.mpi_op, comm_.get()),
                               name);
                       });
        finish_reduction(r);
      } catch (const CommError& e) {
        error = e.what();
      } catch (const std::exception& e) {
        error = fmt::format("mpi backend: {} on rank {} of {} (host {}): {}", name, rank_, size_,
                            host_, e.what());
      }
      outcome->complete(std::move(error));
    });
    return std::make_shared<ThreadWork>(std::move(outcome));
  }
  auto* base = static_cast<char*>(r.buffer.data_ptr());
  const int64_t element_size = r.buffer.element_size();
  std::vector<MPI_Request> requests;
  try {
    for_each_chunk(r.buffer.numel(), options_.max_count_per_call, [&](int64_t offset, int count) {
      MPI_Request request = MPI_REQUEST_NULL;
      check(MPI_Iallreduce(MPI_IN_PLACE, base + offset * element_size, count, r.datatype, r.mpi_op,
                           comm_.get(), &request),
            name);
      requests.push_back(request);
    });
  } catch (...) {
    // Chunks already started must finish before their buffer may go away.
    MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE);
    throw;
  }
  return std::make_shared<MpiWork>(std::move(requests), std::move(r), Who{rank_, size_, host_});
}

std::vector<std::string> MpiCommunicator::all_gather_bytes(const std::string& mine) {
  const char* name = "all_gather_bytes";
  const int64_t my_size = static_cast<int64_t>(mine.size());
  drain();
  std::vector<int64_t> sizes(static_cast<size_t>(size_));
  check(MPI_Allgather(&my_size, 1, MPI_INT64_T, sizes.data(), 1, MPI_INT64_T, comm_.get()), name);
  std::vector<std::string> result(sizes.size());
  int64_t total = 0;
  int64_t longest = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    result[i].resize(static_cast<size_t>(sizes[i]));
    total += sizes[i];
    longest = std::max(longest, sizes[i]);
  }
  if (total == 0) return result;
  // One MPI_Allgatherv when the total fits in one call; otherwise rounds in which every
  // rank sends at most `per_round` bytes of its remaining payload.
  const int64_t max_count = options_.max_count_per_call;
  const int64_t per_round = total <= max_count ? longest : std::max<int64_t>(1, max_count / size_);
  std::vector<int> counts(sizes.size());
  std::vector<int> displacements(sizes.size());
  std::string round_buffer;
  for (int64_t start = 0; start < longest; start += per_round) {
    int offset = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      counts[i] = static_cast<int>(std::clamp<int64_t>(sizes[i] - start, 0, per_round));
      displacements[i] = offset;
      offset += counts[i];
    }
    round_buffer.resize(static_cast<size_t>(offset));
    const int64_t my_start = std::min(start, my_size);
    check(MPI_Allgatherv(mine.data() + my_start, counts[static_cast<size_t>(rank_)], MPI_BYTE,
                         round_buffer.data(), counts.data(), displacements.data(), MPI_BYTE,
                         comm_.get()),
          name);
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (counts[i] == 0) continue;
      std::copy_n(round_buffer.data() + displacements[i], counts[i], result[i].data() + start);
    }
  }
  return result;
}

void MpiCommunicator::broadcast_bytes(std::string& bytes, int root) {
  const char* name = "broadcast_bytes";
  check_root(root, name);
  drain();
  int64_t length = rank_ == root ? static_cast<int64_t>(bytes.size()) : 0;
  check(MPI_Bcast(&length, 1, MPI_INT64_T, root, comm_.get()), name);
  if (rank_ != root) bytes.resize(static_cast<size_t>(length));
  broadcast_raw(bytes.data(), length, root, name);
}

std::string MpiCommunicator::send_recv_bytes(const std::string& send, int dest, int source) {
  const char* name = "send_recv_bytes";
  DTRAIN_CHECK_T(CommError, dest < size_ && source < size_,
                 "{}: rank {} of {} names dest {} and source {}", name, rank_, size_, dest, source);
  drain();
  const int to = dest >= 0 ? dest : MPI_PROC_NULL;
  const int from = source >= 0 ? source : MPI_PROC_NULL;
  constexpr int kTag = 7341;  // on this communicator's private MPI communicator
  int64_t out_length = static_cast<int64_t>(send.size());
  int64_t in_length = 0;
  check(MPI_Sendrecv(&out_length, 1, MPI_INT64_T, to, kTag, &in_length, 1, MPI_INT64_T, from, kTag,
                     comm_.get(), MPI_STATUS_IGNORE),
        name);
  std::string received(static_cast<size_t>(source >= 0 ? in_length : 0), '\0');
  // In chunks of at most max_count_per_call bytes (an int count), all posted at once:
  // messages between two ranks with one tag arrive in order.
  const int64_t chunk = std::max<int64_t>(1, options_.max_count_per_call);
  std::vector<MPI_Request> requests;
  try {
    for (int64_t start = 0; source >= 0 && start < in_length; start += chunk) {
      requests.push_back(MPI_REQUEST_NULL);
      check(MPI_Irecv(received.data() + start, static_cast<int>(std::min(chunk, in_length - start)),
                      MPI_BYTE, from, kTag, comm_.get(), &requests.back()),
            name);
    }
    for (int64_t start = 0; dest >= 0 && start < out_length; start += chunk) {
      requests.push_back(MPI_REQUEST_NULL);
      check(MPI_Isend(send.data() + start, static_cast<int>(std::min(chunk, out_length - start)),
                      MPI_BYTE, to, kTag, comm_.get(), &requests.back()),
            name);
    }
  } catch (...) {
    MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE);
    throw;
  }
  check(MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE), name);
  return received;
}

}  // namespace dtrain::dist
