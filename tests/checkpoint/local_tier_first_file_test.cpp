// The first local snapshot's shard file (checkpoint/local_tier.h, LocalTier::prepare):
// with LOCAL.PERIOD >= 2 the steps before the first snapshot know the state's layout,
// so each rank's file is created on the tier's background thread then, and the first
// snapshot copies into it instead of creating it in its stall; a resumed run's first
// snapshots likewise take the previous run's files over before their stalls. The calls
// are those of LocalSnapshotHook with period 3; 1 and 2 ranks as threads on one node.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>

#include "checkpoint/checkpointer.h"
#include "runtime/dist/thread_communicator.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint {
namespace {

namespace stdfs = std::filesystem;
using namespace testing;  // NOLINT: test helpers

class LocalTierFirstFileTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    dir_ = make_temp_dir("local_tier_first");
    out_ = dir_ + "/out";
  }
  void TearDown() override {
    if (!HasFailure()) stdfs::remove_all(dir_);
  }

  CheckpointerOptions options(LocalWrite write) const {
    CheckpointerOptions o;
    o.config_yaml = "cfg: 1\n";
    LocalTierOptions local;
    local.period = 3;
    local.dir = dir_ + "/local";
    local.node_id = "n0";
    local.write = write;
    o.local = local;
    return o;
  }
  std::string ahead_file(int rank) const {
    return fmt::format("{}/local/n0/{}/.ahead-r{:05d}.tmp-local", dir_, local_job_key(out_, "cfg: 1\n"), rank);
  }

  void Run(const std::function<void(dist::Communicator&)>& fn) {
    dist::ThreadWorldOptions wo;
    wo.timeout = std::chrono::seconds(60);
    EXPECT_EQ(rank_errors(dist::run_ranks(n_, fn, wo)), "");
  }

  // LocalSnapshotHook's calls, period 3, for iterations [first, end) of seed 7 (a
  // `--resume` from iteration first - 1 when first > 0). `before_first` runs on each
  // rank after the last step before the first snapshot.
  void Train(LocalWrite write, int64_t first, int64_t end, const std::function<void(Checkpointer&, int)>& check,
             const std::function<void(int)>& before_first = nullptr) {
    Run([&](dist::Communicator& comm) {
      TrainingState s(OptKind::kAdamW, first > 0 ? 1234 : 7, comm.rank(), n_);
      Checkpointer c(s.model, out_, comm, s.checkpointables(), options(write));
      const StateDict extra = c.resume_or_load("", /*resume=*/first > 0);
      if (first > 0) {
        EXPECT_TRUE(c.loaded_from_local()) << c.loaded_from();
        EXPECT_EQ(std::get<int64_t>(extra.at("iteration")), first - 1);
      }
      for (int64_t it = first; it < end; ++it) {
        s.train(1);
        if ((it + 1) % 3 == 0) {
          c.snapshot_local(it);
          continue;
        }
        if (it % 3 == 0) {
          c.commit_local();
        } else {
          c.poll_local();
        }
        c.prepare_local(it);
        if (it == first + 1 && before_first) before_first(comm.rank());
      }
      c.finish_local();
      check(c, comm.rank());
    });
  }

  // A resume (mapped) restores, from the local tier, the state after `steps` steps of
  // seed 7, bitwise, at iteration steps - 1.
  void ExpectResumedBitwise(int64_t steps) {
    Run([&](dist::Communicator& comm) {
      TrainingState expected(OptKind::kAdamW, 7, comm.rank(), n_);
      expected.train(steps);
      TrainingState fresh(OptKind::kAdamW, 1234, comm.rank(), n_);
      Checkpointer c(fresh.model, out_, comm, fresh.checkpointables(), options(LocalWrite::kMapped));
      const StateDict extra = c.resume_or_load("", /*resume=*/true);
      EXPECT_TRUE(c.loaded_from_local()) << c.loaded_from();
      EXPECT_EQ(std::get<int64_t>(extra.at("iteration")), steps - 1);
      EXPECT_TRUE(state_diff(expected.snapshot(), fresh.snapshot()).empty()) << "rank " << comm.rank();
    });
  }

  const int n_ = GetParam();
  std::string dir_, out_;
};

TEST_P(LocalTierFirstFileTest, TheFirstSnapshotTakesAFileCreatedBeforeIt) {
  Train(
      LocalWrite::kMapped, 0, 9,
      [&](Checkpointer& c, int) {
        EXPECT_EQ(c.local_tier()->commits(), 3);
        EXPECT_EQ(c.local_tier()->failures(), 0);
        EXPECT_EQ(c.local_tier()->shard_files_created_in_stall(), 0);
        EXPECT_EQ(c.local_tier()->shard_files_created_ahead(), 3);  // KEEP 2 + 1, as before
      },
      [&](int rank) {
        // The file is the rank's own, at its ahead path, before any snapshot.
        for (int i = 0; i < 500 && !stdfs::exists(ahead_file(rank)); ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        EXPECT_TRUE(stdfs::is_regular_file(ahead_file(rank))) << ahead_file(rank);
      });
  // Its snapshots are the state: a resume from the newest (iteration 8) is bitwise.
  ExpectResumedBitwise(9);
}

TEST_P(LocalTierFirstFileTest, AResumedRunTakesThePreviousRunsFilesOverAheadOfItsSnapshots) {
  // The first run keeps snapshots 5 and 8 and a spare (snapshot 2's file). Resumed from
  // 8, the steps before its first snapshot take the spare over, and the steps after
  // each of the next two commits the file that commit's prune made the spare: three
  // snapshots, none of which opens, maps or creates a file in its stall.
  Train(LocalWrite::kMapped, 0, 9, [&](Checkpointer& c, int) { EXPECT_EQ(c.local_tier()->commits(), 3); });
  Train(LocalWrite::kMapped, 9, 18, [&](Checkpointer& c, int) {
    EXPECT_EQ(c.local_tier()->commits(), 3);
    EXPECT_EQ(c.local_tier()->failures(), 0);
    EXPECT_EQ(c.local_tier()->shard_files_adopted(), 3);
    EXPECT_EQ(c.local_tier()->shard_files_adopted_ahead(), 3);
    EXPECT_EQ(c.local_tier()->shard_files_created_in_stall() + c.local_tier()->shard_files_created_ahead(), 0);
  });
  // The files taken over hold the resumed run's state: a resume from 17 is bitwise.
  ExpectResumedBitwise(18);
}

TEST_P(LocalTierFirstFileTest, ThroughHdf5NothingIsCreatedAheadAndARunEndedBeforeItsFirstSnapshotLeavesNoFile) {
  Train(LocalWrite::kHdf5, 0, 4, [&](Checkpointer& c, int rank) {
    EXPECT_EQ(c.local_tier()->commits(), 1);
    EXPECT_EQ(c.local_tier()->shard_files_created_ahead(), 0);
    EXPECT_FALSE(stdfs::exists(ahead_file(rank)));
  });
  Train(LocalWrite::kMapped, 0, 2, [&](Checkpointer& c, int) {
    EXPECT_EQ(c.local_tier()->commits(), 0);
    c.end_local();  // training ended: the tier goes, the file made ahead with it
  });
  EXPECT_FALSE(stdfs::exists(dir_ + "/local/n0/" + local_job_key(out_, "cfg: 1\n")));
}

INSTANTIATE_TEST_SUITE_P(Ranks, LocalTierFirstFileTest, ::testing::Values(1, 2),
                         [](const auto& info) { return fmt::format("np{}", info.param); });

}  // namespace
}  // namespace dtrain::checkpoint
