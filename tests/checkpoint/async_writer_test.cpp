// The asynchronous shard writer: a snapshot written in the background gives the same
// pieces (checksums and values) as a synchronous write of the same state, and changes
// to the live tensors after the snapshot do not reach the file. Jobs run on a background
// thread (SCHED_BATCH).
#include <filesystem>
#include <thread>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "checkpoint/async_writer.h"
#include "runtime/base/error.h"
#include "runtime/base/thread_policy.h"
#include "runtime/h5/h5.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint {
namespace {

CollectedState sample_state() {
  CollectedState s;
  s.replicated.emplace_back("model/w", testing::pattern_tensor({64, 33}, at::kFloat, 1));
  s.replicated.emplace_back("model/b", testing::pattern_tensor({33}, at::kDouble, 2));
  s.replicated.emplace_back("optimizer/state/w/step", at::scalar_tensor(int64_t{5}, at::kLong));
  s.per_rank.emplace_back("rng/cpu", testing::pattern_tensor({128}, at::kByte, 3));
  s.scalars["scheduler/last_iter"] = int64_t{7};
  return s;
}

TEST(AsyncShardWriterTest, SameBytesAsSynchronousWriteAndIsolatedFromLaterChanges) {
  const std::string dir = testing::make_temp_dir("async_writer");
  CollectedState live = sample_state();
  const auto plan = plan_shards(live.replicated_meta(), /*world_size=*/1);

  ShardManifest sync = write_shard(dir + "/sync.h5", 0, live, plan);

  AsyncShardWriter writer;
  writer.start(dir + "/async.h5", 0, snapshot(live), plan);
  EXPECT_TRUE(writer.in_flight());
  // Training goes on and changes the live state while the snapshot is written.
  at::Tensor w = std::get<at::Tensor>(StateValue(live.replicated[0].second));
  w.add_(1.0);
  ShardManifest async = writer.wait();
  EXPECT_FALSE(writer.in_flight());

  ASSERT_EQ(sync.replicated.size(), async.replicated.size());
  for (size_t i = 0; i < sync.replicated.size(); ++i) {
    EXPECT_EQ(sync.replicated[i].tensor, async.replicated[i].tensor);
    EXPECT_EQ(sync.replicated[i].piece.xxh64, async.replicated[i].piece.xxh64)
        << sync.replicated[i].tensor;
  }
  ASSERT_EQ(sync.per_rank.size(), async.per_rank.size());
  EXPECT_EQ(sync.per_rank[0].second.xxh64, async.per_rank[0].second.xxh64);
  h5::File a = h5::File::open(dir + "/sync.h5"), b = h5::File::open(dir + "/async.h5");
  for (const char* name : {"model/w", "model/b", "optimizer/state/w/step", "rng/cpu"}) {
    EXPECT_TRUE(testing::bitwise_equal(a.read_tensor(name), b.read_tensor(name))) << name;
  }
  std::filesystem::remove_all(dir);
}

TEST(AsyncShardWriterTest, ErrorsComeBackFromWait) {
  CollectedState live = sample_state();
  const auto plan = plan_shards(live.replicated_meta(), 1);
  AsyncShardWriter writer;
  writer.start("/nonexistent-dtrain-dir/shard.h5", 0, snapshot(live), plan);
  EXPECT_THROW(writer.wait(), dtrain::Error);
  EXPECT_FALSE(writer.in_flight());
  EXPECT_THROW(writer.wait(), dtrain::Error);  // nothing in flight any more
}

// The writer's thread is a background thread (SCHED_BATCH: its wake-ups do not preempt
// the training thread); the caller's thread is left as it was.
TEST(AsyncShardWriterTest, JobsRunOnABackgroundThread) {
  bool settable = false;  // best effort: some sandboxes refuse non-default policies
  std::thread([&settable] { settable = run_as_background_thread(); }).join();
  if (!settable) GTEST_SKIP() << "SCHED_BATCH cannot be set here";
  const bool caller_was_background = is_background_thread();
  AsyncShardWriter writer;
  bool background = false;
  writer.start_job([&background] {
    background = is_background_thread();
    return ShardManifest{};
  });
  writer.wait();
  EXPECT_TRUE(background);
  EXPECT_EQ(is_background_thread(), caller_was_background);
}

}  // namespace
}  // namespace dtrain::checkpoint
