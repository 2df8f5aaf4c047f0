// Damaged local snapshots (checkpoint/local_tier.h, Checkpointer::resume_newest): a
// copy of a shard whose checksum fails is replaced by another node's copy of the same
// snapshot (its replica), at this world size and resharded; a snapshot with no intact
// copy of some shard gives way to the newest intact copy of either tier (an older local
// snapshot, or a persistent checkpoint as new or newer). 1, 2 and 4 ranks as threads,
// through HDF5 and mapped files (LocalTierTest, local_tier_fixture.h).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "checkpoint/index.h"
#include "checkpoint/save_dir.h"
#include "tests/checkpoint/local_tier_fixture.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint {
namespace {

namespace stdfs = std::filesystem;
using namespace testing;  // NOLINT: test helpers
using local_tier_testing::LocalTierTest;

// Flips a byte of a replicated tensor's piece in shard `shard` of a `world`-rank
// snapshot, in each of `snaps` (the snapshot's directory on some nodes) that holds that
// shard's file; returns the tensor's name.
std::string DamageShard(const std::vector<std::string>& snaps, int shard, int world) {
  const CheckpointIndex idx = CheckpointIndex::from_json(read_index_text(snaps.front()), snaps.front());
  std::string damaged;
  for (const auto& t : idx.tensors) {
    for (const auto& p : t.pieces) {
      if (damaged.empty() && !t.per_rank && p.shard == shard && p.bytes >= 8) damaged = t.name;
    }
  }
  EXPECT_FALSE(damaged.empty()) << "no piece of shard " << shard;
  int copies = 0;
  for (const auto& snap : snaps) {
    const std::string file = snap + "/" + shard_file_name(shard, world);
    if (!stdfs::exists(file)) continue;
    flip_byte(file, dataset_offset(file, "/" + damaged) + 3);
    ++copies;
  }
  EXPECT_GT(copies, 0) << "no copy of shard " << shard;
  return damaged;
}

TEST_P(LocalTierTest, ADamagedCopyOfALocalShardIsReplacedByAnotherNodesCopy) {
  if (n_ == 1) return;  // one node: no other copy (the next test resumes an older snapshot)
  TrainWithSnapshots(/*persistent_at=*/2);
  const int last = n_ - 1;  // on node n1; n0 holds its replica
  const std::string snap = "/snap-0000000002";
  const std::string damaged = DamageShard({job_dir(node_of(last)) + snap}, last, n_);
  {
    LogCapture log;
    EXPECT_EQ(ExpectResume(3, /*from_local=*/true), job_dir("n0") + snap);
    const std::string text = log.text();
    EXPECT_NE(text.find("Cannot resume from the local snapshot of iteration 2"), std::string::npos) << text;
    EXPECT_NE(text.find(damaged), std::string::npos) << text;
    EXPECT_NE(text.find(fmt::format("shard {} from the replica on node 'n0'", last)), std::string::npos) << text;
  }
  // At another world size too: each shard read once, the damaged copy replaced by the
  // intact one; the state equals the persistent tier's resharding of the same iteration.
  const int other = n_ == 2 ? 4 : 2;
  std::string loaded;
  const auto from_local = ResumeOn(other, /*local=*/true, &loaded);
  EXPECT_EQ(loaded, job_dir("n0") + snap);
  const auto expected = ResumeOn(other, /*local=*/false, &loaded);
  for (int r = 0; r < other; ++r) {
    const auto diff = state_diff(expected[r], from_local[r]);
    EXPECT_TRUE(diff.empty()) << other << " ranks, rank " << r << ": " << ::testing::PrintToString(diff);
  }
}

// The index (checkpoint.h5) is read once, by the first rank that can, from its node's
// copy: when that copy cannot be read, the same snapshot serves with the index read on
// another node, even where a shard has no other copy (no replica: the shards stay where
// they are). At another world size too. On one node, the next newest state serves.
TEST_P(LocalTierTest, ADamagedIndexOfALocalSnapshotIsReadFromAnotherNode) {
  TrainWithSnapshots(/*persistent_at=*/2);
  const std::string snap = "/snap-0000000002";
  const std::string index = job_dir("n0") + snap + "/" + kIndexFile;
  { std::ofstream(index, std::ios::in | std::ios::out) << "damaged!"; }
  if (n_ > 1) stdfs::remove(job_dir("n1") + snap + "/" + shard_file_name(0, n_));  // shard 0: n0 only
  {
    LogCapture log;
    EXPECT_EQ(ExpectResume(3, /*from_local=*/n_ > 1), n_ > 1 ? job_dir("n0") + snap : out_ + "/model_0000002");
    const std::string text = log.text();
    EXPECT_NE(text.find("Cannot resume from the local snapshot of iteration 2"), std::string::npos) << text;
    EXPECT_NE(text.find(index), std::string::npos) << text;
    if (n_ > 1) {
      EXPECT_NE(text.find("the index from node 'n1'"), std::string::npos) << text;
    }
  }
  if (n_ == 1) return;
  const int other = n_ == 2 ? 4 : 2;
  std::string loaded;
  LogCapture log;
  const auto from_local = ResumeOn(other, /*local=*/true, &loaded);
  EXPECT_NE(log.text().find("the index from node 'n1'"), std::string::npos) << log.text();
  const auto expected = ResumeOn(other, /*local=*/false, &loaded);
  for (int r = 0; r < other; ++r) {
    const auto diff = state_diff(expected[r], from_local[r]);
    EXPECT_TRUE(diff.empty()) << other << " ranks, rank " << r << ": " << ::testing::PrintToString(diff);
  }
}

// The index's reader may be a rank whose files were staged from another node: here
// rank 1, whose node lost its shard, reads the index received with it from its shard's
// replica, since rank 0's node's copy of the index is damaged. 4 ranks on 4 nodes.
TEST_P(LocalTierTest, TheIndexIsReadFromAStagedCopyWhereTheOthersAreDamaged) {
  if (n_ != 4) GTEST_SKIP() << "4 nodes";
  nodes_ = 4;
  TrainWithSnapshots();
  const std::string snap = "/snap-0000000002";
  std::string buddy;  // the node holding the replica of shard 1
  for (const char* node : {"n0", "n2", "n3"}) {
    if (stdfs::exists(job_dir(node) + snap + "/" + shard_file_name(1, 4))) buddy = node;
  }
  ASSERT_FALSE(buddy.empty());
  ASSERT_TRUE(stdfs::remove(job_dir("n1") + snap + "/" + shard_file_name(1, 4)));  // n1 lost shard 1
  const std::string index = job_dir("n0") + snap + "/" + kIndexFile;
  { std::ofstream(index, std::ios::in | std::ios::out) << "damaged!"; }
  LogCapture log;
  EXPECT_EQ(ExpectResume(3, /*from_local=*/true), job_dir("n0") + snap);
  const std::string text = log.text();
  EXPECT_NE(text.find(index), std::string::npos) << text;
  EXPECT_NE(text.find(fmt::format("shard 1 from the replica on node '{}'", buddy)), std::string::npos) << text;
  EXPECT_NE(text.find(fmt::format("the index from node '{}' (rank 1)", buddy)), std::string::npos) << text;
}

// A rank whose node lost its shard receives it from a node holding a copy; when that
// node cannot read its copy, the next try takes the shard from another node's copy of
// the same snapshot, not an older state. 4 ranks on 4 nodes, 2 replicas of each shard.
TEST_P(LocalTierTest, ACopyThatCannotBeSentForStagingGivesWayToAnotherNodesCopy) {
  if (n_ != 4) GTEST_SKIP() << "4 nodes";
  nodes_ = 4;
  replicas_ = 2;
  TrainWithSnapshots();
  const std::string name = "/snap-0000000002/" + shard_file_name(3, 4);
  ASSERT_TRUE(stdfs::exists(job_dir("n0") + name) && stdfs::exists(job_dir("n1") + name));
  ASSERT_TRUE(stdfs::remove(job_dir("n3") + name));  // n3 lost shard 3
  local_tier_testing::HookedEnv env;
  std::atomic<int> refused{0};
  env.on_read = [&](const std::string& path) {
    if (path.find(name) != std::string::npos && path.find("/n1/") != std::string::npos) {
      ++refused;
      throw std::runtime_error("injected: cannot read " + path);
    }
  };
  env_ = &env;
  LogCapture log;
  ExpectResume(3, /*from_local=*/true);
  const std::string text = log.text();
  EXPECT_EQ(refused.load(), 1) << text;  // n1's copy was tried first, then avoided
  EXPECT_NE(text.find("injected: cannot read"), std::string::npos) << text;
  EXPECT_NE(text.find("shard 3 from the replica on node 'n0'"), std::string::npos) << text;
}

TEST_P(LocalTierTest, ADamagedLocalSnapshotGivesWayToTheNewestIntactCopyOfEitherTier) {
  std::vector<std::string> nodes{"n0"};
  if (n_ > 1) nodes.push_back("n1");
  auto copies = [&](int64_t it) {
    std::vector<std::string> out;
    for (const auto& node : nodes) out.push_back(job_dir(node) + fmt::format("/snap-{:010d}", it));
    return out;
  };
  // Snapshot 2 damaged on every node that holds the shard: snapshot 1 serves, as new as
  // model_0000001 and faster; snapshot 2, of the abandoned timeline, is removed.
  TrainWithSnapshots(/*persistent_at=*/1);
  {
    LogCapture log;
    const std::string damaged = DamageShard(copies(2), n_ - 1, n_);
    EXPECT_EQ(ExpectResume(2, /*from_local=*/true), job_dir("n0") + "/snap-0000000001");
    const std::string text = log.text();
    EXPECT_NE(text.find("Cannot resume from the local snapshot of iteration 2"), std::string::npos) << text;
    EXPECT_NE(text.find(damaged), std::string::npos) << text;
    for (const auto& snap : copies(2)) EXPECT_FALSE(stdfs::exists(snap)) << snap;
  }
  // Snapshot 1 damaged too: the persistent checkpoint.
  DamageShard(copies(1), 0, n_);
  EXPECT_EQ(ExpectResume(2, /*from_local=*/false), out_ + "/model_0000001");
  // A persistent checkpoint newer than the newest intact snapshot goes first.
  stdfs::remove_all(out_);
  TrainWithSnapshots(/*persistent_at=*/2);
  DamageShard(copies(2), 0, n_);
  EXPECT_EQ(ExpectResume(3, /*from_local=*/false), out_ + "/model_0000002");
  EXPECT_TRUE(stdfs::exists(job_dir("n0") + "/snap-0000000001"));
}

TEST_P(LocalTierTest, APersistentCheckpointWhoseIterationCannotBeReadKeepsItsPlace) {
  // Snapshots 2 and 3, model_0000003; then the tagged model_0000004 with a damaged index
  // (its iteration unknown) and snapshot 3 damaged everywhere. The newest intact state
  // is model_0000003: not snapshot 2, which would go first if an unknown iteration
  // ranked the checkpoint below every snapshot.
  TrainWithSnapshots(/*persistent_at=*/3, "cfg: 1\n", /*snapshots=*/4);
  stdfs::copy(out_ + "/model_0000003", out_ + "/model_0000004", stdfs::copy_options::recursive);
  { std::ofstream(out_ + "/model_0000004/" + kIndexFile, std::ios::in | std::ios::out) << "damaged!"; }
  save_dir::write_tag(Env::posix(), out_, "model_0000004");
  std::vector<std::string> copies{job_dir("n0") + "/snap-0000000003"};
  if (n_ > 1) copies.push_back(job_dir("n1") + "/snap-0000000003");
  DamageShard(copies, 0, n_);
  EXPECT_EQ(ExpectResume(4, /*from_local=*/false), out_ + "/model_0000003");
}

}  // namespace
}  // namespace dtrain::checkpoint
