// The node-local tier (checkpoint/local_tier.h) under plain ctest: 1, 2 and 4 ranks as
// threads (dist::ThreadWorld), spread over "nodes" by LocalTierOptions::node_id (two
// nodes when there are two ranks or more). Snapshots resume bitwise from the ranks' own
// nodes, from a buddy's replica when a node lost its tier, from the persistent tier
// when both are gone, when the persistent checkpoint is newer, or when the world size
// changed; snapshots of another config are neither used nor kept; a failed snapshot is
// a warning; KEEP prunes (damaged snapshots: local_tier_damage_test.cpp). The
// transfer schedule and the buddy pairs are checked on their own.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "checkpoint/checkpointer.h"
#include "runtime/base/error.h"
#include "runtime/base/fs.h"
#include "runtime/dist/thread_communicator.h"
#include "tests/checkpoint/local_tier_fixture.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint {
namespace {

namespace stdfs = std::filesystem;
using namespace testing;  // NOLINT: test helpers
using local_tier_testing::LocalTierTest;

TEST(LocalTierPlanTest, TransfersAreScheduledOneSendAndOneReceivePerRankPerRound) {
  const std::vector<std::pair<int, int>> pairs{{0, 2}, {0, 3}, {1, 2}, {2, 0}, {3, 1}};
  const auto rounds = schedule_transfers(pairs);
  size_t total = 0;
  for (const auto& round : rounds) {
    std::set<int> senders, receivers;
    for (const auto& [from, to] : round) {
      EXPECT_TRUE(senders.insert(from).second) << "rank " << from << " sends twice in a round";
      EXPECT_TRUE(receivers.insert(to).second) << "rank " << to << " receives twice in a round";
    }
    total += round.size();
  }
  EXPECT_EQ(total, pairs.size());
  EXPECT_EQ(rounds.size(), 2U);  // rank 0 sends twice, rank 2 receives twice
  EXPECT_TRUE(schedule_transfers({}).empty());
}

TEST(LocalTierPlanTest, BuddiesAreOnTheNextNodes) {
  // Two nodes of two ranks: each rank's buddy has its place on the other node.
  EXPECT_EQ(buddy_pairs({"a", "a", "b", "b"}, 1),
            (std::vector<std::pair<int, int>>{{0, 2}, {1, 3}, {2, 0}, {3, 1}}));
  // One node: no buddy at all.
  EXPECT_TRUE(buddy_pairs({"a", "a"}, 1).empty());
  // Three nodes, two replicas: the next two nodes, ring order.
  EXPECT_EQ(buddy_pairs({"a", "b", "c"}, 2),
            (std::vector<std::pair<int, int>>{{0, 1}, {1, 2}, {2, 0}, {0, 2}, {1, 0}, {2, 1}}));
  // More replicas than other nodes: one per other node.
  EXPECT_EQ(buddy_pairs({"a", "b"}, 5).size(), 2U);
  // Uneven nodes: the smaller node's ranks take several.
  EXPECT_EQ(buddy_pairs({"a", "a", "b"}, 1),
            (std::vector<std::pair<int, int>>{{0, 2}, {1, 2}, {2, 0}}));
}

TEST(LocalTierPlanTest, ANodeIdClashesOnlyWhenGivenFromTwoMachines) {
  EXPECT_EQ(node_id_clash({"a", "a", "b"}, {"m1", "m1", "m2"}), "");
  EXPECT_EQ(node_id_clash({"a", "b"}, {"m1", "m1"}), "");  // simulated nodes on one machine
  EXPECT_EQ(node_id_clash({"a", "a"}, {"m1", ""}), "");    // a boot id unknown: no evidence
  const std::string clash = node_id_clash({"a", "b", "b", "a"}, {"m1", "m2", "m2", "m3"});
  EXPECT_NE(clash.find("ranks 0 and 3 both give node id 'a'"), std::string::npos) << clash;
  EXPECT_NE(clash.find("m1 and m3"), std::string::npos) << clash;
}

TEST(LocalTierPlanTest, TheJobKeyDependsOnOutputDirAndConfig) {
  EXPECT_EQ(local_job_key("/x/out", "a: 1\n"), local_job_key("/x/out/", "a: 1\n"));
  EXPECT_NE(local_job_key("/x/out", "a: 1\n"), local_job_key("/x/out", "a: 2\n"));
  EXPECT_NE(local_job_key("/x/out", "a: 1\n"), local_job_key("/x/other", "a: 1\n"));
  EXPECT_EQ(local_job_key("/x/out", "").rfind("job-", 0), 0U);
}


TEST_P(LocalTierTest, ResumesBitwiseFromTheNewestSnapshotAndKeepsTwo) {
  TrainWithSnapshots();
  // KEEP 2: iterations 1 and 2 stay on every node, with the node's own shards and, with
  // two nodes, the replicas of the other node's.
  for (const std::string node : {"n0", "n1"}) {
    if (n_ == 1 && node == "n1") continue;
    std::set<std::string> kept{"job.txt", "lock", "snap-0000000001", "snap-0000000002"};
    for (int r = 0; r < n_ && write_ == LocalWrite::kMapped; ++r) {
      if (node_of(r) == node) kept.insert(fmt::format(".spare-r{:05d}.tmp-local", r));  // snap-0's
    }
    EXPECT_EQ(entries(job_dir(node)), kept) << node;
    std::set<std::string> expected{std::string(kIndexFile)};
    for (int r = 0; r < n_; ++r) {
      if (node_of(r) == node || n_ > 1) expected.insert(shard_file_name(r, n_));
    }
    EXPECT_EQ(entries(job_dir(node) + "/snap-0000000002"), expected) << node;
  }
  EXPECT_EQ(ExpectResume(3, /*from_local=*/true), job_dir("n0") + "/snap-0000000002");
}

TEST_P(LocalTierTest, MappedSnapshotsRotateKeepPlusOneShardFilesPerRank) {
  // Each rank's own shard file in every snapshot it wrote (device, inode), seen right
  // after the snapshot started; the files of kept snapshots stay in place.
  std::mutex mu;
  std::map<int, std::set<std::pair<uint64_t, uint64_t>>> files;
  TrainWithSnapshots(-1, "cfg: 1\n", 8, [&](int rank, int64_t it) {
    if (write_ != LocalWrite::kMapped) return;  // HDF5 creates the file on the I/O thread
    const std::string tmp = job_dir(node_of(rank)) + fmt::format("/.snap-{:010d}.tmp-local/", it);
    struct stat st {};
    ASSERT_EQ(::stat((tmp + shard_file_name(rank, n_)).c_str(), &st), 0) << tmp;
    std::lock_guard<std::mutex> lock(mu);
    files[rank].insert({st.st_dev, st.st_ino});
  });
  for (int r = 0; r < n_; ++r) {
    if (write_ == LocalWrite::kMapped) {
      // KEEP 2 + the one being written: the eight snapshots wrote into three files.
      EXPECT_EQ(files[r].size(), 3U) << "rank " << r;
    }
  }
  for (const std::string node : {"n0", "n1"}) {
    if (n_ == 1 && node == "n1") continue;
    std::set<std::string> expected{"job.txt", "lock", "snap-0000000006", "snap-0000000007"};
    for (int r = 0; r < n_ && write_ == LocalWrite::kMapped; ++r) {
      if (node_of(r) == node) expected.insert(fmt::format(".spare-r{:05d}.tmp-local", r));
    }
    EXPECT_EQ(entries(job_dir(node)), expected) << node;
  }
  EXPECT_EQ(ExpectResume(8, /*from_local=*/true), job_dir("n0") + "/snap-0000000007");
  // A resumed run (a new process: nothing mapped) keeps its node's spares and takes
  // them over, then each prune's file of the previous process: the same three files.
  RunOk(n_, [&](dist::Communicator& comm) {
    TrainingState s(OptKind::kAdamW, 1234, comm.rank(), n_);
    Checkpointer c(s.model, out_, comm, s.checkpointables(), options(comm.rank()));
    c.resume_or_load("", /*resume=*/true);
    const std::string spare =
        fmt::format("{}/.spare-r{:05d}.tmp-local", job_dir(node_of(comm.rank())), comm.rank());
    EXPECT_EQ(stdfs::is_regular_file(spare), write_ == LocalWrite::kMapped) << spare;
    for (int64_t it = 8; it < 12; ++it) {
      c.snapshot_local(it);
      EXPECT_LE(OwnShardFiles(comm.rank()), 3) << "rank " << comm.rank() << ", iteration " << it;
    }
    c.finish_local();
    EXPECT_EQ(c.local_tier()->commits(), 4);
    ExpectShardFilesCreated(*c.local_tier(), 4, /*resumed=*/true);
    EXPECT_EQ(c.local_tier()->failures(), 0);
  });
  int spares = 0;
  for (const auto& e : entries(job_dir("n0"))) spares += e.find(".spare-") == 0 ? 1 : 0;
  EXPECT_EQ(spares, write_ == LocalWrite::kMapped ? (n_ == 1 ? 1 : n_ / 2) : 0);
}

TEST_P(LocalTierTest, AResumeThatWritesThroughHdf5DropsTheSparesOfMappedSnapshots) {
  // The spares a resume keeps serve mapped writes only: a resumed run writing through
  // HDF5 (say its state moved to a GPU) removes them rather than holding tier memory.
  if (write_ != LocalWrite::kMapped) GTEST_SKIP() << "no spares";
  TrainWithSnapshots();
  RunOk(n_, [&](dist::Communicator& comm) {
    TrainingState s(OptKind::kAdamW, 1234, comm.rank(), n_);
    CheckpointerOptions o = options(comm.rank());
    o.local->write = LocalWrite::kHdf5;
    Checkpointer c(s.model, out_, comm, s.checkpointables(), o);
    c.resume_or_load("", /*resume=*/true);
    EXPECT_TRUE(c.loaded_from_local());
    const std::string spare =
        fmt::format("{}/.spare-r{:05d}.tmp-local", job_dir(node_of(comm.rank())), comm.rank());
    EXPECT_FALSE(stdfs::exists(spare)) << spare;
  });
}

TEST_P(LocalTierTest, ANodeThatLostItsTierIsServedByItsBuddy) {
  if (n_ == 1) GTEST_SKIP() << "one node: no buddy";
  TrainWithSnapshots();
  stdfs::remove_all(tier_ + "/n1");
  LogCapture log;
  ExpectResume(3, /*from_local=*/true);
  EXPECT_NE(log.text().find("from the replica on node 'n0'"), std::string::npos) << log.text();
  // The staging directories are gone after the resume.
  for (const auto& e : entries(job_dir("n1"))) EXPECT_EQ(e.find(".restore-"), std::string::npos) << e;
}

// The real file system, recording which thread read which shard file.
class ShardReadsEnv final : public local_tier_testing::HookedEnv {
 public:
  ShardReadsEnv() {
    on_read = [this](const std::string& path) {
      if (stdfs::path(path).filename().string().rfind("shard-", 0) != 0) return;
      std::lock_guard<std::mutex> lock(mu_);
      reads_.emplace_back(path, std::this_thread::get_id());
    };
  }
  std::vector<std::pair<std::string, std::thread::id>> reads() const {
    std::lock_guard<std::mutex> lock(mu_);
    return reads_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::pair<std::string, std::thread::id>> reads_;
};

TEST_P(LocalTierTest, AShardWrittenThroughHdf5IsReadBackForItsBuddiesOffTheTrainingThread) {
  // A tier on disk (or state on a GPU) writes its shard through HDF5; its buddies get
  // the file's bytes, read on the I/O thread after the write, not at the commit.
  if (n_ == 1 || write_ != LocalWrite::kHdf5) GTEST_SKIP() << "no buddy, or shards written through mappings";
  ShardReadsEnv env;
  std::mutex mu;
  std::set<std::thread::id> training;
  RunOk(n_, [&](dist::Communicator& comm) {
    {
      std::lock_guard<std::mutex> lock(mu);
      training.insert(std::this_thread::get_id());
    }
    TrainingState s(OptKind::kAdamW, 7, comm.rank(), n_);
    CheckpointerOptions o = options(comm.rank());
    o.env = &env;
    Checkpointer c(s.model, out_, comm, s.checkpointables(), o);
    c.resume_or_load("", /*resume=*/false);
    for (int64_t it = 0; it < 3; ++it) {
      s.train(1);
      c.snapshot_local(it);
    }
    c.finish_local();
    EXPECT_EQ(c.local_tier()->replica_failures(), 0);
  });
  const auto reads = env.reads();
  EXPECT_EQ(reads.size(), static_cast<size_t>(3 * n_));  // each rank's shard of each snapshot
  for (const auto& [path, thread] : reads) EXPECT_EQ(training.count(thread), 0U) << path;
  // What the buddies stored is the shard, bitwise.
  for (int r = 0; r < n_; ++r) {
    const std::string name = "/snap-0000000002/" + shard_file_name(r, n_);
    const std::string other = node_of(r) == "n0" ? "n1" : "n0";
    EXPECT_EQ(fs::read_file(job_dir(other) + name), fs::read_file(job_dir(node_of(r)) + name)) << name;
  }
}

// Replicas go to the buddies after a snapshot's commit, in the background, and the next
// commit waits for them. Held in flight at the last commit and then dropped (a kill),
// the newest snapshot has no replica: a node that lost its tier resumes from the one
// before, whose replicas that last commit waited for.
TEST_P(LocalTierTest, ALostNodeWhoseNewestReplicasWereInFlightResumesTheSnapshotBefore) {
  if (n_ == 1) GTEST_SKIP() << "one node: no buddy";
  hold_exchanges_ = true;
  RunOk(n_, [&](dist::Communicator& comm) {
    TrainingState s(OptKind::kAdamW, 7, comm.rank(), n_);
    Checkpointer c(s.model, out_, comm, s.checkpointables(), options(comm.rank()));
    c.resume_or_load("", /*resume=*/false);
    for (int64_t it = 0; it < 3; ++it) {
      s.train(1);
      c.snapshot_local(it);
    }
    s.train(1);
    c.commit_local();  // snapshot 2 commits; its replicas stay in flight
    EXPECT_EQ(c.local_tier()->commits(), 3);
    c.abandon_local();  // a kill: they never arrive
    EXPECT_EQ(c.local_tier()->replica_failures(), 0);
  });
  for (const std::string node : {"n0", "n1"}) {
    std::set<std::string> own, all;
    for (int r = 0; r < n_; ++r) {
      const std::string shard = fmt::format("shard-{:05d}-of-{:05d}.h5", r, n_);
      all.insert(shard);
      if (node_of(r) == node) own.insert(shard);
    }
    own.insert("checkpoint.h5");
    all.insert("checkpoint.h5");
    EXPECT_EQ(entries(job_dir(node) + "/snap-0000000002"), own) << node;
    EXPECT_EQ(entries(job_dir(node) + "/snap-0000000001"), all) << node;
  }
  hold_exchanges_ = false;
  stdfs::remove_all(tier_ + "/n1");
  LogCapture log;
  ExpectResume(2, /*from_local=*/true);
  EXPECT_NE(log.text().find("from the replica on node 'n0'"), std::string::npos) << log.text();
}

// A replica that cannot be stored (a directory sits where it goes) is a warning on the
// rank that received it; the snapshot stays committed and training and the next
// snapshots go on, their replicas stored.
TEST_P(LocalTierTest, AReplicaThatCannotBeStoredIsAWarning) {
  if (n_ == 1) GTEST_SKIP() << "one node: no buddy";
  hold_exchanges_ = true;
  LogCapture log;
  RunOk(n_, [&](dist::Communicator& comm) {
    TrainingState s(OptKind::kAdamW, 7, comm.rank(), n_);
    Checkpointer c(s.model, out_, comm, s.checkpointables(), options(comm.rank()));
    c.resume_or_load("", /*resume=*/false);
    s.train(1);
    c.snapshot_local(0);
    s.train(1);
    c.commit_local();  // committed; its replicas in flight
    const int source = (comm.rank() + n_ / 2) % n_;  // the rank whose shard comes here
    stdfs::create_directories(fmt::format("{}/snap-0000000000/shard-{:05d}-of-{:05d}.h5",
                                          job_dir(node_of(comm.rank())), source, n_));
    c.snapshot_local(1);
    s.train(1);
    c.finish_local();
    EXPECT_EQ(c.local_tier()->commits(), 2);
    EXPECT_EQ(c.local_tier()->failures(), 0);
    EXPECT_EQ(c.local_tier()->replica_failures(), 1) << "rank " << comm.rank();
  });
  EXPECT_NE(log.text().find("Replicas of local snapshot 0: storing the replica of rank"), std::string::npos)
      << log.text();
  for (const std::string node : {"n0", "n1"}) {
    EXPECT_EQ(entries(job_dir(node) + "/snap-0000000001").size(), static_cast<size_t>(n_ + 1)) << node;
  }
}

TEST_P(LocalTierTest, WithBothTiersLostThePersistentCheckpointServes) {
  TrainWithSnapshots(/*persistent_at=*/1);
  stdfs::remove_all(tier_);
  EXPECT_EQ(ExpectResume(2, /*from_local=*/false), out_ + "/model_0000001");
}

TEST_P(LocalTierTest, ANewerPersistentCheckpointWins) {
  TrainWithSnapshots(/*persistent_at=*/2);
  // Equal iterations: the local snapshot is as good, and faster.
  EXPECT_EQ(ExpectResume(3, /*from_local=*/true), job_dir("n0") + "/snap-0000000002");
  TrainWithSnapshots(/*persistent_at=*/2);
  for (const std::string node : {"n0", "n1"}) stdfs::remove_all(job_dir(node) + "/snap-0000000002");
  EXPECT_EQ(ExpectResume(3, /*from_local=*/false), out_ + "/model_0000002");
  // The resume removed nothing older than what it resumed from.
  EXPECT_TRUE(stdfs::exists(job_dir("n0") + "/snap-0000000001"));
}

TEST_P(LocalTierTest, ASnapshotOfAnotherWorldSizeIsReshardedAsThePersistentTierWouldBe) {
  // Snapshot 2 and model_0000002 hold the same iteration: the local one is used, at
  // another world size too, each of its shards read once on a node that holds it.
  TrainWithSnapshots(/*persistent_at=*/2);
  for (const int other : {1, 2, 4}) {
    if (other == n_) continue;
    LogCapture log;
    std::string loaded;
    const auto from_local = ResumeOn(other, /*local=*/true, &loaded);
    EXPECT_EQ(loaded, job_dir("n0") + "/snap-0000000002") << other << " ranks";
    EXPECT_NE(log.text().find(fmt::format("a snapshot of {} ranks, resharded to {}", n_, other)), std::string::npos)
        << log.text();
    const auto from_persistent = ResumeOn(other, /*local=*/false, &loaded);
    EXPECT_EQ(loaded, out_ + "/model_0000002");
    for (int r = 0; r < other; ++r) {
      const auto diff = state_diff(from_persistent[r], from_local[r]);
      EXPECT_TRUE(diff.empty()) << other << " ranks, rank " << r << ": " << ::testing::PrintToString(diff);
    }
  }
  if (n_ == 1) return;
  // Without the replicas each node holds only its own ranks' shards: each is read on its
  // node (n0's by ranks on n0, n1's on n1), never by a rank whose node lacks it.
  for (const std::string node : {"n0", "n1"}) {
    stdfs::remove_all(job_dir(node) + "/snap-0000000001");
    for (int r = 0; r < n_; ++r) {
      if (node_of(r) != node) stdfs::remove(job_dir(node) + "/snap-0000000002/" + shard_file_name(r, n_));
    }
  }
  const int other = n_ == 2 ? 4 : 2;
  std::string loaded;
  const auto from_local = ResumeOn(other, /*local=*/true, &loaded);
  const auto expected = ResumeOn(other, /*local=*/false, &loaded);
  for (int r = 0; r < other; ++r) EXPECT_TRUE(state_diff(expected[r], from_local[r]).empty()) << "rank " << r;
  // One rank, on n0 alone: n1's shards are nowhere it can see; the persistent tier serves.
  LogCapture log;
  ResumeOn(1, /*local=*/true, &loaded, /*expect_local=*/false);
  EXPECT_EQ(loaded, out_ + "/model_0000002");
  EXPECT_NE(log.text().find(fmt::format("snapshots (of {} ranks) each lack a shard that no node holds", n_)),
            std::string::npos)
      << log.text();
}

TEST_P(LocalTierTest, SnapshotsOfAnotherConfigAreNeitherUsedNorKept) {
  TrainWithSnapshots(-1, "cfg: 1\n");
  RunOk(n_, [&](dist::Communicator& comm) {
    TrainingState fresh(OptKind::kAdamW, 1234, comm.rank(), n_);
    Checkpointer c(fresh.model, out_, comm, fresh.checkpointables(), options(comm.rank(), "cfg: 2\n"));
    EXPECT_TRUE(c.resume_or_load("", /*resume=*/true).empty());  // from scratch
    EXPECT_FALSE(c.loaded_from_local());
  });
  EXPECT_FALSE(stdfs::exists(job_dir("n0", "cfg: 1\n")));
  EXPECT_TRUE(stdfs::exists(job_dir("n0", "cfg: 2\n") + "/job.txt"));
}

TEST_P(LocalTierTest, AFreshStartRemovesTheJobsOldSnapshots) {
  TrainWithSnapshots();
  RunOk(n_, [&](dist::Communicator& comm) {
    TrainingState fresh(OptKind::kAdamW, 1234, comm.rank(), n_);
    Checkpointer c(fresh.model, out_, comm, fresh.checkpointables(), options(comm.rank()));
    c.resume_or_load("", /*resume=*/false);
  });
  EXPECT_EQ(entries(job_dir("n0")), (std::set<std::string>{"job.txt", "lock"}));
}

TEST_P(LocalTierTest, AFailedSnapshotIsAWarningAndTrainingGoesOn) {
  LogCapture log;
  RunOk(n_, [&](dist::Communicator& comm) {
    TrainingState s(OptKind::kAdamW, 7, comm.rank(), n_);
    Checkpointer c(s.model, out_, comm, s.checkpointables(), options(comm.rank()));
    c.resume_or_load("", /*resume=*/false);
    // A file where the snapshot's temporary directory goes: no shard can be written.
    if (comm.rank() == 0) {
      for (const std::string node : {"n0", "n1"}) {
        if (stdfs::exists(job_dir(node))) fs::write_file_atomic(job_dir(node) + "/.snap-0000000000.tmp-local", "x");
      }
    }
    comm.barrier();
    s.train(1);
    c.snapshot_local(0);
    c.finish_local();
    EXPECT_EQ(c.local_tier()->commits(), 0);
    EXPECT_EQ(c.local_tier()->failures(), 1);
  });
  EXPECT_NE(log.text().find("Local snapshot of iteration 0 failed"), std::string::npos) << log.text();
}

// A snapshot commits on every node or on none, and no node drops its older snapshot
// before every node committed the new one: else a failure (or a kill between two nodes'
// commits) could leave each node another snapshot and none complete (KEEP 1, no
// replicas: each node holds only its own ranks' shards).
TEST_P(LocalTierTest, ANodeKeepsItsSnapshotUntilEveryNodeCommittedTheNext) {
  if (n_ == 1) GTEST_SKIP() << "one node";
  local_tier_testing::HookedEnv env;
  FailCommitOn(env, "n1", 1);
  LogCapture log;
  RunOk(n_, [&](dist::Communicator& comm) {
    TrainingState s(OptKind::kAdamW, 7, comm.rank(), n_);
    CheckpointerOptions o = options(comm.rank());
    o.env = &env;
    o.local->keep = 1;
    o.local->replicas = 0;
    Checkpointer c(s.model, out_, comm, s.checkpointables(), o);
    c.resume_or_load("", /*resume=*/false);
    for (int64_t it = 0; it < 3; ++it) {
      s.train(1);
      c.snapshot_local(it);
      c.finish_local();
      comm.barrier();
      if (comm.rank() == 0 && it == 1) {  // 1 failed on n1: n0 keeps 0 and drops its own 1
        for (const std::string node : {"n0", "n1"}) {
          EXPECT_EQ(Snapshots(node), std::set<std::string>{"snap-0000000000"}) << node;
        }
      }
      comm.barrier();
    }
    EXPECT_EQ(c.local_tier()->commits(), 2);
    EXPECT_EQ(c.local_tier()->failures(), 1);
  });
  for (const std::string node : {"n0", "n1"}) {
    EXPECT_EQ(Snapshots(node), std::set<std::string>{"snap-0000000002"}) << node;
  }
  EXPECT_NE(log.text().find("Local snapshot of iteration 1 failed"), std::string::npos) << log.text();
}

// Snapshots taken one after the other (LOCAL.PERIOD 1: each commits inside the next
// one's snapshot_local, KEEP 2): one whose rename fails on a node is removed from every
// node, and the snapshots kept before it stay until later ones commit; training, and
// the snapshots after it, go on, and the tier never holds more than KEEP + 1 shard files
// per rank.
TEST_P(LocalTierTest, AChainedSnapshotThatFailsToCommitLeavesTheSnapshotsKeptBeforeIt) {
  local_tier_testing::HookedEnv env;
  FailCommitOn(env, n_ == 1 ? "n0" : "n1", 2);
  // n0, which renamed 2, removes it slowly: its other rank (4 ranks) must wait for that
  // before its next snapshot makes a shard file in place of the one dropped.
  env.on_rename = [fail = env.on_rename](const std::string& from, const std::string& to) {
    if (to.find("/.snap-0000000002.deleting-") != std::string::npos) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    fail(from, to);
  };
  LogCapture log;
  RunOk(n_, [&](dist::Communicator& comm) {
    TrainingState s(OptKind::kAdamW, 7, comm.rank(), n_);
    CheckpointerOptions o = options(comm.rank());
    o.env = &env;
    EXPECT_EQ(o.local->keep, 2);
    Checkpointer c(s.model, out_, comm, s.checkpointables(), o);
    c.resume_or_load("", /*resume=*/false);
    const std::map<int64_t, std::set<std::string>> after{
        {2, {"snap-0000000000", "snap-0000000001"}},
        {3, {"snap-0000000000", "snap-0000000001"}},  // 2 failed on one node: no prune
        {4, {"snap-0000000001", "snap-0000000003"}},
        {5, {"snap-0000000003", "snap-0000000004"}}};
    for (int64_t it = 0; it < 6; ++it) {
      s.train(1);
      c.snapshot_local(it);  // commits it - 1
      EXPECT_LE(OwnShardFiles(comm.rank()), 3) << "rank " << comm.rank() << ", iteration " << it;
      comm.barrier();
      if (comm.rank() == 0 && after.count(it) != 0) {
        for (const std::string node : {"n0", "n1"}) {
          if (n_ == 1 && node == "n1") continue;
          EXPECT_EQ(Snapshots(node), after.at(it)) << node << ", iteration " << it;
        }
      }
      comm.barrier();
    }
    c.finish_local();
    EXPECT_EQ(c.local_tier()->commits(), 5);
    EXPECT_EQ(c.local_tier()->failures(), 1);
  });
  EXPECT_NE(log.text().find("Local snapshot of iteration 2 failed"), std::string::npos) << log.text();
  EXPECT_NE(log.text().find("injected: cannot rename"), std::string::npos) << log.text();
  EXPECT_EQ(ExpectResume(6, /*from_local=*/true), job_dir("n0") + "/snap-0000000005");
}

INSTANTIATE_TEST_SUITE_P(Ranks, LocalTierTest,
                         ::testing::Combine(::testing::Values(1, 2, 4),
                                            ::testing::Values(LocalWrite::kHdf5, LocalWrite::kMapped)),
                         [](const auto& info) {
                           return fmt::format("np{}_{}", std::get<0>(info.param),
                                              std::get<1>(info.param) == LocalWrite::kMapped ? "mapped" : "hdf5");
                         });

}  // namespace
}  // namespace dtrain::checkpoint
