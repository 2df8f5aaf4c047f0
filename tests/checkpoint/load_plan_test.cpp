// Unit tests of the load plan (checkpoint/load_plan.h), without MPI: who can read, who
// reads and verifies each piece, in which order, and what is relayed, for shared and
// node-local checkpoints, changed world sizes and partial loads.
#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "checkpoint/load_plan.h"
#include "tests/gtest_util.h"

namespace dtrain::checkpoint {
namespace {

// Two shards: model/w [8, 4] float32 in rows 0-5 (shard 0) and 6-7 (shard 1), model/b
// [4] on shard 1, optimizer/m [8] in two pieces, a per-rank rng state on both shards.
CheckpointIndex TwoShardIndex() {
  CheckpointIndex idx;
  idx.world_size = 2;
  idx.tensors.push_back({"model/w", "float32", {8, 4}, false,
                         {{0, 0, 6, 96, 0, {6, 4}}, {1, 6, 2, 32, 0, {2, 4}}}});
  idx.tensors.push_back({"model/b", "float32", {4}, false, {{1, 0, 4, 16, 0, {4}}}});
  idx.tensors.push_back({"optimizer/m", "float32", {8}, false,
                         {{0, 0, 4, 16, 0, {4}}, {1, 4, 4, 16, 0, {4}}}});
  idx.tensors.push_back({"rng/cpu", "uint8", {5}, true,
                         {{0, 0, 5, 5, 0, {5}}, {1, 0, 5, 5, 0, {5}}}});
  return idx;
}

bool NotOptimizer(const std::string& name) { return name.rfind("optimizer/", 0) != 0; }
bool Everything(const std::string&) { return true; }

std::vector<Visibility> Seen(const std::vector<bool>& readable, const std::string& files = "") {
  std::vector<Visibility> out;
  for (bool r : readable) out.push_back({r, r ? files : ""});
  return out;
}

// "tensor:piece" of each read, in order.
std::vector<std::string> Names(const CheckpointIndex& idx, const std::vector<PieceRead>& reads) {
  std::vector<std::string> out;
  for (const auto& r : reads) out.push_back(idx.tensors[r.tensor].name + ":" + std::to_string(r.piece));
  return out;
}

TEST(FindReaders, NoReaderNamesTheDirectory) {
  const std::string msg = testing::ThrownMessage<CheckpointError>(
      [] { find_readers(Seen({false, false}), 0, "/ckpt/model_0000009"); });
  EXPECT_EQ(msg, "'/ckpt/model_0000009' is not a checkpoint: 'checkpoint.h5' is missing (no rank "
                 "can read '/ckpt/model_0000009/checkpoint.h5')");
}

TEST(FindReaders, IndexRootIsTheFirstReaderAndGroupsShareFiles) {
  // Ranks 1 and 3 read the same files; rank 2 reads another copy; rank 0 none.
  std::vector<Visibility> v = {{false, ""}, {true, "boot 1:2\nrng:p;"}, {true, "boot 9:9\nrng:p;"},
                               {true, "boot 1:2\nrng:p;"}};
  const Readers r3 = find_readers(v, 3, "d");
  EXPECT_EQ(r3.index_root, 1);
  EXPECT_EQ(r3.count, 3);
  EXPECT_FALSE(r3.everyone());
  EXPECT_EQ(r3.same_files_ranks, 2);
  EXPECT_EQ(r3.same_files_index, 1);
  const Readers r2 = find_readers(v, 2, "d");
  EXPECT_EQ(r2.same_files_ranks, 1);
  EXPECT_EQ(r2.same_files_index, 0);
  const Readers r0 = find_readers(v, 0, "d");  // cannot read: a group of its own
  EXPECT_EQ(r0.same_files_ranks, 1);
}

TEST(PlanLoad, EveryRankReadsAndVerifiesAllWhenFilesDiffer) {
  const CheckpointIndex idx = TwoShardIndex();
  for (int rank = 0; rank < 2; ++rank) {
    const LoadPlan plan = plan_load(idx, find_readers(Seen({true, true}), rank, "d"), rank, NotOptimizer);
    EXPECT_TRUE(plan.every_rank_reads);
    ASSERT_EQ(plan.reads.size(), 3u);  // model/w:0, model/w:1, model/b:0; no optimizer
    for (const auto& r : plan.reads) {
      EXPECT_EQ(r.reader, rank);
      EXPECT_TRUE(r.verify);
    }
    // Staggered: rank r starts with shard r (different files first on different nodes).
    EXPECT_EQ(idx.tensors[plan.reads[0].tensor].pieces[plan.reads[0].piece].shard, rank);
    ASSERT_EQ(plan.own_per_rank.size(), 1u);
    EXPECT_EQ(idx.tensors[plan.own_per_rank[0].tensor].pieces[plan.own_per_rank[0].piece].shard, rank);
    EXPECT_TRUE(plan.relayed_per_rank.empty());
  }
  const LoadPlan rank1 = plan_load(idx, find_readers(Seen({true, true}), 1, "d"), 1, NotOptimizer);
  EXPECT_EQ(Names(idx, rank1.reads), (std::vector<std::string>{"model/w:1", "model/b:0", "model/w:0"}));
}

TEST(PlanLoad, RanksOnTheSameFilesSplitVerificationByBytes) {
  const CheckpointIndex idx = TwoShardIndex();
  const int world = 2;
  std::map<std::string, int> verifiers;  // piece -> how many ranks verify it
  for (int rank = 0; rank < world; ++rank) {
    const LoadPlan plan =
        plan_load(idx, find_readers(Seen({true, true}, "boot 1:2\n"), rank, "d"), rank, Everything);
    ASSERT_EQ(plan.reads.size(), 5u);
    // This rank's own range first, then the others' (index order within each).
    bool seen_unverified = false;
    for (const auto& r : plan.reads) {
      if (r.verify) {
        EXPECT_FALSE(seen_unverified) << "a verified piece after an unverified one on rank " << rank;
        ++verifiers[Names(idx, {r})[0]];
      }
      seen_unverified = seen_unverified || !r.verify;
    }
  }
  // 176 bytes in index order: w:0 (96) starts in rank 0's half, the rest in rank 1's.
  EXPECT_EQ(verifiers, (std::map<std::string, int>{{"model/w:0", 1}, {"model/w:1", 1}, {"model/b:0", 1},
                                                   {"optimizer/m:0", 1}, {"optimizer/m:1", 1}}));
  const LoadPlan rank0 = plan_load(idx, find_readers(Seen({true, true}, "k"), 0, "d"), 0, Everything);
  EXPECT_TRUE(rank0.reads[0].verify);
  EXPECT_EQ(Names(idx, rank0.reads)[0], "model/w:0");
  EXPECT_FALSE(rank0.reads[1].verify);
}

TEST(PlanLoad, UnreadableRanksReceiveEverythingInIndexOrder) {
  const CheckpointIndex idx = TwoShardIndex();
  const auto seen = Seen({true, false});
  std::vector<std::string> order;
  for (int rank = 0; rank < 2; ++rank) {
    const LoadPlan plan = plan_load(idx, find_readers(seen, rank, "d"), rank, NotOptimizer);
    EXPECT_FALSE(plan.every_rank_reads);
    // Rank 1's shard is read by rank 0 (the only reader), for both ranks, in index order.
    for (const auto& r : plan.reads) EXPECT_EQ(r.reader, 0);
    const auto names = Names(idx, plan.reads);
    if (rank == 0) order = names;
    EXPECT_EQ(names, order) << "broadcast order differs on rank " << rank;
    // The per-rank state of rank 1 is read by the index root and relayed.
    ASSERT_EQ(plan.relayed_per_rank.size(), 1u);
    EXPECT_EQ(plan.relayed_per_rank[0].reader, 0);
    EXPECT_EQ(idx.tensors[plan.relayed_per_rank[0].tensor].pieces[plan.relayed_per_rank[0].piece].shard, 1);
    EXPECT_EQ(plan.own_per_rank.size(), rank == 0 ? 1u : 0u);
  }
  EXPECT_EQ(order, (std::vector<std::string>{"model/w:0", "model/w:1", "model/b:0"}));
}

TEST(PlanLoad, SameWorldSizeReadsOwnShardElseBalancesBytes) {
  const CheckpointIndex idx = TwoShardIndex();
  // Two of three ranks can read (rank 2 cannot): the world size changed, so pieces go to
  // the least-loaded reader: w:0 (96 B) to rank 0, then w:1, b:0, m:0, m:1 to rank 1
  // until it passes rank 0's bytes.
  const LoadPlan plan = plan_load(idx, find_readers(Seen({true, true, false}), 2, "d"), 2, Everything);
  std::map<std::string, int> reader;
  for (const auto& r : plan.reads) reader[Names(idx, {r})[0]] = r.reader;
  EXPECT_EQ(reader, (std::map<std::string, int>{{"model/w:0", 0}, {"model/w:1", 1}, {"model/b:0", 1},
                                                {"optimizer/m:0", 1}, {"optimizer/m:1", 1}}));
  // Same world size as the index, one rank blind: readable shards keep their own rank.
  CheckpointIndex three = TwoShardIndex();
  three.world_size = 3;
  const LoadPlan same = plan_load(three, find_readers(Seen({true, true, false}), 0, "d"), 0, NotOptimizer);
  for (const auto& r : same.reads) {
    EXPECT_EQ(r.reader, three.tensors[r.tensor].pieces[r.piece].shard);
  }
}

TEST(PlanLoad, PerRankPiecesOfRanksBeyondTheWorldAreNotRead) {
  CheckpointIndex idx = TwoShardIndex();
  const LoadPlan plan = plan_load(idx, find_readers(Seen({true}), 0, "d"), 0, Everything);
  EXPECT_EQ(plan.own_per_rank.size(), 1u);  // shard 0's; shard 1 has no rank now
  EXPECT_TRUE(plan.relayed_per_rank.empty());
}

TEST(PlanLoad, ShardServersReadTheirShardsAndSendPerRankPiecesToTheirRanks) {
  // A local snapshot of 2 ranks resharded to 3: both shards are on rank 2's node only.
  // Every piece is read by rank 2 and broadcast; rank 0's and rank 1's per-rank pieces
  // are relayed from rank 2 to them.
  const CheckpointIndex idx = TwoShardIndex();
  Readers readers = find_readers(Seen({false, false, true}), 1, "d");
  readers.own_shards = true;
  readers.shard_server = {2, 2};
  const LoadPlan plan = plan_load(idx, readers, 1, Everything);
  EXPECT_FALSE(plan.every_rank_reads);
  EXPECT_EQ(plan.reads.size(), 5u);
  for (const auto& r : plan.reads) EXPECT_EQ(r.reader, 2) << Names(idx, {r})[0];
  EXPECT_TRUE(plan.own_per_rank.empty());
  ASSERT_EQ(plan.relayed_per_rank.size(), 2u);
  for (const auto& r : plan.relayed_per_rank) EXPECT_EQ(r.reader, 2);
  // Two ranks each serving the other's shard: replicated pieces by their server,
  // per-rank pieces relayed (no rank serves its own). One rank: shard 1's per-rank
  // piece has no rank now.
  readers = find_readers(Seen({true, true}), 0, "d");
  readers.own_shards = true;
  readers.shard_server = {1, 0};
  const LoadPlan swapped = plan_load(idx, readers, 0, Everything);
  for (const auto& r : swapped.reads) {
    EXPECT_EQ(r.reader, 1 - idx.tensors[r.tensor].pieces[r.piece].shard) << Names(idx, {r})[0];
  }
  EXPECT_TRUE(swapped.own_per_rank.empty());
  EXPECT_EQ(swapped.relayed_per_rank.size(), 2u);
  readers = find_readers(Seen({true}), 0, "d");
  readers.own_shards = true;
  readers.shard_server = {0, 0};
  const LoadPlan one = plan_load(idx, readers, 0, Everything);
  EXPECT_EQ(one.own_per_rank.size(), 1u);  // shard 0's; shard 1 has no rank now
  EXPECT_TRUE(one.relayed_per_rank.empty());
}

TEST(FollowFileOrder, SortsEachRunOfOneShardByOffsetAndKeepsTheRunsInPlace) {
  CheckpointIndex idx = TwoShardIndex();
  // Plan order: shard 1's pieces (a run), then shard 0's, then shard 1's again.
  std::vector<PieceRead> reads = {{1, 0, 0, true}, {0, 1, 0, true}, {2, 1, 0, true},
                                  {0, 0, 0, true}, {2, 0, 0, true}, {3, 1, 0, true}};
  const std::map<std::string, int64_t> offset = {{"model/b:0", 4096},       {"model/w:1", 1 << 20},
                                                 {"optimizer/m:1", 2048},   {"model/w:0", 3 << 20},
                                                 {"optimizer/m:0", 1 << 20}, {"rng/cpu:1", -1}};
  follow_file_order(idx, reads, [&](const PieceRead& r) {
    return offset.at(idx.tensors[r.tensor].name + ":" + std::to_string(r.piece));
  });
  EXPECT_EQ(Names(idx, reads), (std::vector<std::string>{"optimizer/m:1", "model/b:0", "model/w:1",
                                                          "optimizer/m:0", "model/w:0", "rng/cpu:1"}));
}

TEST(FollowFileOrder, KeepsTheVerificationTurnsApart) {
  CheckpointIndex idx = TwoShardIndex();
  // All on shard 0, but in two turns of split_verification: two runs, kept apart even
  // though this rank verifies neither turn.
  std::vector<PieceRead> reads = {{0, 0, 0, false, 1}, {2, 0, 0, false, 1}, {3, 0, 0, false, 2}};
  follow_file_order(idx, reads, [&](const PieceRead& r) { return r.tensor == 0 ? 100 : r.tensor == 2 ? 50 : 0; });
  EXPECT_EQ(Names(idx, reads), (std::vector<std::string>{"optimizer/m:0", "model/w:0", "rng/cpu:0"}));
}

TEST(FollowLayoutOrder, PutsEachRunsSmallPiecesBeforeItsLargeOnesKeepingTheirOrder) {
  CheckpointIndex idx = TwoShardIndex();
  idx.tensors[0].pieces[0].bytes = 64 << 10;  // model/w:0 at the alignment threshold: large
  idx.tensors.push_back({"model/big", "float32", {1 << 15}, false, {{0, 0, 1 << 15, 128 << 10, 0, {1 << 15}}}});
  // Shard 0: model/big, model/w:0, optimizer/m:0 (a run); shard 1: model/w:1, model/b:0.
  std::vector<PieceRead> reads = {{4, 0, 0, true}, {0, 0, 0, true}, {2, 0, 0, true},
                                  {0, 1, 0, true}, {1, 0, 0, true}};
  follow_layout_order(idx, reads);
  EXPECT_EQ(Names(idx, reads), (std::vector<std::string>{"optimizer/m:0", "model/big:0", "model/w:0",
                                                          "model/w:1", "model/b:0"}));
}

}  // namespace
}  // namespace dtrain::checkpoint
