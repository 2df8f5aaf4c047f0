// Asynchronous checkpoints (Checkpointer::save_async, CHECKPOINT.ASYNC) under mpirun
// (1, 2 and 4 ranks): an async and a sync save of the same state are bitwise identical,
// training may change the state while the write runs, nothing is visible before the
// commit, a commit happens on the same poll on every rank, a failing background write
// is the same error everywhere with nothing lost, at most one save is in flight, and
// PeriodicCheckpointer with async saves keeps the right checkpoints.
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "checkpoint/checkpointer.h"
#include "checkpoint/format.h"
#include "runtime/base/error.h"
#include "runtime/dist/communicator.h"
#include "tests/checkpoint/mpi_fixture.h"
#include "tests/checkpoint/expect.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint {
namespace {

using namespace testing;  // NOLINT: test helpers
namespace stdfs = std::filesystem;

class AsyncCheckpointTest : public MpiCheckpointFixture {
 protected:
  AsyncCheckpointTest() : MpiCheckpointFixture("async") {}

  // Loads dir_/name into a fresh state and returns the hash of what it holds.
  uint64_t LoadedHash(const std::string& name, OptKind kind, int64_t hidden = 8) {
    TrainingState fresh(kind, 4242, rank_, world_, hidden);
    Checkpointer c(fresh.model, dir_, *comm_, fresh.checkpointables());
    c.load(dir_ + "/" + name);
    return state_hash(fresh.snapshot());
  }
};

// The index of dir/name with its volatile fields (creation time) removed.
nlohmann::json StableIndex(const std::string& dir) {
  nlohmann::json j = nlohmann::json::parse(read_index_text(dir));
  j.erase("created");
  return j;
}

TEST_F(AsyncCheckpointTest, AsyncAndSyncSavesOfOneStateAreBitwiseIdentical) {
  TrainingState a(OptKind::kAdamW, 3, rank_, world_, /*hidden=*/64);
  a.train(3);
  const StateDict saved = a.snapshot();
  set_rank_rng(3, rank_);
  Checkpointer c(a.model, dir_, *comm_, a.checkpointables());
  c.save("sync", sample_extras(3, 2));
  set_rank_rng(3, rank_);  // the same per-rank RNG state for both saves
  c.save_async("async", sample_extras(3, 2));
  ASSERT_TRUE(c.async_in_flight());
  // Training goes on while the shard is written: the checkpoint keeps the state of the
  // save_async call.
  a.train(2);
  ASSERT_FALSE(state_diff(saved, a.snapshot()).empty());
  // Nothing is visible until the commit.
  EXPECT_EQ(last_checkpoint_name(dir_), "sync");
  EXPECT_EQ(visible_dirs(dir_), std::vector<std::string>{"sync"});
  EXPECT_EQ(c.commits(), 1);
  c.finish_async();
  EXPECT_FALSE(c.async_in_flight());
  EXPECT_EQ(c.commits(), 2);
  EXPECT_EQ(last_checkpoint_name(dir_), "async");
  EXPECT_EQ(visible_dirs(dir_), (std::vector<std::string>{"async", "sync"}));

  // Same index: every tensor, dtype, shape, piece and xxh64, scalars, world size.
  EXPECT_EQ(StableIndex(dir_ + "/async").dump(1), StableIndex(dir_ + "/sync").dump(1));
  // The shard files hold the same bytes in every dataset: each dataset's checksum is in
  // the index, and loading both gives the same state as saved.
  const uint64_t want = state_hash(saved);
  EXPECT_EQ(LoadedHash("async", OptKind::kAdamW, 64), want);
  EXPECT_EQ(LoadedHash("sync", OptKind::kAdamW, 64), want);
  EXPECT_GT(c.last_save_stall_seconds(), 0.0);
}

TEST_F(AsyncCheckpointTest, PollCommitsOnTheSameCallOnEveryRank) {
  TrainingState a(OptKind::kSGD, 5, rank_, world_, /*hidden=*/256);
  a.train(2);
  const uint64_t want = state_hash(a.snapshot());
  Checkpointer c(a.model, dir_, *comm_, a.checkpointables());
  EXPECT_FALSE(c.poll_async());  // nothing in flight: no communication, false
  c.save_async("model_0000001", {{"iteration", int64_t{1}}});
  int polls = 0;
  bool committed = false;
  while (!committed && polls < 100000) {
    ++polls;
    committed = c.poll_async();
    if (!committed) {
      a.train(1);  // training continues between polls
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  ASSERT_TRUE(committed);
  ExpectSameOnAllRanks(std::to_string(polls));
  EXPECT_FALSE(c.poll_async());
  EXPECT_EQ(last_checkpoint_name(dir_), "model_0000001");
  EXPECT_EQ(LoadedHash("model_0000001", OptKind::kSGD, 256), want);
}

TEST_F(AsyncCheckpointTest, FailingWriteIsTheSameErrorEverywhereAndLosesNothing) {
  TrainingState a(OptKind::kAdamW, 9, rank_, world_);
  a.train(3);
  const uint64_t want = state_hash(a.snapshot());
  Checkpointer c(a.model, dir_, *comm_, a.checkpointables());
  c.save("model_a", sample_extras(9, 2));
  const auto before = tree_checksums(dir_);
  // One fault on the training thread (before the write starts) and one on the writer's
  // thread (in the middle of the shard).
  for (const std::string point : {"ckpt.before_shard", "ckpt.during_shard"}) {
    SCOPED_TRACE(point);
    std::string msg;
    {
      ScopedFault fault(point, world_ - 1, rank_);
      c.save_async("model_b", sample_extras(9, 2));  // errors surface at the commit
      msg = ThrownMessage([&] { c.finish_async(); });
    }
    msg = ExpectSameOnAllRanks(msg);
    EXPECT_CONTAINS(msg, fmt::format("injected fault at {} (rank {})", point, world_ - 1));
    EXPECT_CONTAINS(msg, "saving checkpoint '" + dir_ + "/model_b' failed");
    EXPECT_CONTAINS(msg, "nothing was committed");
    EXPECT_FALSE(c.async_in_flight());
    EXPECT_EQ(last_checkpoint_name(dir_), "model_a");
    EXPECT_EQ(visible_dirs(dir_), std::vector<std::string>{"model_a"});
    const auto after = tree_checksums(dir_);
    for (const auto& [file, sum] : before) {
      EXPECT_TRUE(after.count(file) && after.at(file) == sum) << file << " changed";
    }
    // No temporary directory is left behind by the failed commit.
    for (const auto& e : stdfs::directory_iterator(dir_)) {
      EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
    }
  }
  // The next asynchronous save works.
  c.save_async("model_b", sample_extras(9, 2));
  c.finish_async();
  EXPECT_EQ(last_checkpoint_name(dir_), "model_b");
  EXPECT_EQ(LoadedHash("model_b", OptKind::kAdamW), want);
  EXPECT_EQ(LoadedHash("model_a", OptKind::kAdamW), want);
}

TEST_F(AsyncCheckpointTest, AtMostOneSaveInFlight) {
  TrainingState a(OptKind::kSGD, 11, rank_, world_);
  a.train(1);
  const uint64_t h1 = state_hash(a.snapshot());
  Checkpointer c(a.model, dir_, *comm_, a.checkpointables());
  c.save_async("one");
  a.train(1);
  const uint64_t h2 = state_hash(a.snapshot());
  c.save_async("two");  // commits "one" first
  EXPECT_EQ(c.commits(), 1);
  EXPECT_EQ(last_checkpoint_name(dir_), "one");
  EXPECT_TRUE(c.async_in_flight());
  a.train(1);
  const uint64_t h3 = state_hash(a.snapshot());
  c.save("three");  // a synchronous save commits "two" first
  EXPECT_FALSE(c.async_in_flight());
  EXPECT_EQ(c.commits(), 3);
  EXPECT_EQ(last_checkpoint_name(dir_), "three");
  a.train(1);
  c.save_async("four");
  // A load finishes the save in flight first, then loads.
  c.load(dir_ + "/one");
  EXPECT_FALSE(c.async_in_flight());
  EXPECT_EQ(last_checkpoint_name(dir_), "four");
  EXPECT_EQ(state_hash(a.snapshot()), h1);
  EXPECT_EQ(LoadedHash("one", OptKind::kSGD), h1);
  EXPECT_EQ(LoadedHash("two", OptKind::kSGD), h2);
  EXPECT_EQ(LoadedHash("three", OptKind::kSGD), h3);
}

TEST_F(AsyncCheckpointTest, DestroyedWithASaveInFlightCommitsNothing) {
  TrainingState a(OptKind::kSGD, 13, rank_, world_);
  a.train(1);
  {
    auto c = std::make_unique<Checkpointer>(a.model, dir_, *comm_, a.checkpointables());
    c->save("kept");
    LogCapture log;
    c->save_async("dropped");
    // ~Checkpointer: no communication; waits for this rank's write, commits nothing.
    c.reset();
    EXPECT_CONTAINS(log.text(), "was not committed");
  }
  comm_->barrier();
  EXPECT_EQ(last_checkpoint_name(dir_), "kept");
  EXPECT_EQ(visible_dirs(dir_), std::vector<std::string>{"kept"});
  // The next save removes the hidden leftovers of the dropped one.
  Checkpointer c(a.model, dir_, *comm_, a.checkpointables());
  c.save("next");
  if (rank_ == 0) {
    for (const auto& e : stdfs::directory_iterator(dir_)) {
      EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
    }
  }
}

TEST_F(AsyncCheckpointTest, PeriodicCheckpointerWithAsyncSaves) {
  TrainingState a(OptKind::kAdamW, 17, rank_, world_, /*hidden=*/32);
  Checkpointer c(a.model, dir_, *comm_, a.checkpointables());
  PeriodicCheckpointer periodic(c, /*period=*/2, /*max_iter=*/10, /*max_to_keep=*/2, "model",
                                /*async=*/true);
  std::map<int64_t, uint64_t> state_at;
  for (int64_t iter = 0; iter < 10; ++iter) {
    a.train(1);
    state_at[iter] = state_hash(a.snapshot());
    periodic.step(iter);
  }
  periodic.finish();
  EXPECT_FALSE(c.async_in_flight());
  // Periodic saves after iterations 1, 3, 5, 7 (async) and 9 (synchronous, the last
  // iteration) plus model_final; the two newest periodic ones are kept.
  EXPECT_EQ(visible_dirs(dir_),
            (std::vector<std::string>{"model_0000007", "model_0000009", "model_final"}));
  EXPECT_EQ(last_checkpoint_name(dir_), "model_final");
  EXPECT_EQ(LoadedHash("model_0000007", OptKind::kAdamW, 32), state_at[7]);
  EXPECT_EQ(LoadedHash("model_0000009", OptKind::kAdamW, 32), state_at[9]);
  EXPECT_EQ(LoadedHash("model_final", OptKind::kAdamW, 32), state_at[9]);
}

}  // namespace
}  // namespace dtrain::checkpoint
