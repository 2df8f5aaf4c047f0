// ThreadWorld and ThreadCommunicator: N ranks as N threads over one rendezvous.
//
// Every collective is a numbered round (each rank numbers its own calls; ranks that keep
// in step give the same number to the same collective). A rank posts a Call describing
// its arguments and waits; the rank that completes the round moves every rank's data
// under the world's lock, while the others are still blocked in their call, so no
// argument is copied before it is needed and none is read after its owner returned.
#include "runtime/dist/thread_communicator.h"

#include <ATen/core/grad_mode.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "runtime/base/error.h"
#include "runtime/dist/reduce_rules.h"

namespace dtrain::dist {

// One rank's arguments of one collective; lives on the caller's stack during join().
struct ThreadWorld::Call {
  const char* op = "";
  at::Tensor* tensor = nullptr;  // broadcast, all_reduce, all_reduce_async
  ReduceOp reduce = ReduceOp::kSum;
  int root = -1;                                 // broadcast, broadcast_bytes
  const std::string* mine = nullptr;             // all_gather_bytes
  std::vector<std::string>* gathered = nullptr;  // all_gather_bytes
  std::string* bytes = nullptr;                  // broadcast_bytes
  std::string fault;                             // this rank fails the collective
};

struct ThreadWorld::State {
  struct Round {
    std::vector<Call*> calls;  // by rank; null until that rank joined
    int joined = 0;
    int left = 0;
    bool done = false;
    std::string failure;  // why the round failed ("" on success)
  };
  struct Fault {
    std::string op;
    int rank;
    int nth;
    bool fired = false;
  };

  State(int n, Options o) : size(n), options(o), exited(static_cast<size_t>(n)) {}

  // Completes `round` once every rank joined: checks that the calls match and moves the
  // data. Called with the lock held.
  void complete(Round& round);
  // Why `round` can never complete because a rank that has not joined it ended, or "".
  std::string missing_exited(const Round& round) const;

  const int size;
  const Options options;
  std::mutex mutex;
  std::condition_variable changed;
  std::map<int64_t, Round> rounds;
  std::vector<std::optional<std::string>> exited;       // by rank: how its thread ended
  std::map<std::pair<int, std::string>, int> calls_of;  // (rank, op) -> calls so far
  std::vector<Fault> faults;
};

namespace {

const char* const kCollectives[] = {"barrier",          "broadcast",        "all_reduce",
                                    "all_reduce_async", "all_gather_bytes", "broadcast_bytes"};

bool is_reduction(const std::string& op) { return op == "all_reduce" || op == "all_reduce_async"; }

// What must be the same on every rank of a collective: the op and, like MPI's counts,
// dtype and element count (not shape) of a reduction, byte count and root of a broadcast.
std::string signature(const ThreadWorld::Call& c) {
  const std::string op = c.op;
  if (is_reduction(op)) {
    return fmt::format("{} of {} x {} ({})", op, c10::toString(c.tensor->scalar_type()),
                       c.tensor->numel(), reduce_op_name(c.reduce));
  }
  if (op == "broadcast") {
    return fmt::format("broadcast of {} bytes from root {}", c.tensor->nbytes(), c.root);
  }
  if (op == "broadcast_bytes") return fmt::format("broadcast_bytes from root {}", c.root);
  return op;
}

// Reduces the ranks' tensors in rank order into a new tensor (float32 for float16 and
// bfloat16), following reduce_rules.h.
at::Tensor reduce(const std::vector<ThreadWorld::Call*>& calls, ReduceOp op) {
  const at::ScalarType dtype = calls[0]->tensor->scalar_type();
  const bool via_float = reduced_via_float32(dtype);
  auto value = [&](size_t r) {
    const at::Tensor t = calls[r]->tensor->view({-1});  // shapes may differ, counts do not
    return via_float ? t.to(at::kFloat) : t;
  };
  at::Tensor acc = value(0).clone();
  const bool boolean = dtype == at::kBool;
  for (size_t r = 1; r < calls.size(); ++r) {
    const at::Tensor x = value(r);
    switch (op) {
      case ReduceOp::kSum:
      case ReduceOp::kAvg:
        boolean ? acc.logical_or_(x) : acc.add_(x);
        break;
      case ReduceOp::kMax:
        if (boolean) {
          acc.logical_or_(x);
        } else {
          acc = acc.maximum(x);
        }
        break;
      case ReduceOp::kMin:
        if (boolean) {
          acc.logical_and_(x);
        } else {
          acc = acc.minimum(x);
        }
        break;
    }
  }
  if (op == ReduceOp::kAvg) {
    const int64_t n = static_cast<int64_t>(calls.size());
    if (at::isFloatingType(acc.scalar_type())) {
      acc.div_(n);
    } else {
      acc.div_(n, "trunc");
    }
  }
  return acc;
}

// The Work of an all_reduce_async that already ran; wait() throws its error, if any.
class DoneWork : public Work {
 public:
  explicit DoneWork(std::string error) : error_(std::move(error)) {}
  void wait() override {
    if (!error_.empty()) throw CommError(error_);
  }
  bool is_completed() override { return true; }

 private:
  std::string error_;
};

}  // namespace

void ThreadWorld::State::complete(Round& round) {
  const std::vector<Call*>& calls = round.calls;
  const std::string op = calls[0]->op;
  // Every rank must have called the same collective with matching arguments.
  std::vector<std::string> signatures;
  for (const Call* c : calls) signatures.push_back(signature(*c));
  if (std::adjacent_find(signatures.begin(), signatures.end(), std::not_equal_to<>()) !=
      signatures.end()) {
    std::vector<std::string> lines;
    for (size_t r = 0; r < calls.size(); ++r) {
      lines.push_back(fmt::format("rank {}: {}", r, signatures[r]));
    }
    round.failure = fmt::format("the ranks' calls do not match ({})", fmt::join(lines, "; "));
    return;
  }
  try {
    at::NoGradGuard no_grad;
    if (op == "broadcast") {
      const at::Tensor& from = *calls[static_cast<size_t>(calls[0]->root)]->tensor;
      for (Call* c : calls) {
        if (c->tensor->data_ptr() != from.data_ptr() && from.nbytes() > 0) {
          std::memcpy(c->tensor->data_ptr(), from.data_ptr(), from.nbytes());
        }
      }
    } else if (is_reduction(op)) {
      const at::Tensor result = reduce(calls, calls[0]->reduce);
      for (Call* c : calls) c->tensor->view({-1}).copy_(result);
    } else if (op == "all_gather_bytes") {
      std::vector<std::string> all;
      all.reserve(calls.size());
      for (Call* c : calls) all.push_back(*c->mine);
      for (Call* c : calls) *c->gathered = all;
    } else if (op == "broadcast_bytes") {
      const std::string& from = *calls[static_cast<size_t>(calls[0]->root)]->bytes;
      for (Call* c : calls) {
        if (c->bytes != &from) *c->bytes = from;
      }
    }
  } catch (const std::exception& e) {
    round.failure = e.what();
  }
}

std::string ThreadWorld::State::missing_exited(const Round& round) const {
  std::vector<std::string> gone;
  for (size_t r = 0; r < round.calls.size(); ++r) {
    if (round.calls[r] == nullptr && exited[r]) {
      gone.push_back(fmt::format("rank {} ended without joining it ({})", r, *exited[r]));
    }
  }
  return fmt::format("{}", fmt::join(gone, "; "));
}

ThreadWorld::ThreadWorld(int size, Options options) {
  DTRAIN_CHECK_T(CommError, size >= 1, "thread backend: a world needs at least 1 rank, got {}",
                 size);
  state_ = std::make_unique<State>(size, options);
}

ThreadWorld::~ThreadWorld() = default;

int ThreadWorld::size() const { return state_->size; }

void ThreadWorld::inject_fault(const std::string& op, int rank, int nth) {
  const bool known =
      std::find(std::begin(kCollectives), std::end(kCollectives), op) != std::end(kCollectives);
  DTRAIN_CHECK_T(CommError, known,
                 "thread backend: cannot inject a fault into '{}': not a collective (one of {})",
                 op, fmt::join(kCollectives, ", "));
  DTRAIN_CHECK_T(CommError, rank >= 0 && rank < state_->size && nth >= 1,
                 "thread backend: fault on rank {} at call {}: need a rank in [0, {}) and a "
                 "call >= 1",
                 rank, nth, state_->size);
  std::lock_guard lock(state_->mutex);
  state_->faults.push_back({op, rank, nth});
}

void ThreadWorld::rank_exited(int rank, const std::string& why) {
  {
    std::lock_guard lock(state_->mutex);
    state_->exited.at(static_cast<size_t>(rank)) = why;
  }
  state_->changed.notify_all();
}

ThreadCommunicator::ThreadCommunicator(ThreadWorld& world, int rank)
    : state_(*world.state_), rank_(rank), size_(world.size()) {
  DTRAIN_CHECK_T(CommError, rank >= 0 && rank < size_,
                 "thread backend: rank {} is out of range [0, {})", rank, size_);
  ranks_per_node_ = state_.options.ranks_per_node > 0 ? state_.options.ranks_per_node : size_;
}

int ThreadCommunicator::local_rank() const { return rank_ % ranks_per_node_; }

int ThreadCommunicator::local_size() const {
  return std::min(ranks_per_node_, size_ - rank_ / ranks_per_node_ * ranks_per_node_);
}

void ThreadCommunicator::fail(const char* op, const std::string& what) const {
  throw CommError(fmt::format("thread backend: {} on rank {} of {}: {}", op, rank_, size_, what));
}

void ThreadCommunicator::check_root(int root, const char* op) const {
  if (std::string why = root_error(root, size_); !why.empty()) fail(op, why);
}

void ThreadCommunicator::check_tensor(const at::Tensor& tensor, const char* op) const {
  if (std::string why = cpu_tensor_error(tensor, "the thread backend is CPU only"); !why.empty()) fail(op, why);
}

void ThreadCommunicator::join(Call& call) {
  using State = ThreadWorld::State;
  State& s = state_;
  std::unique_lock lock(s.mutex);
  const int64_t number = ++calls_;
  const int nth = ++s.calls_of[{rank_, call.op}];
  for (State::Fault& f : s.faults) {
    if (!f.fired && f.rank == rank_ && f.op == call.op && f.nth == nth) {
      f.fired = true;
      call.fault = fmt::format("injected fault (call {} of {})", nth, call.op);
    }
  }
  State::Round& round = s.rounds[number];
  if (round.calls.empty()) round.calls.assign(static_cast<size_t>(s.size), nullptr);
  round.calls[static_cast<size_t>(rank_)] = &call;
  ++round.joined;
  if (!round.done) {
    if (!call.fault.empty()) {
      round.done = true;
      round.failure = fmt::format("peer rank {} failed: {}", rank_, call.fault);
    } else if (round.joined == s.size) {
      s.complete(round);
      round.done = true;
    } else {
      const auto deadline = std::chrono::steady_clock::now() + s.options.timeout;
      while (!round.done) {
        if (std::string gone = s.missing_exited(round); !gone.empty()) {
          round.done = true;
          round.failure = gone;
        } else if (s.changed.wait_until(lock, deadline) == std::cv_status::timeout && !round.done) {
          std::vector<int> absent;
          for (int r = 0; r < s.size; ++r) {
            if (round.calls[static_cast<size_t>(r)] == nullptr) absent.push_back(r);
          }
          round.done = true;
          round.failure = fmt::format(
              "timed out after {} ms waiting for rank(s) {} (a deadlock under MPI: do all "
              "ranks call the same collectives in the same order?)",
              s.options.timeout.count(), fmt::join(absent, ", "));
        }
      }
    }
    s.changed.notify_all();
  }
  const std::string failure = round.failure;
  // Calls of ranks that left must not be touched again: the round is done, so none is.
  if (++round.left == s.size) s.rounds.erase(number);
  lock.unlock();
  if (!call.fault.empty()) {
    throw CommError(fmt::format("thread backend: {} failed on rank {} of {}: {}", call.op, rank_,
                                size_, call.fault));
  }
  if (!failure.empty()) {
    throw CommError(fmt::format("thread backend: {} failed on rank {} of {}: {}", call.op, rank_,
                                size_, failure));
  }
}

void ThreadCommunicator::barrier() {
  ThreadWorld::Call call;
  call.op = "barrier";
  join(call);
}

void ThreadCommunicator::broadcast(at::Tensor& tensor, int root) {
  check_tensor(tensor, "broadcast");
  check_root(root, "broadcast");
  ThreadWorld::Call call;
  call.op = "broadcast";
  call.tensor = &tensor;
  call.root = root;
  join(call);
}

void ThreadCommunicator::all_reduce(at::Tensor& tensor, ReduceOp op) {
  check_tensor(tensor, "all_reduce");
  if (std::string why = reduction_error(tensor.scalar_type(), op); !why.empty()) {
    fail("all_reduce", why);
  }
  ThreadWorld::Call call;
  call.op = "all_reduce";
  call.tensor = &tensor;
  call.reduce = op;
  join(call);
}

std::shared_ptr<Work> ThreadCommunicator::all_reduce_async(at::Tensor& tensor, ReduceOp op) {
  check_tensor(tensor, "all_reduce_async");
  if (std::string why = reduction_error(tensor.scalar_type(), op); !why.empty()) {
    fail("all_reduce_async", why);
  }
  ThreadWorld::Call call;
  call.op = "all_reduce_async";
  call.tensor = &tensor;
  call.reduce = op;
  try {
    join(call);
  } catch (const CommError& e) {
    return std::make_shared<DoneWork>(e.what());
  }
  return std::make_shared<DoneWork>("");
}

std::vector<std::string> ThreadCommunicator::all_gather_bytes(const std::string& mine) {
  std::vector<std::string> gathered;
  ThreadWorld::Call call;
  call.op = "all_gather_bytes";
  call.mine = &mine;
  call.gathered = &gathered;
  join(call);
  return gathered;
}

namespace {
// An exchange whose bytes moved already, reported in flight until wait().
class HeldExchange : public Exchange {
 public:
  explicit HeldExchange(std::unique_ptr<Exchange> done) : done_(std::move(done)) {}
  bool test() override { return false; }
  std::vector<std::string> wait() override { return done_->wait(); }

 private:
  std::unique_ptr<Exchange> done_;
};
}  // namespace

std::unique_ptr<Exchange> ThreadCommunicator::exchange_bytes_async(std::string_view send,
                                                                   std::shared_ptr<const void> keep,
                                                                   const std::vector<int>& dests,
                                                                   const std::vector<int>& sources) {
  auto done = Communicator::exchange_bytes_async(send, std::move(keep), dests, sources);
  if (!state_.options.exchanges_finish_in_wait) return done;
  return std::make_unique<HeldExchange>(std::move(done));
}

void ThreadCommunicator::broadcast_bytes(std::string& bytes, int root) {
  check_root(root, "broadcast_bytes");
  ThreadWorld::Call call;
  call.op = "broadcast_bytes";
  call.bytes = &bytes;
  call.root = root;
  join(call);
}

std::vector<std::exception_ptr> run_ranks(ThreadWorld& world,
                                          const std::function<void(Communicator&)>& fn) {
  const int n = world.size();
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&world, &fn, &errors, r] {
      std::string how = "its function returned";
      try {
        ThreadCommunicator comm(world, r);
        fn(comm);
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
        how = "it threw: " + exception_message(errors[static_cast<size_t>(r)]);
      }
      world.rank_exited(r, how);
    });
  }
  for (std::thread& t : threads) t.join();
  return errors;
}

std::vector<std::exception_ptr> run_ranks(int size, const std::function<void(Communicator&)>& fn,
                                          ThreadWorldOptions options) {
  ThreadWorld world(size, options);
  return run_ranks(world, fn);
}

std::string exception_message(const std::exception_ptr& error) {
  if (!error) return "";
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown exception";
  }
}

}  // namespace dtrain::dist
