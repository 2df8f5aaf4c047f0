// Rank agreement (runtime/dist/agree.h) over the MPI backend under mpirun: an error on
// some ranks is thrown, with the same message and kind, by every rank; on_rank's result
// or error reaches every rank; check_collective catches ranks calling different methods;
// typed messages gather and broadcast.
#include "runtime/dist/agree.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/base/interrupt.h"
#include "runtime/dist/mpi_communicator.h"
#include "tests/gtest_util.h"
#include "tests/runtime/dist/agree_test_util.h"

namespace dtrain::dist {
namespace {

using dtrain::testing::TestMessage;
using dtrain::testing::ThrownMessage;

class AgreeMpiTest : public ::testing::Test {
 protected:
  MpiCommunicator comm_;
  int rank_ = comm_.rank();
  int n_ = comm_.size();
};

TEST_F(AgreeMpiTest, OneRanksErrorIsEveryRanksError) {
  const std::string what = ThrownMessage<CheckpointError>([&] {
    all_or_none<CheckpointError>(comm_, "loading 'x'", [&] {
      if (rank_ == 1) throw Error("shard 1 is corrupt");
    });
  });
  EXPECT_EQ(what, "loading 'x' failed: rank 1: shard 1 is corrupt");
  all_or_none<CheckpointError>(comm_, "loading 'x'", [] {});  // nobody fails: no error
}

TEST_F(AgreeMpiTest, EveryFailingRankIsListedInRankOrder) {
  const std::string what = ThrownMessage<CheckpointError>([&] {
    all_or_none<CheckpointError>(comm_, "saving", [&] {
      throw Error(rank_ % 2 == 0 ? "even" : "odd");
    });
  });
  std::string even, odd;
  for (int r = 0; r < n_; ++r) {
    std::string& list = r % 2 == 0 ? even : odd;
    list += (list.empty() ? "" : ", ") + std::to_string(r);
  }
  const bool several = n_ > 2;
  EXPECT_EQ(what, "saving failed: " + std::string(several ? "ranks " : "rank ") + even + ": even; " +
                      (several ? "ranks " : "rank ") + odd + ": odd");
}

TEST_F(AgreeMpiTest, KindsTravelInterruptedThenConfigError) {
  // Rank 0 a plain error, the last rank a ConfigError: every rank throws ConfigError.
  EXPECT_EQ(ThrownMessage<ConfigError>([&] {
              all_or_none<CheckpointError>(comm_, "x", [&] {
                if (rank_ == 0) throw Error("a");
                if (rank_ == n_ - 1) throw ConfigError("b");
              });
            }),
            "x failed: rank 0: a; rank " + std::to_string(n_ - 1) + ": b");
  // Add an Interrupted on rank 1: every rank throws Interrupted with rank 1's signal.
  int signal = 0;
  try {
    all_or_none<CheckpointError>(comm_, "x", [&] {
      if (rank_ == 0) throw ConfigError("a");
      if (rank_ == 1) throw Interrupted("stop", 15);
    });
  } catch (const Interrupted& e) {
    signal = e.signal();
    EXPECT_EQ(std::string(e.what()), "x failed: rank 0: a; rank 1: stop");
  }
  EXPECT_EQ(signal, 15);
}

TEST_F(AgreeMpiTest, OnRankBroadcastsResultOrError) {
  int runs = 0;
  const std::string got = on_rank<CheckpointError>(comm_, 1, "x", [&] {
    ++runs;
    return std::string("from rank 1");
  });
  EXPECT_EQ(got, "from rank 1");
  EXPECT_EQ(runs, rank_ == 1 ? 1 : 0);
  EXPECT_EQ(ThrownMessage<CheckpointError>([&] {
              on_root<CheckpointError>(comm_, "saving 'm'", []() -> std::string {
                throw Error("mkdir failed");
              });
            }),
            "saving 'm' failed: mkdir failed");
}

TEST_F(AgreeMpiTest, CheckCollectiveNamesEveryRanksCall) {
  check_collective<CheckpointError>(comm_, "Checkpointer", "save", "a");
  const std::string what = ThrownMessage<CheckpointError>([&] {
    check_collective<CheckpointError>(comm_, "Checkpointer", rank_ == 1 ? "load" : "save", "a");
  });
  std::string expected = "Checkpointer methods are collective, but the ranks called different ones:";
  for (int r = 0; r < n_; ++r) {
    expected += "\n  rank " + std::to_string(r) + ": " + (r == 1 ? "load(a)" : "save(a)");
  }
  EXPECT_EQ(what, expected);
}

TEST_F(AgreeMpiTest, TypedAllGatherAndBroadcast) {
  const TestMessage mine{rank_ * 10, "rank " + std::to_string(rank_)};
  const auto all = all_gather(comm_, mine);
  ASSERT_EQ(static_cast<int>(all.size()), n_);
  for (int r = 0; r < n_; ++r) EXPECT_EQ(all[r], (TestMessage{r * 10, "rank " + std::to_string(r)}));
  EXPECT_EQ(broadcast(comm_, mine, 1), (TestMessage{10, "rank 1"}));
}

}  // namespace
}  // namespace dtrain::dist
