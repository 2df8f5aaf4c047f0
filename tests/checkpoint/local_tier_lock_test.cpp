// The job's lock in the node-local tier (LocalTier::lock_job): while another process
// holds a node's copy of the job's tier (a run of the same OUTPUT_DIR and config, or a
// straggler of a killed run), a new run waits for it (LocalTierOptions::lock_wait), then
// neither uses nor removes its snapshots; a run of another config keeps a tier in use;
// a job directory made again mid-run is locked again.
// The other process is played by a FileLock on the lock file: flock(2) locks of two
// open files conflict within one process too. 1, 2 and 4 ranks as threads
// (LocalTierTest, local_tier_fixture.h).
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <string>
#include <thread>

#include "runtime/base/file_lock.h"
#include "tests/checkpoint/local_tier_fixture.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint {
namespace {

namespace stdfs = std::filesystem;
using namespace testing;  // NOLINT: test helpers
using local_tier_testing::LocalTierTest;

// Holds `dir`/lock shared, as each rank of a run using that tier does.
std::unique_ptr<FileLock> HoldLock(const std::string& dir) {
  auto lock = std::make_unique<FileLock>(dir + "/lock", 0600);
  EXPECT_EQ(lock->lock(FileLock::Mode::kShared, std::chrono::milliseconds(0)), FileLock::Outcome::kHeld);
  return lock;
}

TEST_P(LocalTierTest, ATierAnotherProcessUsesIsNeitherUsedNorRemoved) {
  TrainWithSnapshots(/*persistent_at=*/1);
  const std::set<std::string> before = entries(job_dir("n0"));
  ASSERT_TRUE(before.count("snap-0000000002"));
  lock_wait_ = std::chrono::milliseconds(200);
  {
    auto other = HoldLock(job_dir("n0"));
    LogCapture log;
    EXPECT_EQ(ExpectResume(2, /*from_local=*/false), out_ + "/model_0000001");
    // A fresh run removes nothing either.
    RunOk(n_, [&](dist::Communicator& comm) {
      TrainingState fresh(OptKind::kAdamW, 1234, comm.rank(), n_);
      Checkpointer c(fresh.model, out_, comm, fresh.checkpointables(), options(comm.rank()));
      c.resume_or_load("", /*resume=*/false);
    });
    const std::string text = log.text();
    EXPECT_NE(text.find("another process still uses node 'n0''s local tier of this job"), std::string::npos) << text;
    EXPECT_NE(text.find("The local tier is not used in this run"), std::string::npos) << text;
    EXPECT_EQ(entries(job_dir("n0")), before);
  }
  // Released (that process ended): the tier serves again.
  EXPECT_EQ(ExpectResume(3, /*from_local=*/true), job_dir("n0") + "/snap-0000000002");
}

TEST_P(LocalTierTest, ARunWaitsForAProcessThatIsEnding) {
  TrainWithSnapshots();
  lock_wait_ = std::chrono::seconds(20);
  auto other = HoldLock(job_dir("n0"));
  std::thread ending([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    other.reset();
  });
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(ExpectResume(3, /*from_local=*/true), job_dir("n0") + "/snap-0000000002");
  ending.join();
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(300));
}

TEST_P(LocalTierTest, SnapshotsOfAnotherConfigInUseAreKept) {
  TrainWithSnapshots(-1, "cfg: 1\n");
  auto other = HoldLock(job_dir("n0", "cfg: 1\n"));
  LogCapture log;
  RunOk(n_, [&](dist::Communicator& comm) {
    TrainingState fresh(OptKind::kAdamW, 1234, comm.rank(), n_);
    Checkpointer c(fresh.model, out_, comm, fresh.checkpointables(), options(comm.rank(), "cfg: 2\n"));
    EXPECT_TRUE(c.resume_or_load("", /*resume=*/true).empty());  // from scratch
  });
  EXPECT_TRUE(stdfs::exists(job_dir("n0", "cfg: 1\n") + "/snap-0000000002"));
  if (n_ > 1) {
    EXPECT_FALSE(stdfs::exists(job_dir("n1", "cfg: 1\n")));  // not in use there
  }
  EXPECT_NE(log.text().find("Keeping the local snapshots of another config"), std::string::npos) << log.text();
}

// A job directory removed mid-run (a tidy-up of /dev/shm) is made again by the next
// snapshot, and locked again: the run keeps holding its node's tier.
TEST_P(LocalTierTest, TheLockIsTakenAgainWhereTheJobDirectoryIsMadeAgain) {
  RunOk(n_, [&](dist::Communicator& comm) {
    TrainingState s(OptKind::kAdamW, 7, comm.rank(), n_);
    Checkpointer c(s.model, out_, comm, s.checkpointables(), options(comm.rank()));
    c.resume_or_load("", /*resume=*/false);
    s.train(1);
    c.snapshot_local(0);
    c.finish_local();
    comm.barrier();
    if (comm.rank() == 0) {
      for (const char* node : {"n0", "n1"}) stdfs::remove_all(job_dir(node));
    }
    comm.barrier();
    s.train(1);
    c.snapshot_local(1);
    c.finish_local();
    EXPECT_EQ(c.local_tier()->commits(), 2);
    comm.barrier();
    if (comm.rank() == 0) {
      FileLock probe(job_dir("n0") + "/lock", 0600);
      EXPECT_EQ(probe.lock(FileLock::Mode::kExclusive, std::chrono::milliseconds(0)), FileLock::Outcome::kBusy);
    }
    comm.barrier();
  });
}

}  // namespace
}  // namespace dtrain::checkpoint
