// A world of N ranks as N threads of one process (gloo's in-memory tests, c10d's
// FakeProcessGroup): multi-rank logic such as the checkpoint commit protocol runs under
// plain ctest, without mpirun, and a chosen collective can be made to fail on a chosen
// rank.
//
//   auto errors = dtrain::dist::run_ranks(4, [&](dtrain::dist::Communicator& comm) {
//     checkpoint::Checkpointer ckpt(model_of(comm.rank()), dir, comm);
//     ckpt.save("model_0000009");
//   });                                  // errors[r]: what rank r threw, or null
//
//   ThreadWorld world(2);
//   world.inject_fault("all_gather_bytes", /*rank=*/1, /*nth=*/2);  // 2nd call on rank 1
//   run_ranks(world, fn);
//
// Semantics are those of the MPI backend (MpiCommunicator): the same dtypes and reduction
// rules (runtime/dist/reduce_rules.h), CPU tensors only, argument errors raised before any
// communication on the ranks that passed them, messages "thread backend: <op> on rank R
// of N: ...". Results are deterministic: reductions combine the ranks' values in rank
// order, once, and every rank receives the same bits. Where MPI would hang or corrupt
// memory, the thread world throws CommError on every rank of the collective instead:
// ranks that call different collectives or pass different shapes, a rank whose thread
// ended (run_ranks) while others wait for it, and a wait longer than the world's timeout.
#pragma once

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/dist/communicator.h"

namespace dtrain::dist {

struct ThreadWorldOptions {
  // How long a rank waits in a collective for the others before every rank of it throws
  // CommError naming the ranks that did not come (a deadlock under MPI).
  std::chrono::milliseconds timeout{std::chrono::seconds(120)};
  // Ranks per simulated node, for local_rank()/local_size() (0: all ranks on one node).
  int ranks_per_node = 0;
  // exchange_bytes_async moves the bytes in the call (the default), but its test() says
  // "not finished" until wait(): transfers still in flight, for tests of what a caller
  // does before they arrive or when it drops them.
  bool exchanges_finish_in_wait = false;
};

// The rendezvous the ranks of one world share. Thread-safe; must outlive its
// communicators.
class ThreadWorld {
 public:
  using Options = ThreadWorldOptions;

  // A world of `size` >= 1 ranks. Throws CommError for a size below 1.
  explicit ThreadWorld(int size, Options options = Options());
  ~ThreadWorld();
  ThreadWorld(const ThreadWorld&) = delete;
  ThreadWorld& operator=(const ThreadWorld&) = delete;

  int size() const;

  // Makes the `nth` (1-based) call of collective `op` on `rank` throw CommError
  // "thread backend: <op> failed on rank R of N: injected fault (call nth)", and that
  // same collective throw "... peer rank R failed: injected fault ..." on the other ranks,
  // which therefore never hang. `op` is a Communicator method name: "barrier",
  // "broadcast", "all_reduce" (also counts all_reduce_int/all_reduce_double),
  // "all_reduce_async" (the error comes from wait()), "all_gather_bytes",
  // "broadcast_bytes". Several faults may be armed; each fires once.
  void inject_fault(const std::string& op, int rank, int nth = 1);

  // Says that `rank`'s thread will make no more calls (`why`: how it ended). Ranks that
  // wait for it in a collective, now or later, throw CommError naming it and `why`.
  // run_ranks() calls it when a rank's function returns or throws.
  void rank_exited(int rank, const std::string& why);

  // Implementation (thread_communicator.cpp): the rendezvous and one rank's call.
  struct State;
  struct Call;

 private:
  friend class ThreadCommunicator;
  std::unique_ptr<State> state_;
};

// Rank `rank` of a ThreadWorld. Like every Communicator, one instance is used by one
// thread (its rank's); different ranks' instances are used concurrently.
class ThreadCommunicator : public Communicator {
 public:
  ThreadCommunicator(ThreadWorld& world, int rank);

  std::string backend_name() const override { return "thread"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override;
  int local_size() const override;

  void barrier() override;
  void broadcast(at::Tensor& tensor, int root) override;
  void all_reduce(at::Tensor& tensor, ReduceOp op) override;
  // Argument errors are thrown here; the reduction runs now (when every rank called it)
  // and its errors, such as an injected fault, are thrown by wait(). The returned Work
  // is already completed.
  std::shared_ptr<Work> all_reduce_async(at::Tensor& tensor, ReduceOp op) override;
  std::vector<std::string> all_gather_bytes(const std::string& mine) override;
  void broadcast_bytes(std::string& bytes, int root) override;
  // The default (through all_gather_bytes), held in flight when the world's options say
  // exchanges_finish_in_wait.
  std::unique_ptr<Exchange> exchange_bytes_async(std::string_view send, std::shared_ptr<const void> keep,
                                                 const std::vector<int>& dests,
                                                 const std::vector<int>& sources) override;

 private:
  using Call = ThreadWorld::Call;
  // Joins collective number `calls_` + 1 with `call`; returns when every rank joined and
  // the data moved, or throws CommError for `call.op` on this rank.
  void join(Call& call);
  [[noreturn]] void fail(const char* op, const std::string& what) const;
  void check_root(int root, const char* op) const;
  void check_tensor(const at::Tensor& tensor, const char* op) const;

  ThreadWorld::State& state_;
  int rank_;
  int size_;
  int ranks_per_node_;
  int64_t calls_ = 0;  // collectives joined so far (the rendezvous round)
};

// Runs fn(comm) on `world.size()` threads, rank r with a ThreadCommunicator of rank r of
// `world`, and waits for all. Returns what each rank threw (null where fn returned); a
// rank that ends is reported to the world (rank_exited), so the others do not wait for it.
std::vector<std::exception_ptr> run_ranks(ThreadWorld& world,
                                          const std::function<void(Communicator&)>& fn);
// The same on a fresh world of `size` ranks.
std::vector<std::exception_ptr> run_ranks(int size, const std::function<void(Communicator&)>& fn,
                                          ThreadWorldOptions options = ThreadWorldOptions());

// The message of a captured exception ("" for null, "unknown exception" for a non-std one).
std::string exception_message(const std::exception_ptr& error);

}  // namespace dtrain::dist
