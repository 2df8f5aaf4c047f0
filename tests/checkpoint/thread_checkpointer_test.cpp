// The Checkpointer's multi-rank logic under plain ctest: 2 and 4 ranks as threads of this
// process (dist::ThreadWorld), through the public API only (checkpoint/checkpointer.h).
// Save, load, resume_or_load and an asynchronous save round-trip bit for bit on every
// rank; a fault point on one rank gives every rank the same CheckpointError and commits
// nothing; and a failure injected at every collective of a save, one at a time, never
// hangs a rank, always fails every rank, and leaves the directory in a committed state
// (the previous checkpoint, or the new one whole); the same at every collective of a
// resume fails every rank and changes nothing.
//
// Threads share what a process owns: the default CPU generator (so the per-rank RNG
// entries hold one generator's state, and RNG contents are not compared here; the MPI
// tests do that), fault points (armed from the main thread before the ranks start, for
// one rank by number) and the logger. HDF5 calls are serialized by the h5 wrappers.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "checkpoint/checkpointer.h"
#include "runtime/base/error.h"
#include "runtime/dist/thread_communicator.h"
#include "tests/checkpoint/test_support.h"
#include "tests/gtest_util.h"

namespace dtrain::checkpoint {
namespace {

using namespace testing;  // NOLINT: test helpers
namespace stdfs = std::filesystem;

dist::ThreadWorldOptions world_options() {
  dist::ThreadWorldOptions options;
  options.timeout = std::chrono::seconds(60);  // a hang fails the test instead
  return options;
}

// "CheckpointError: <message>", "Error: ...", "CommError: ...", "other: ..." or "" (none).
std::string kind_and_message(const std::exception_ptr& error) {
  if (!error) return "";
  try {
    std::rethrow_exception(error);
  } catch (const CheckpointError& e) {
    return std::string("CheckpointError: ") + e.what();
  } catch (const CommError& e) {
    return std::string("CommError: ") + e.what();
  } catch (const Error& e) {
    return std::string("Error: ") + e.what();
  } catch (const std::exception& e) {
    return std::string("other: ") + e.what();
  }
}

class ThreadCheckpointTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override { dir_ = make_temp_dir("thread"); }
  void TearDown() override {
    if (!HasFailure()) stdfs::remove_all(dir_);
  }

  // Runs fn on every rank; expects that no rank threw.
  void RunOk(const std::function<void(dist::Communicator&)>& fn) {
    const auto errors = dist::run_ranks(n_, fn, world_options());
    for (size_t r = 0; r < errors.size(); ++r) {
      EXPECT_FALSE(errors[r]) << "rank " << r << ": " << kind_and_message(errors[r]);
    }
  }

  // Every rank saves `seed`'s state after 3 steps (AdamW) as `name`.
  void SaveOn(dist::Communicator& comm, const std::string& name, uint64_t seed) {
    TrainingState s(OptKind::kAdamW, seed, comm.rank(), comm.size());
    s.train(3);
    Checkpointer c(s.model, dir_, comm, s.checkpointables());
    c.save(name, sample_extras(seed, 2));
  }

  // Every rank resumes into a fresh state and expects `seed`'s state from `name`.
  void ExpectResumes(const std::string& name, uint64_t seed) {
    RunOk([&](dist::Communicator& comm) {
      TrainingState expected(OptKind::kAdamW, seed, comm.rank(), comm.size());
      expected.train(3);
      TrainingState fresh(OptKind::kAdamW, seed + 1000, comm.rank(), comm.size());
      Checkpointer c(fresh.model, dir_, comm, fresh.checkpointables());
      const StateDict extra = c.resume_or_load("", /*resume=*/true);
      EXPECT_EQ(c.loaded_from(), dir_ + "/" + name);
      auto diff = state_diff(expected.snapshot(), fresh.snapshot());
      EXPECT_TRUE(diff.empty()) << "rank " << comm.rank() << ": " << ::testing::PrintToString(diff);
      diff = state_diff(sample_extras(seed, 2), extra);
      EXPECT_TRUE(diff.empty()) << "rank " << comm.rank() << ": " << ::testing::PrintToString(diff);
    });
  }

  const int n_ = GetParam();
  std::string dir_;
};

TEST_P(ThreadCheckpointTest, SaveLoadResumeBitwiseOnEveryRank) {
  std::vector<uint64_t> hashes(static_cast<size_t>(n_));
  RunOk([&](dist::Communicator& comm) {
    const int rank = comm.rank();
    TrainingState a(OptKind::kAdamW, 7, rank, n_);
    a.train(3);
    Checkpointer ca(a.model, dir_, comm, a.checkpointables());
    const StateDict extras = sample_extras(7, 2);
    EXPECT_FALSE(ca.has_checkpoint());
    ca.save("model_0000002", extras);
    EXPECT_TRUE(ca.has_checkpoint());
    EXPECT_EQ(ca.get_checkpoint_file(), dir_ + "/model_0000002");
    EXPECT_EQ(ca.commits(), 1);

    TrainingState b(OptKind::kAdamW, 99, rank, n_);
    Checkpointer cb(b.model, dir_, comm, b.checkpointables());
    const StateDict got = cb.load(dir_ + "/model_0000002");
    auto diff = state_diff(a.snapshot(), b.snapshot());
    EXPECT_TRUE(diff.empty()) << "rank " << rank << ": " << ::testing::PrintToString(diff);
    diff = state_diff(extras, got);
    EXPECT_TRUE(diff.empty()) << "rank " << rank << ": " << ::testing::PrintToString(diff);
    hashes[static_cast<size_t>(rank)] = state_hash(b.snapshot());

    // Training goes on identically from the loaded state.
    a.train(2);
    b.train(2);
    diff = state_diff(a.snapshot(), b.snapshot());
    EXPECT_TRUE(diff.empty()) << "rank " << rank << " after 2 more steps";

    // An asynchronous save of the trained-on state, committed at a later boundary.
    ca.save_async("model_0000004", sample_extras(8, 4));
    EXPECT_TRUE(ca.async_in_flight());
    ca.finish_async();
    EXPECT_FALSE(ca.async_in_flight());
    EXPECT_EQ(ca.get_all_checkpoint_files(),
              (std::vector<std::string>{dir_ + "/model_0000002", dir_ + "/model_0000004"}));

    TrainingState c(OptKind::kAdamW, 55, rank, n_);
    Checkpointer cc(c.model, dir_, comm, c.checkpointables());
    const StateDict resumed = cc.resume_or_load("", /*resume=*/true);
    EXPECT_EQ(cc.loaded_from(), dir_ + "/model_0000004");
    diff = state_diff(a.snapshot(), c.snapshot());
    EXPECT_TRUE(diff.empty()) << "rank " << rank << " resumed: " << ::testing::PrintToString(diff);
    diff = state_diff(sample_extras(8, 4), resumed);
    EXPECT_TRUE(diff.empty()) << "rank " << rank << " resumed extras";
  });
  for (int r = 1; r < n_; ++r) EXPECT_EQ(hashes[r], hashes[0]) << "rank " << r;
  // One shard per rank.
  for (const char* name : {"model_0000002", "model_0000004"}) {
    for (int r = 0; r < n_; ++r) {
      EXPECT_TRUE(stdfs::exists(fmt::format("{}/{}/shard-{:05d}-of-{:05d}.h5", dir_, name, r, n_)))
          << name << " rank " << r;
    }
  }
  EXPECT_EQ(verify_text(dir_ + "/model_0000004"), "");
}

// A fault point that throws on one rank: every rank throws the same CheckpointError, and
// the previous checkpoint stays the committed one.
TEST_P(ThreadCheckpointTest, FaultOnOneRankIsTheSameErrorEverywhere) {
  const std::vector<std::pair<std::string, int>> points = {{"ckpt.before_shard", n_ - 1},
                                                           {"ckpt.during_shard", n_ - 1},
                                                           {"ckpt.after_shards", 0},
                                                           {"ckpt.before_rename", 0}};
  const std::string root = dir_;
  for (const auto& [point, fault_rank] : points) {
    SCOPED_TRACE(point);
    dir_ = root + "/" + point;
    RunOk([&](dist::Communicator& comm) { SaveOn(comm, "model_a", 1); });
    const auto before = tree_checksums(dir_);
    std::vector<std::exception_ptr> errors;
    {
      ScopedFault fault(point, fault_rank, fault_rank);  // armed before the ranks start
      errors = dist::run_ranks(
          n_, [&](dist::Communicator& comm) { SaveOn(comm, "model_b", 2); }, world_options());
    }
    const std::string first = kind_and_message(errors[0]);
    EXPECT_EQ(first.rfind("CheckpointError: ", 0), 0u) << first;
    EXPECT_CONTAINS(first, fmt::format("injected fault at {} (rank {})", point, fault_rank));
    EXPECT_CONTAINS(first, "saving checkpoint '" + dir_ + "/model_b' failed");
    for (int r = 1; r < n_; ++r) EXPECT_EQ(kind_and_message(errors[r]), first) << "rank " << r;
    EXPECT_EQ(last_checkpoint_name(dir_), "model_a");
    EXPECT_EQ(visible_dirs(dir_), std::vector<std::string>{"model_a"});
    const auto after = tree_checksums(dir_);
    for (const auto& [file, sum] : before) {
      EXPECT_TRUE(after.count(file) && after.at(file) == sum) << file << " changed";
    }
    ExpectResumes("model_a", 1);
    RunOk([&](dist::Communicator& comm) { SaveOn(comm, "model_b", 2); });
    ExpectResumes("model_b", 2);
  }
  dir_ = root;
}

// A collective that fails on one rank, at each collective call of a save in turn: no rank
// hangs, every rank throws, and the directory holds a committed state: either the new
// checkpoint is not visible and last_checkpoint still names the old one, or (a failure
// after the commit, in the outcome's broadcast) the new one is whole and named.
TEST_P(ThreadCheckpointTest, CollectiveFailureAtEveryStepOfASave) {
  RunOk([&](dist::Communicator& comm) { SaveOn(comm, "model_base", 1); });
  std::string last = "model_base";
  int failed_saves = 0;
  int committed_anyway = 0;
  std::map<std::string, int> calls;  // op -> calls of it in one save
  for (const char* op : {"all_gather_bytes", "broadcast_bytes", "all_reduce", "barrier"}) {
    for (int fault_rank : {0, n_ - 1}) {
      for (int nth = 1;; ++nth) {
        SCOPED_TRACE(fmt::format("{} call {} on rank {}", op, nth, fault_rank));
        ASSERT_LT(nth, 100) << "a save makes fewer calls";
        const std::string name = fmt::format("model_{}_{}_{}", op, fault_rank, nth);
        dist::ThreadWorld world(n_, world_options());
        world.inject_fault(op, fault_rank, nth);
        const auto errors =
            dist::run_ranks(world, [&](dist::Communicator& comm) { SaveOn(comm, name, 2); });
        int threw = 0;
        for (const auto& e : errors) threw += e ? 1 : 0;
        if (threw == 0) {  // the save makes fewer than nth such calls: it committed
          EXPECT_EQ(last_checkpoint_name(dir_), name);
          last = name;
          calls[op] = nth - 1;
          break;
        }
        ++failed_saves;
        EXPECT_EQ(threw, n_) << "every rank fails; rank 0: " << kind_and_message(errors[0]);
        const std::vector<std::string> visible = visible_dirs(dir_);
        const bool committed = std::count(visible.begin(), visible.end(), name) == 1;
        if (committed) {
          EXPECT_EQ(last_checkpoint_name(dir_), name);
          EXPECT_EQ(verify_text(dir_ + "/" + name), "");
          last = name;
          ++committed_anyway;
        } else {
          EXPECT_EQ(last_checkpoint_name(dir_), last);
        }
      }
    }
  }
  EXPECT_GT(failed_saves, 4);
  std::printf("%d failed saves (%d committed before the failure); calls per save: %s\n",
              failed_saves, committed_anyway, ::testing::PrintToString(calls).c_str());
  // The ranks resume from whatever was committed last.
  ExpectResumes(last, last == "model_base" ? 1 : 2);
}

// The same for resume_or_load: a collective failing at any step of a load fails every
// rank, hangs none, and changes nothing on disk; the next resume works.
TEST_P(ThreadCheckpointTest, CollectiveFailureAtEveryStepOfALoad) {
  RunOk([&](dist::Communicator& comm) { SaveOn(comm, "model_0000002", 1); });
  const auto before = tree_checksums(dir_);
  std::map<std::string, int> calls;  // op -> calls of it in one resume
  for (const char* op :
       {"all_gather_bytes", "broadcast_bytes", "broadcast", "all_reduce", "barrier"}) {
    for (int nth = 1;; ++nth) {
      SCOPED_TRACE(fmt::format("{} call {}", op, nth));
      ASSERT_LT(nth, 200) << "a resume makes fewer calls";
      dist::ThreadWorld world(n_, world_options());
      world.inject_fault(op, n_ - 1, nth);
      const auto errors = dist::run_ranks(world, [&](dist::Communicator& comm) {
        TrainingState fresh(OptKind::kAdamW, 99, comm.rank(), comm.size());
        Checkpointer c(fresh.model, dir_, comm, fresh.checkpointables());
        c.resume_or_load("", /*resume=*/true);
      });
      int threw = 0;
      for (const auto& e : errors) threw += e ? 1 : 0;
      if (threw == 0) {
        calls[op] = nth - 1;
        break;
      }
      EXPECT_EQ(threw, n_) << "every rank fails; rank 0: " << kind_and_message(errors[0]);
    }
  }
  EXPECT_EQ(tree_checksums(dir_), before);
  std::printf("calls per resume: %s\n", ::testing::PrintToString(calls).c_str());
  ExpectResumes("model_0000002", 1);
}

// A per-rank number whose load refuses a negative one: per-rank state this run cannot
// take (say an RNG state of another size).
class Tally : public Stateful {
 public:
  explicit Tally(int64_t v) : value(v) {}
  StateDict state_dict() const override { return {{"value", value}}; }
  void load_state_dict(const StateDict& s) override {
    const int64_t v = state_int(s, "value", "tally");
    if (v < 0) throw Error(fmt::format("tally {} is negative", v));
    value = v;
  }
  int64_t value;
};

// A resume's failed attempt may hand some ranks their per-rank state before another rank
// fails. The older checkpoint that then serves was saved by 1 rank and has none for the
// others: they keep what they had before the resume, not what the failed attempt left.
TEST_P(ThreadCheckpointTest, AFailedAttemptLeavesNoPerRankStateBehind) {
  const auto save = [&](dist::Communicator& comm, const std::string& name, int64_t value) {
    auto model = make_tiny_net(1);
    Tally t(value);
    Checkpointer(model, dir_, comm, {{"tally", {&t, Scope::kPerRank}}})
        .save(name, {{"iteration", int64_t{name == "model_0000001" ? 1 : 2}}});
  };
  const auto one = dist::run_ranks(1, [&](dist::Communicator& comm) { save(comm, "model_0000001", 50); });
  ASSERT_FALSE(one[0]) << kind_and_message(one[0]);
  RunOk([&](dist::Communicator& comm) { save(comm, "model_0000002", comm.rank() == 0 ? -1 : 100 + comm.rank()); });

  std::vector<int64_t> got(static_cast<size_t>(n_));
  RunOk([&](dist::Communicator& comm) {
    auto model = make_tiny_net(2);
    Tally t(7);
    Checkpointer c(model, dir_, comm, {{"tally", {&t, Scope::kPerRank}}});
    c.resume_or_load("", /*resume=*/true);
    EXPECT_EQ(c.loaded_from(), dir_ + "/model_0000001");
    got[static_cast<size_t>(comm.rank())] = t.value;
  });
  std::vector<int64_t> expected(static_cast<size_t>(n_), 7);
  expected[0] = 50;
  EXPECT_EQ(got, expected);
}

// The same where the failed attempt is a local snapshot (checkpoint/local_tier.h) of
// every rank, one node each: its per-rank state is put back before model_0000001 serves.
TEST_P(ThreadCheckpointTest, AFailedLocalAttemptLeavesNoPerRankStateBehind) {
  const auto options = [&](int rank) {
    CheckpointerOptions o;
    LocalTierOptions local;
    local.period = 1;
    local.dir = dir_ + "/local";
    local.node_id = fmt::format("n{}", rank);
    o.local = local;
    return o;
  };
  const auto one = dist::run_ranks(1, [&](dist::Communicator& comm) {
    auto model = make_tiny_net(1);
    Tally t(50);
    Checkpointer(model, dir_, comm, {{"tally", {&t, Scope::kPerRank}}})
        .save("model_0000001", {{"iteration", int64_t{1}}});
  });
  ASSERT_FALSE(one[0]) << kind_and_message(one[0]);
  RunOk([&](dist::Communicator& comm) {
    auto model = make_tiny_net(1);
    Tally t(comm.rank() == 0 ? -1 : 100 + comm.rank());
    Checkpointer c(model, dir_, comm, {{"tally", {&t, Scope::kPerRank}}}, options(comm.rank()));
    c.resume_or_load("", /*resume=*/true);  // model_0000001: its iteration and model
    t.value = comm.rank() == 0 ? -1 : 100 + comm.rank();
    c.snapshot_local(2);
    c.finish_local();
    EXPECT_EQ(c.local_tier()->commits(), 1);
  });

  std::vector<int64_t> got(static_cast<size_t>(n_));
  LogCapture log;
  RunOk([&](dist::Communicator& comm) {
    auto model = make_tiny_net(2);
    Tally t(7);
    Checkpointer c(model, dir_, comm, {{"tally", {&t, Scope::kPerRank}}}, options(comm.rank()));
    c.resume_or_load("", /*resume=*/true);
    EXPECT_EQ(c.loaded_from(), dir_ + "/model_0000001");
    EXPECT_FALSE(c.loaded_from_local());
    got[static_cast<size_t>(comm.rank())] = t.value;
  });
  EXPECT_NE(log.text().find("tally -1 is negative"), std::string::npos) << log.text();
  std::vector<int64_t> expected(static_cast<size_t>(n_), 7);
  expected[0] = 50;
  EXPECT_EQ(got, expected);
}

INSTANTIATE_TEST_SUITE_P(Ranks, ThreadCheckpointTest, ::testing::Values(2, 4),
                         [](const auto& info) { return std::to_string(info.param) + "Ranks"; });

}  // namespace
}  // namespace dtrain::checkpoint
