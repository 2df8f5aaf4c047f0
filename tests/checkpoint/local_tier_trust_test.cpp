// Who may change the node-local tier (checkpoint/local_tier.h, LocalTier::open): the
// tier's root (CHECKPOINT.LOCAL.DIR, by default /dev/shm/dtrain-local-{user}) and every
// directory on its way must be ones no other user can rename entries in, and each node's
// directory below it (and the job's) this user's alone, never writable by others.
// Otherwise nothing in the tier is resumed from, removed or written: a snapshot planted
// there (or left there by another user) never becomes the training state. 1 and 2 ranks
// as threads on two "nodes"; the other user is uid 65534 (root only).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <map>
#include <string>

#include "checkpoint/checkpointer.h"
#include "runtime/base/fs.h"
#include "runtime/dist/thread_communicator.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint {
namespace {

namespace stdfs = std::filesystem;
using namespace testing;  // NOLINT: test helpers

mode_t mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

class LocalTierTrustTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    // The real path: the tier reports the directories it checked by their real names.
    dir_ = stdfs::canonical(make_temp_dir("local_tier_trust")).string();
    out_ = dir_ + "/out";
    tier_ = dir_ + "/local";
  }
  void TearDown() override {
    if (!HasFailure()) stdfs::remove_all(dir_);
  }

  std::string node_of(int rank) const { return n_ == 1 ? "n0" : fmt::format("n{}", rank); }
  std::string job_dir(const std::string& node) const {
    return fmt::format("{}/{}/{}", tier_, node, local_job_key(out_, "cfg: 1\n"));
  }

  CheckpointerOptions options(int rank) const {
    CheckpointerOptions o;
    o.config_yaml = "cfg: 1\n";
    LocalTierOptions local;
    local.period = 1;
    local.dir = tier_;
    local.node_id = one_node_id_ ? "n0" : node_of(rank);
    if (one_node_id_) local.machine_id = fmt::format("machine-{}", rank);
    o.local = local;
    return o;
  }

  void Run(const std::function<void(dist::Communicator&)>& fn) {
    dist::ThreadWorldOptions wo;
    wo.timeout = std::chrono::seconds(60);
    EXPECT_EQ(rank_errors(dist::run_ranks(n_, fn, wo)), "");
  }

  // Seed 7, a persistent model_0000000 after step 1, local snapshots after steps 1 and 2
  // (iterations 0, 1); the run is killed (abandoned) rather than finished.
  void TrainAndCrash() {
    Run([&](dist::Communicator& comm) {
      TrainingState s(OptKind::kAdamW, 7, comm.rank(), n_);
      Checkpointer c(s.model, out_, comm, s.checkpointables(), options(comm.rank()));
      c.resume_or_load("", /*resume=*/false);
      for (int64_t it = 0; it < 2; ++it) {
        s.train(1);
        if (it == 0) c.save("model_0000000", {{"iteration", it}});
        c.snapshot_local(it);
      }
      c.local_tier()->commit_now();
      EXPECT_EQ(c.local_tier()->commits(), 2);
      EXPECT_TRUE(c.local_tier()->refusal().empty()) << c.local_tier()->refusal();
    });
  }

  // A resume with the tier as it is now: from the persistent model_0000000 (the local
  // snapshot of iteration 1 is not read), no snapshot taken (counted as failed; the
  // refusal is said once), and the tier's files left as they were. Returns the log.
  std::string ExpectRefusedResume(const std::string& reason) {
    const auto before = tree();
    LogCapture log;
    Run([&](dist::Communicator& comm) {
      TrainingState expected(OptKind::kAdamW, 7, comm.rank(), n_);
      expected.train(1);
      TrainingState fresh(OptKind::kAdamW, 1234, comm.rank(), n_);
      Checkpointer c(fresh.model, out_, comm, fresh.checkpointables(), options(comm.rank()));
      const StateDict extra = c.resume_or_load("", /*resume=*/true);
      EXPECT_FALSE(c.loaded_from_local()) << c.loaded_from();
      EXPECT_EQ(c.loaded_from(), out_ + "/model_0000000");
      EXPECT_EQ(std::get<int64_t>(extra.at("iteration")), 0);
      EXPECT_TRUE(state_diff(expected.snapshot(), fresh.snapshot()).empty()) << "rank " << comm.rank();
      EXPECT_NE(c.local_tier()->refusal().find(reason), std::string::npos) << c.local_tier()->refusal();
      fresh.train(1);
      c.snapshot_local(1);
      c.finish_local();
      EXPECT_EQ(c.local_tier()->commits(), 0);
      EXPECT_EQ(c.local_tier()->failures(), 1);
    });
    EXPECT_EQ(tree(), before) << "nothing in a refused tier is written or removed";
    EXPECT_NE(log.text().find("The local tier is not used in this run"), std::string::npos) << log.text();
    EXPECT_EQ(log.text().find("Local snapshot of iteration 1 failed"), std::string::npos) << log.text();
    return log.text();
  }

  // Every path under the tier's root with its size (-1: not a regular file; links not
  // followed). Modes may change: a node whose directories pass is made private before
  // the job learns that another node's do not.
  std::map<std::string, int64_t> tree() const {
    std::map<std::string, int64_t> out;
    for (const auto& e : stdfs::recursive_directory_iterator(tier_)) {
      out[e.path().string()] = e.is_regular_file() && !e.is_symlink() ? static_cast<int64_t>(e.file_size()) : -1;
    }
    return out;
  }

  const int n_ = GetParam();
  std::string dir_, out_, tier_;
  bool one_node_id_ = false;  // every rank gives node id n0, each from a machine of its own
};

TEST_P(LocalTierTrustTest, TheTiersDirectoriesArePrivateAndTheDefaultRootIsPerUser) {
  tier_ = dir_ + "/dtrain-local-{user}";
  const std::string root = dir_ + "/dtrain-local-" + fs::user_name();
  EXPECT_EQ(expand_user(tier_), root);
  EXPECT_EQ(expand_user("/a/{user}/b-{user}"), "/a/" + fs::user_name() + "/b-" + fs::user_name());
  const mode_t old_mask = ::umask(0);  // even so, nothing is open to others
  TrainAndCrash();
  ::umask(old_mask);
  tier_ = root;
  EXPECT_EQ(mode_of(root), 0700U);
  for (int r = 0; r < n_; ++r) {
    EXPECT_EQ(mode_of(tier_ + "/" + node_of(r)), 0700U);
    EXPECT_EQ(mode_of(job_dir(node_of(r))), 0700U);
    EXPECT_TRUE(stdfs::is_directory(job_dir(node_of(r)) + "/snap-0000000001"));
  }
}

TEST_P(LocalTierTrustTest, ARootNamedThroughThisUsersLinkIsUsedByItsRealPath) {
  TrainAndCrash();
  const std::string real = tier_;
  stdfs::create_directory_symlink(real, dir_ + "/link");
  tier_ = dir_ + "/link/";
  Run([&](dist::Communicator& comm) {
    TrainingState fresh(OptKind::kAdamW, 1234, comm.rank(), n_);
    Checkpointer c(fresh.model, out_, comm, fresh.checkpointables(), options(comm.rank()));
    c.resume_or_load("", /*resume=*/true);
    EXPECT_TRUE(c.loaded_from_local()) << c.loaded_from();
    EXPECT_EQ(c.local_tier()->job_dir().rfind(stdfs::canonical(real).string() + "/", 0), 0U)
        << c.local_tier()->job_dir();
  });
}

TEST_P(LocalTierTrustTest, AParentOthersCanWriteToIsAWarningAndTheTierIsUsed) {
  ASSERT_EQ(::chmod(dir_.c_str(), 0777), 0);  // as Kubernetes' emptyDir at /dev/shm
  LogCapture log;
  TrainAndCrash();
  EXPECT_NE(log.text().find(fmt::format("The local tier {} is used, but '{}' (mode 777) is writable by other users",
                                        tier_, dir_)),
            std::string::npos)
      << log.text();
  ASSERT_EQ(::chmod(dir_.c_str(), 0700), 0);
}

TEST_P(LocalTierTrustTest, ARootThatIsAFileIsNotUsed) {
  TrainAndCrash();
  stdfs::rename(tier_, dir_ + "/moved");
  fs::write_file_atomic(tier_, "not a directory");
  LogCapture log;
  Run([&](dist::Communicator& comm) {
    TrainingState s(OptKind::kAdamW, 7, comm.rank(), n_);
    Checkpointer c(s.model, out_, comm, s.checkpointables(), options(comm.rank()));
    s.train(1);
    c.snapshot_local(0);
    c.finish_local();
    EXPECT_EQ(c.local_tier()->commits(), 0);
    EXPECT_EQ(c.local_tier()->failures(), 1);
  });
  EXPECT_NE(log.text().find(fmt::format("'{}' is a regular file, expected a directory", tier_)), std::string::npos)
      << log.text();
}

TEST_P(LocalTierTrustTest, AnExistingNodeDirectoryOfThisUserIsMadePrivate) {
  TrainAndCrash();
  ASSERT_EQ(::chmod((tier_ + "/n0").c_str(), 0755), 0);
  Run([&](dist::Communicator& comm) {
    TrainingState fresh(OptKind::kAdamW, 1234, comm.rank(), n_);
    Checkpointer c(fresh.model, out_, comm, fresh.checkpointables(), options(comm.rank()));
    c.resume_or_load("", /*resume=*/true);
    EXPECT_TRUE(c.loaded_from_local()) << c.loaded_from();
  });
  EXPECT_EQ(mode_of(tier_ + "/n0"), 0700U);
}

TEST_P(LocalTierTrustTest, ARootOthersCanWriteToIsNotUsed) {
  TrainAndCrash();
  ASSERT_EQ(::chmod(tier_.c_str(), 0777), 0);  // anyone could have put snap-0000000001 there
  ExpectRefusedResume(fmt::format("'{}' (mode 777) is writable by other users and not sticky", tier_));
}

TEST_P(LocalTierTrustTest, ANodeDirectoryOthersCouldWriteToIsNotUsed) {
  TrainAndCrash();
  // As an older dtrain made it under umask 002: a group member could have planted the
  // snapshot it holds.
  const std::string node = tier_ + "/" + node_of(n_ - 1);
  ASSERT_EQ(::chmod(node.c_str(), 0775), 0);
  ExpectRefusedResume(fmt::format("'{}' (mode 775) could be written by other users", node));
  EXPECT_EQ(mode_of(node), 0775U);
}

TEST_P(LocalTierTrustTest, ANodeDirectoryThatIsALinkIsNotUsed) {
  TrainAndCrash();
  // The last node's directory moved elsewhere and linked: another user's, for all dtrain
  // can tell. With 2 ranks the other node is fine: the whole job refuses all the same.
  const std::string node = tier_ + "/" + node_of(n_ - 1);
  stdfs::rename(node, dir_ + "/elsewhere");
  stdfs::create_directory_symlink(dir_ + "/elsewhere", node);
  ExpectRefusedResume(fmt::format("'{}' is a symbolic link, expected a directory of this user", node));
}

TEST_P(LocalTierTrustTest, ANodeDirectoryOfAnotherUserIsNotUsed) {
  TrainAndCrash();
  const std::string node = tier_ + "/n0";
  if (::geteuid() != 0 || ::chown(node.c_str(), 65534, 65534) != 0) {
    GTEST_SKIP() << "not root: cannot give a directory to another user";
  }
  const std::string log = ExpectRefusedResume(fmt::format("'{}' belongs to uid 65534, not to this user", node));
  EXPECT_NE(log.find("set CHECKPOINT.LOCAL.DIR to a directory of your own"), std::string::npos) << log;
}

TEST_P(LocalTierTrustTest, DirectoriesRemovedDuringTheRunAreMadeAgainOnlyWhereTrusted) {
  LogCapture log;
  Run([&](dist::Communicator& comm) {
    TrainingState s(OptKind::kAdamW, 7, comm.rank(), n_);
    CheckpointerOptions o = options(comm.rank());
    o.local->write = LocalWrite::kMapped;  // its spares and files ahead go too
    Checkpointer c(s.model, out_, comm, s.checkpointables(), o);
    c.resume_or_load("", /*resume=*/false);
    const std::string job = job_dir(node_of(comm.rank()));
    auto step = [&](int64_t it) {
      s.train(1);
      c.snapshot_local(it);
      c.local_tier()->finish();
      comm.barrier();
    };
    step(0);
    // As a tidy-up of /dev/shm might (systemd-logind's RemoveIPC at the user's last
    // logout): the whole tier goes. The next snapshot makes it again, private.
    if (comm.rank() == 0) stdfs::remove_all(tier_);
    comm.barrier();
    step(1);
    EXPECT_EQ(c.local_tier()->commits(), 2);
    EXPECT_EQ(c.local_tier()->failures(), 0);
    EXPECT_EQ(mode_of(tier_), 0700U);
    EXPECT_EQ(mode_of(tier_ + "/" + node_of(comm.rank())), 0700U);
    EXPECT_EQ(mode_of(job), 0700U);
    EXPECT_TRUE(stdfs::is_directory(job + "/snap-0000000001"));
    EXPECT_TRUE(stdfs::is_regular_file(job + "/job.txt")) << "whose it is, for a later tidy-up";
    comm.barrier();
    // It goes again, and another user makes the root, the node's and the job's
    // directories, open to all: nothing is written there.
    if (comm.rank() == 0) {
      stdfs::remove_all(tier_);
      for (int r = 0; r < n_; ++r) {
        const std::string made = job_dir(node_of(r));
        stdfs::create_directories(made);
        for (const auto& d : {tier_, fs::parent_dir(made), made}) stdfs::permissions(d, stdfs::perms::all);
      }
    }
    comm.barrier();
    step(2);
    EXPECT_EQ(c.local_tier()->commits(), 2);
    EXPECT_EQ(c.local_tier()->failures(), 1);
    EXPECT_TRUE(stdfs::is_empty(job)) << "nothing is written in a directory others can write to";
  });
  EXPECT_NE(log.text().find(fmt::format("'{}' (mode 777) is writable by other users and not sticky", tier_)),
            std::string::npos)
      << log.text();
}

TEST_P(LocalTierTrustTest, ANodeIdGivenFromTwoMachinesIsNotUsed) {
  // Hosts that share a name (containers, a misconfigured cluster): each machine's ranks
  // would take the other machine's snapshots for their own node's, and only one of them
  // would commit.
  if (n_ == 1) GTEST_SKIP() << "one rank: one machine";
  TrainAndCrash();
  one_node_id_ = true;
  const std::string log = ExpectRefusedResume("ranks 0 and 1 both give node id 'n0' but run on different machines");
  EXPECT_NE(log.find("Set DTRAIN_NODE_ID"), std::string::npos) << log;
}

INSTANTIATE_TEST_SUITE_P(Ranks, LocalTierTrustTest, ::testing::Values(1, 2),
                         [](const auto& info) { return fmt::format("np{}", info.param); });

}  // namespace
}  // namespace dtrain::checkpoint
