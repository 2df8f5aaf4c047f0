// The fixture of the node-local tier's tests (local_tier_test.cpp,
// local_tier_damage_test.cpp): 1, 2 and 4 ranks as threads (dist::ThreadWorld), spread
// over "nodes" by LocalTierOptions::node_id (two nodes when there are two ranks or
// more), writing through HDF5 or mapped files. Not in an anonymous namespace: both
// files' TEST_Ps share it (one INSTANTIATE_TEST_SUITE_P, in local_tier_test.cpp).
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "checkpoint/checkpointer.h"
#include "runtime/base/env.h"
#include "runtime/base/fs.h"
#include "runtime/dist/thread_communicator.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint::local_tier_testing {

namespace stdfs = std::filesystem;
using namespace testing;  // NOLINT: test helpers

// The real file system, with hooks called (on the calling thread) before a file is read
// and before a rename; a hook may throw to make the call fail.
class HookedEnv : public Env {
 public:
  std::function<void(const std::string& path)> on_read;
  std::function<void(const std::string& from, const std::string& to)> on_rename;

  FileType type_of(const std::string& p) override { return Env::posix().type_of(p); }
  std::vector<std::string> children(const std::string& d) override { return Env::posix().children(d); }
  std::string read_file(const std::string& path, const fs::ReadOptions& options) override {
    if (on_read) on_read(path);
    return Env::posix().read_file(path, options);
  }
  void write_new_file(const std::string& p, const std::string& c) override { Env::posix().write_new_file(p, c); }
  bool create_dir(const std::string& p, DirAccess a) override { return Env::posix().create_dir(p, a); }
  void sync(const std::string& p) override { Env::posix().sync(p); }
  void rename(const std::string& f, const std::string& t) override {
    if (on_rename) on_rename(f, t);
    Env::posix().rename(f, t);
  }
  bool exchange(const std::string& a, const std::string& b) override { return Env::posix().exchange(a, b); }
  void remove_file(const std::string& p) override { Env::posix().remove_file(p); }
  void remove_tree(const std::string& p) override { Env::posix().remove_tree(p); }
};

class LocalTierTest : public ::testing::TestWithParam<std::tuple<int, LocalWrite>> {
 protected:
  void SetUp() override {
    dir_ = make_temp_dir("local_tier");
    out_ = dir_ + "/out";
    tier_ = dir_ + "/local";
  }
  void TearDown() override {
    if (!HasFailure()) stdfs::remove_all(dir_);
  }

  std::string node_of(int rank) const { return n_ == 1 ? "n0" : fmt::format("n{}", rank * nodes_ / n_); }

  CheckpointerOptions options(int rank, const std::string& config = "cfg: 1\n") const {
    CheckpointerOptions o;
    o.config_yaml = config;
    LocalTierOptions local;
    local.period = 1;
    local.dir = tier_;
    local.keep = 2;
    local.replicas = replicas_;
    local.node_id = node_of(rank);
    local.write = write_;
    local.lock_wait = lock_wait_;
    o.local = local;
    if (env_ != nullptr) o.env = env_;
    return o;
  }

  void RunOk(int ranks, const std::function<void(dist::Communicator&)>& fn) {
    dist::ThreadWorldOptions wo;
    wo.timeout = std::chrono::seconds(60);
    wo.exchanges_finish_in_wait = hold_exchanges_;
    EXPECT_EQ(rank_errors(dist::run_ranks(ranks, fn, wo)), "");
  }

  // Trains seed 7 and takes local snapshots after steps 1..3 (iterations 0, 1, 2; the
  // third is still being written while training goes on, then committed); with
  // `persistent_at` >= 0 also saves model_<it> at that iteration. Returns nothing: the
  // expected state is that of TrainingState(7) after 3 steps.
  // `after_snapshot(rank, it)` runs after each snapshot_local (which committed the one
  // before), on each rank.
  void TrainWithSnapshots(int persistent_at = -1, const std::string& config = "cfg: 1\n", int64_t snapshots = 3,
                          const std::function<void(int, int64_t)>& after_snapshot = nullptr) {
    RunOk(n_, [&](dist::Communicator& comm) {
      TrainingState s(OptKind::kAdamW, 7, comm.rank(), n_);
      Checkpointer c(s.model, out_, comm, s.checkpointables(), options(comm.rank(), config));
      c.resume_or_load("", /*resume=*/false);
      EXPECT_EQ(c.local_tier()->mapped(), write_ == LocalWrite::kMapped);
      for (int64_t it = 0; it < snapshots; ++it) {
        s.train(1);
        if (it == persistent_at) c.save(fmt::format("model_{:07d}", it), {{"iteration", it}});
        c.snapshot_local(it);
        EXPECT_LE(OwnShardFiles(comm.rank()), 3) << "rank " << comm.rank() << ", iteration " << it;
        if (after_snapshot) after_snapshot(comm.rank(), it);
      }
      s.train(1);  // after the snapshot was taken: not in it
      c.finish_local();
      EXPECT_EQ(c.local_tier()->commits(), snapshots);
      EXPECT_EQ(c.local_tier()->failures(), 0);
      ExpectShardFilesCreated(*c.local_tier(), snapshots);
    });
  }

  // Resumes fresh states on `ranks` ranks; expects TrainingState(7) after `steps` steps
  // (bitwise, every rank) and iteration `steps - 1`; returns rank 0's loaded_from.
  std::string ExpectResume(int steps, bool from_local, int ranks = 0,
                           const std::string& config = "cfg: 1\n") {
    ranks = ranks == 0 ? n_ : ranks;
    std::string loaded;
    RunOk(ranks, [&](dist::Communicator& comm) {
      TrainingState expected(OptKind::kAdamW, 7, comm.rank(), ranks);
      expected.train(steps);
      TrainingState fresh(OptKind::kAdamW, 1234, comm.rank(), ranks);
      Checkpointer c(fresh.model, out_, comm, fresh.checkpointables(), options(comm.rank(), config));
      const StateDict extra = c.resume_or_load("", /*resume=*/true);
      EXPECT_EQ(c.loaded_from_local(), from_local) << "rank " << comm.rank() << ": " << c.loaded_from();
      ASSERT_TRUE(extra.count("iteration")) << "rank " << comm.rank();
      EXPECT_EQ(std::get<int64_t>(extra.at("iteration")), steps - 1);
      const auto diff = state_diff(expected.snapshot(), fresh.snapshot());
      EXPECT_TRUE(diff.empty()) << "rank " << comm.rank() << ": " << ::testing::PrintToString(diff);
      if (comm.rank() == 0) loaded = c.loaded_from();
    });
    return loaded;
  }

  // Resumes on `world` ranks (nodes n0, n1 as node_of spreads them; one rank: n0), at
  // iteration 2, from the tiers (`local`; from the local one unless not `expect_local`)
  // or from the persistent tier alone; returns each rank's replicated state, and rank
  // 0's loaded_from in `loaded`.
  std::vector<StateDict> ResumeOn(int world, bool local, std::string* loaded, bool expect_local = true) {
    std::vector<StateDict> states(world);
    RunOk(world, [&](dist::Communicator& comm) {
      TrainingState fresh(OptKind::kAdamW, 1234, comm.rank(), world);
      CheckpointerOptions o = options(comm.rank());
      o.local->node_id = world == 1 ? "n0" : fmt::format("n{}", comm.rank() * 2 / world);
      if (!local) o.local.reset();
      Checkpointer c(fresh.model, out_, comm, fresh.checkpointables(), o);
      const StateDict extra = c.resume_or_load("", /*resume=*/true);
      EXPECT_EQ(c.loaded_from_local(), local && expect_local) << "rank " << comm.rank() << ": " << c.loaded_from();
      ASSERT_TRUE(extra.count("iteration")) << "rank " << comm.rank();
      EXPECT_EQ(std::get<int64_t>(extra.at("iteration")), 2);
      states[comm.rank()] = fresh.snapshot();
      if (comm.rank() == 0) *loaded = c.loaded_from();
    });
    return states;
  }

  // kMapped: a fresh run's first snapshot creates its shard file in the stall; the
  // next LOCAL.KEEP (2) are created ahead, on the background thread; later ones reuse
  // files. A resumed run with KEEP snapshots and its spare kept takes over the previous
  // process's files: the spare, then each commit's prune's, KEEP + 1 in all; it
  // creates none, in the stall or ahead.
  void ExpectShardFilesCreated(const LocalTier& tier, int64_t snapshots, bool resumed = false) const {
    const bool mapped = write_ == LocalWrite::kMapped;
    EXPECT_EQ(tier.shard_files_created_in_stall(), mapped && !resumed ? std::min<int64_t>(snapshots, 1) : 0);
    EXPECT_EQ(tier.shard_files_created_ahead(),
              mapped && !resumed ? std::min<int64_t>(std::max<int64_t>(snapshots - 1, 0), 2) : 0);
    EXPECT_EQ(tier.shard_files_adopted(), mapped && resumed ? std::min<int64_t>(snapshots, 3) : 0);
  }

  // This rank's shard files on its node's tier (snapshots, the one being written, its
  // spare and a file created ahead): never more than KEEP + 1 = 3.
  int OwnShardFiles(int rank) const {
    const std::string dir = job_dir(node_of(rank));
    const std::string name = shard_file_name(rank, n_);
    int files = 0;
    for (const auto& e : entries(dir)) files += stdfs::is_regular_file(dir + "/" + e + "/" + name) ? 1 : 0;
    for (const char* other : {".spare", ".ahead"}) {
      files += stdfs::is_regular_file(dir + fmt::format("/{}-r{:05d}.tmp-local", other, rank)) ? 1 : 0;
    }
    return files;
  }

  // The committed snapshots (snap-*) of `node`'s copy of the job.
  std::set<std::string> Snapshots(const std::string& node) const {
    std::set<std::string> out;
    for (const auto& e : entries(job_dir(node))) {
      if (e.rfind("snap-", 0) == 0) out.insert(e);
    }
    return out;
  }

  // Makes `env`'s renames of `node`'s temporary directory of snapshot `iteration` fail
  // (its commit there).
  static void FailCommitOn(HookedEnv& env, const std::string& node, int64_t iteration) {
    env.on_rename = [node, tmp = fmt::format("/.snap-{:010d}.tmp-local", iteration)](const std::string& from,
                                                                                     const std::string&) {
      if (from.find("/" + node + "/") != std::string::npos && from.find(tmp) != std::string::npos) {
        throw std::runtime_error("injected: cannot rename " + from);
      }
    };
  }

  std::string job_dir(const std::string& node, const std::string& config = "cfg: 1\n") const {
    return fmt::format("{}/{}/{}", tier_, node, local_job_key(out_, config));
  }

  std::set<std::string> entries(const std::string& dir) const {
    std::set<std::string> out;
    if (!stdfs::exists(dir)) return out;
    for (const auto& e : stdfs::directory_iterator(dir)) out.insert(e.path().filename().string());
    return out;
  }

  const int n_ = std::get<0>(GetParam());
  const LocalWrite write_ = std::get<1>(GetParam());
  bool hold_exchanges_ = false;  // replicas stay in flight until waited for
  int nodes_ = 2;                 // the nodes n_ > 1 ranks are spread over (node_of)
  int replicas_ = 1;              // LOCAL.REPLICAS
  Env* env_ = nullptr;            // options()' Env, when set
  std::chrono::milliseconds lock_wait_{10000};  // LOCAL's lock_wait
  std::string dir_, out_, tier_;
};

}  // namespace dtrain::checkpoint::local_tier_testing
