// What only the thread world does (the collectives themselves are in the conformance
// suite, communicator_conformance.h): run_ranks, injected faults, and CommErrors where
// MPI would hang (mismatched calls, a rank that ended, a timeout).
#include "runtime/dist/thread_communicator.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "runtime/base/error.h"
#include "tests/gtest_util.h"

namespace dtrain::dist {
namespace {

using std::chrono::milliseconds;

TEST(RunRanks, GivesEachThreadItsRankAndCollectsErrors) {
  std::atomic<int> rank_sum{0};
  auto errors = run_ranks(4, [&](Communicator& comm) {
    EXPECT_EQ(comm.backend_name(), "thread");
    EXPECT_EQ(comm.size(), 4);
    rank_sum += comm.rank();
    if (comm.rank() == 2) throw std::runtime_error("rank two gives up");
  });
  ASSERT_EQ(errors.size(), 4u);
  EXPECT_EQ(rank_sum.load(), 0 + 1 + 2 + 3);
  for (int r : {0, 1, 3}) EXPECT_FALSE(errors[r]) << r;
  EXPECT_EQ(exception_message(errors[2]), "rank two gives up");
  EXPECT_EQ(exception_message(nullptr), "");
}

TEST(RunRanks, LocalRanksFollowRanksPerNode) {
  ThreadWorldOptions options;
  options.ranks_per_node = 2;
  ThreadWorld world(3, options);
  std::vector<std::pair<int, int>> local(3);
  run_ranks(world, [&](Communicator& comm) {
    local[comm.rank()] = {comm.local_rank(), comm.local_size()};
  });
  // Node 0 holds ranks 0 and 1, node 1 only rank 2.
  EXPECT_EQ(local, (std::vector<std::pair<int, int>>{{0, 2}, {1, 2}, {0, 1}}));
}

TEST(ThreadWorld, RejectsBadArguments) {
  EXPECT_CONTAINS(dtrain::testing::ThrownMessage<CommError>([] { ThreadWorld w(0); }),
                  "at least 1 rank");
  ThreadWorld world(2);
  EXPECT_CONTAINS(
      dtrain::testing::ThrownMessage<CommError>([&] { world.inject_fault("allreduce", 0); }),
      "not a collective");
  EXPECT_CONTAINS(
      dtrain::testing::ThrownMessage<CommError>([&] { world.inject_fault("barrier", 2); }),
      "rank 2");
  EXPECT_CONTAINS(
      dtrain::testing::ThrownMessage<CommError>([&] { world.inject_fault("barrier", 0, 0); }),
      "call >= 1");
  EXPECT_CONTAINS(
      dtrain::testing::ThrownMessage<CommError>([&] { ThreadCommunicator c(world, 2); }),
      "rank 2 is out of range [0, 2)");
}

// Like MPI, and unlike the world of one, the thread world takes CPU tensors only.
TEST(ThreadWorld, RejectsNonCpuTensors) {
  std::vector<std::string> messages(2);
  run_ranks(2, [&](Communicator& comm) {
    at::Tensor meta = at::empty({4}, at::TensorOptions().dtype(at::kFloat).device(at::kMeta));
    messages[comm.rank()] =
        dtrain::testing::ThrownMessage<CommError>([&] { comm.all_reduce(meta, ReduceOp::kSum); });
  });
  EXPECT_CONTAINS(messages[1],
                  "thread backend: all_reduce on rank 1 of 2: expected a CPU tensor, "
                  "got one on meta");
}

// The k-th call of a collective fails on the chosen rank with its own message and on the
// others with "peer rank R failed"; every rank used up that collective, so they stay in
// step and the next one works.
TEST(ThreadWorld, InjectedFaultFailsThatCollectiveOnEveryRank) {
  ThreadWorld world(3);
  world.inject_fault("all_reduce", /*rank=*/1, /*nth=*/2);
  std::vector<std::string> messages(3);
  std::vector<int64_t> after(3);
  auto errors = run_ranks(world, [&](Communicator& comm) {
    EXPECT_EQ(comm.all_reduce_int(1, ReduceOp::kSum), 3);  // call 1: fine
    messages[comm.rank()] = dtrain::testing::ThrownMessage<CommError>(
        [&] { comm.all_reduce_int(1, ReduceOp::kSum); });                   // call 2: the fault
    after[comm.rank()] = comm.all_reduce_int(comm.rank(), ReduceOp::kMax);  // call 3
  });
  for (const auto& e : errors) EXPECT_FALSE(e) << exception_message(e);
  EXPECT_EQ(messages[1],
            "thread backend: all_reduce failed on rank 1 of 3: injected fault (call 2 of "
            "all_reduce)");
  for (int r : {0, 2}) {
    EXPECT_EQ(messages[r], "thread backend: all_reduce failed on rank " + std::to_string(r) +
                               " of 3: peer rank 1 failed: injected fault (call 2 of "
                               "all_reduce)");
  }
  EXPECT_EQ(after, (std::vector<int64_t>{2, 2, 2}));
}

// Each op counts its own calls; faults fire once.
TEST(ThreadWorld, FaultsCountCallsPerOpAndFireOnce) {
  ThreadWorld world(2);
  world.inject_fault("broadcast_bytes", 0, 1);
  world.inject_fault("all_gather_bytes", 0, 2);
  std::vector<std::vector<bool>> failed(2);
  run_ranks(world, [&](Communicator& comm) {
    auto try_call = [&](auto fn) {
      try {
        fn();
        failed[comm.rank()].push_back(false);
      } catch (const CommError&) {
        failed[comm.rank()].push_back(true);
      }
    };
    std::string bytes = "x";
    try_call([&] { comm.all_gather_bytes("a"); });      // gather 1
    try_call([&] { comm.broadcast_bytes(bytes, 1); });  // bcast 1: fault
    try_call([&] { comm.broadcast_bytes(bytes, 1); });  // bcast 2
    try_call([&] { comm.all_gather_bytes("a"); });      // gather 2: fault
    try_call([&] { comm.all_gather_bytes("a"); });      // gather 3
  });
  const std::vector<bool> expected = {false, true, false, true, false};
  EXPECT_EQ(failed[0], expected);
  EXPECT_EQ(failed[1], expected);
}

TEST(ThreadWorld, AsyncFaultIsThrownByWait) {
  ThreadWorld world(2);
  world.inject_fault("all_reduce_async", 0);
  std::vector<std::string> messages(2);
  run_ranks(world, [&](Communicator& comm) {
    at::Tensor t = at::full({3}, 1.0, at::kFloat);
    std::shared_ptr<Work> work;
    ASSERT_NO_THROW(work = comm.all_reduce_async(t, ReduceOp::kSum));
    EXPECT_TRUE(work->is_completed());
    messages[comm.rank()] = dtrain::testing::ThrownMessage<CommError>([&] { work->wait(); });
  });
  EXPECT_CONTAINS(messages[0], "all_reduce_async failed on rank 0 of 2: injected fault");
  EXPECT_CONTAINS(messages[1], "all_reduce_async failed on rank 1 of 2: peer rank 0 failed");
}

// Where MPI would deadlock or misbehave, every rank of the collective throws instead.
TEST(ThreadWorld, MismatchedCallsFailOnEveryRank) {
  std::vector<std::string> messages(2);
  run_ranks(2, [&](Communicator& comm) {
    messages[comm.rank()] = dtrain::testing::ThrownMessage<CommError>([&] {
      if (comm.rank() == 0) {
        comm.barrier();
      } else {
        comm.all_gather_bytes("x");
      }
    });
  });
  EXPECT_CONTAINS(messages[0], "thread backend: barrier failed on rank 0 of 2");
  EXPECT_CONTAINS(messages[1], "thread backend: all_gather_bytes failed on rank 1 of 2");
  for (const auto& m : messages) {
    EXPECT_CONTAINS(m, "the ranks' calls do not match (rank 0: barrier; rank 1: all_gather_bytes)");
  }
  // Different element counts, dtypes, ops and roots.
  auto mismatch = [](auto fn) {
    std::vector<std::string> out(2);
    run_ranks(2, [&](Communicator& comm) {
      out[comm.rank()] = dtrain::testing::ThrownMessage<CommError>([&] { fn(comm); });
    });
    EXPECT_EQ(out[0].substr(out[0].find(':', out[0].find("of 2"))),
              out[1].substr(out[1].find(':', out[1].find("of 2"))));
    return out[0];
  };
  EXPECT_CONTAINS(mismatch([](Communicator& c) {
                    at::Tensor t = at::full({c.rank() + 2}, 1.0, at::kFloat);
                    c.all_reduce(t, ReduceOp::kSum);
                  }),
                  "rank 0: all_reduce of Float x 2 (sum); rank 1: all_reduce of Float x 3 (sum)");
  EXPECT_CONTAINS(mismatch([](Communicator& c) {
                    at::Tensor t = at::full({2}, 1.0, c.rank() ? at::kDouble : at::kFloat);
                    c.all_reduce(t, ReduceOp::kSum);
                  }),
                  "rank 1: all_reduce of Double x 2");
  EXPECT_CONTAINS(mismatch([](Communicator& c) {
                    at::Tensor t = at::full({2}, 1.0, at::kFloat);
                    c.all_reduce(t, c.rank() ? ReduceOp::kMax : ReduceOp::kSum);
                  }),
                  "(max)");
  EXPECT_CONTAINS(mismatch([](Communicator& c) {
                    at::Tensor t = at::full({c.rank() + 1}, 1.0, at::kFloat);
                    c.broadcast(t, 0);
                  }),
                  "rank 0: broadcast of 4 bytes from root 0; rank 1: broadcast of 8 bytes");
  EXPECT_CONTAINS(mismatch([](Communicator& c) {
                    std::string b;
                    c.broadcast_bytes(b, c.rank());
                  }),
                  "rank 0: broadcast_bytes from root 0; rank 1: broadcast_bytes from root 1");
  // Shapes may differ when the element counts agree, as with MPI.
  auto errors = run_ranks(2, [](Communicator& c) {
    at::Tensor t = c.rank() ? at::full({2, 3}, 1.0, at::kFloat) : at::full({6}, 2.0, at::kFloat);
    c.all_reduce(t, ReduceOp::kSum);
    EXPECT_EQ(t.sum().item<float>(), 18.0f);
  });
  for (const auto& e : errors) EXPECT_FALSE(e) << exception_message(e);
}

TEST(ThreadWorld, RankThatEndedFailsTheCollectivesWaitingForIt) {
  std::vector<std::string> messages(3);
  auto errors = run_ranks(3, [&](Communicator& comm) {
    if (comm.rank() == 2) throw std::runtime_error("disk on fire");
    messages[comm.rank()] = dtrain::testing::ThrownMessage<CommError>([&] { comm.barrier(); });
  });
  EXPECT_EQ(exception_message(errors[2]), "disk on fire");
  for (int r : {0, 1}) {
    EXPECT_CONTAINS(messages[r], "barrier failed on rank " + std::to_string(r) + " of 3");
    EXPECT_CONTAINS(messages[r], "rank 2 ended without joining it (it threw: disk on fire)");
  }
  // A rank that returns normally while others still call collectives.
  std::string message;
  run_ranks(2, [&](Communicator& comm) {
    if (comm.rank() == 0) {
      message = dtrain::testing::ThrownMessage<CommError>([&] { comm.all_gather_bytes("a"); });
    }
  });
  EXPECT_CONTAINS(message, "rank 1 ended without joining it (its function returned)");
}

TEST(ThreadWorld, TimeoutNamesTheAbsentRanks) {
  ThreadWorldOptions options;
  options.timeout = milliseconds(100);
  ThreadWorld world(3, options);
  // Rank 2 joins only after the others gave up: it finds the round failed too.
  std::vector<std::string> messages(3);
  auto start = std::chrono::steady_clock::now();
  run_ranks(world, [&](Communicator& comm) {
    if (comm.rank() == 2) std::this_thread::sleep_for(milliseconds(300));
    messages[comm.rank()] = dtrain::testing::ThrownMessage<CommError>([&] { comm.barrier(); });
  });
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  for (int r = 0; r < 3; ++r) {
    EXPECT_CONTAINS(messages[r], "timed out after 100 ms waiting for rank(s) 2");
  }
}

// The ranks' tensors are written while every rank is inside the call: a rank that
// returns first never sees another rank's later writes, and inputs are not copied first.
TEST(ThreadWorld, ManyRoundsBackToBack) {
  auto errors = run_ranks(4, [](Communicator& comm) {
    for (int i = 0; i < 200; ++i) {
      at::Tensor t = at::full({5}, static_cast<double>(comm.rank() + i), at::kDouble);
      comm.all_reduce(t, ReduceOp::kSum);
      ASSERT_EQ(t[4].item<double>(), 6.0 + 4 * i) << i;
      std::string b = comm.rank() == i % 4 ? std::to_string(i) : "";
      comm.broadcast_bytes(b, i % 4);
      ASSERT_EQ(b, std::to_string(i));
    }
  });
  for (const auto& e : errors) EXPECT_FALSE(e) << exception_message(e);
}

}  // namespace
}  // namespace dtrain::dist
