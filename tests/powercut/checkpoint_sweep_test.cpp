// Power cuts at every crash point of training with periodic saves, in-process: the
// commit protocol, last_checkpoint and retention (MAX_TO_KEEP 1) over a FaultInjectionEnv
// (fault_env.h), on 1, 2 and 4 ranks (ThreadWorld), sync and async. After each cut the
// durable image must resume the newest checkpoint whose save had returned (or the one
// being saved, if it got committed), exactly the one last_checkpoint names (the newest
// committed one where the tag is not yet durable), bit for bit;
// last_checkpoint is never damaged; the next save leaves no leftovers.
//
// The mutation test drops one sync at a time and checks that the sweep then fails, except
// for the syncs documented as not needed in docs/FORMAT.md ("Which fsync protects
// what"). The FUSE tests (tests/e2e/powercut_e2e.py) cover the same protocol through the
// kernel, with torn writes, on real processes.
#include <gtest/gtest.h>

#include <map>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "checkpoint/checkpointer.h"
#include "checkpoint/retention.h"
#include "checkpoint/save_dir.h"
#include "runtime/dist/local_communicator.h"
#include "runtime/dist/thread_communicator.h"
#include "tests/checkpoint/test_support.h"
#include "tests/powercut/sweep.h"

namespace dtrain::powercut {
namespace {

using checkpoint::Checkpointer;
using checkpoint::CheckpointerOptions;
using checkpoint::PeriodicCheckpointer;
using checkpoint::testing::OptKind;
using checkpoint::testing::TrainingState;
namespace stdfs = std::filesystem;

constexpr uint64_t kSeed = 5;
constexpr int64_t kPeriod = 2;
constexpr int64_t kIters = 4;  // saves at iterations 1 and 3; model_0000001 deleted after 3

struct Layout {
  int world = 1;
  bool async = false;
};

std::string name_of(const ::testing::TestParamInfo<Layout>& info) {
  return fmt::format("np{}_{}", info.param.world, info.param.async ? "async" : "sync");
}

dist::ThreadWorldOptions world_options() {
  dist::ThreadWorldOptions options;
  options.timeout = std::chrono::seconds(60);  // a hang fails the test instead
  return options;
}

// What rank 0 saw of the run's saves.
struct Saves {
  std::mutex mu;
  int64_t committed = -1;  // iteration of the newest save whose commit returned
  int64_t started = -1;    // iteration of the newest save begun
};

// kIters iterations on `world` ranks with a PeriodicCheckpointer saving into root/out.
void train(Env& env, const std::string& root, const Layout& setup, Saves& saves) {
  const auto errors = dist::run_ranks(setup.world, [&](dist::Communicator& comm) {
    TrainingState s(OptKind::kAdamW, kSeed, comm.rank(), setup.world);
    CheckpointerOptions options;
    options.env = &env;
    Checkpointer ckpt(s.model, root + "/out", comm, s.checkpointables(), options);
    PeriodicCheckpointer periodic(ckpt, kPeriod, std::nullopt, /*max_to_keep=*/1, "model", setup.async);
    std::vector<int64_t> started;
    auto record = [&] {
      if (comm.rank() != 0) return;
      std::lock_guard<std::mutex> lock(saves.mu);
      saves.started = started.empty() ? -1 : started.back();
      saves.committed = ckpt.commits() > 0 ? started[static_cast<size_t>(ckpt.commits() - 1)] : -1;
    };
    try {
      for (int64_t it = 0; it < kIters; ++it) {
        s.train(1);
        if ((it + 1) % kPeriod == 0) started.push_back(it);
        record();
        periodic.step(it);
        record();
      }
      periodic.finish();
      record();
    } catch (...) {
      record();
      throw;
    }
  }, world_options());
  for (const auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

// The tag's name when last_checkpoint is there ("" when not); a problem when it is damaged
// or names no committed checkpoint.
std::string check_tag(const std::string& out, std::string* tagged) {
  Env& env = Env::posix();
  try {
    *tagged = checkpoint::save_dir::tagged_name(env, out);
  } catch (const std::exception& e) {
    return std::string("last_checkpoint is damaged: ") + e.what();
  }
  if (!tagged->empty() && env.type_of(out + "/" + *tagged + "/checkpoint.h5") != FileType::kRegular) {
    return "last_checkpoint names '" + *tagged + "', which is not a committed checkpoint";
  }
  return "";
}

// Resumes from image/out on `world` ranks and checks the loaded state; then a save must
// leave no hidden leftovers.
std::string check_resume(const std::string& image, const Layout& setup, const Saves& saves) {
  const std::string out = image + "/out";
  std::string tagged;
  if (std::string p = check_tag(out, &tagged); !p.empty()) return p;
  std::mutex mu;
  std::string problem;
  auto fail = [&](const std::string& p) {
    std::lock_guard<std::mutex> lock(mu);
    if (problem.empty()) problem = p;
  };
  FaultInjectionEnv after(image);  // syncs stay in memory: fast
  const auto errors = dist::run_ranks(setup.world, [&](dist::Communicator& comm) {
    TrainingState fresh(OptKind::kAdamW, kSeed + 1000, comm.rank(), setup.world);
    CheckpointerOptions options;
    options.env = &after;
    Checkpointer ckpt(fresh.model, out, comm, fresh.checkpointables(), options);
    const StateDict extra = ckpt.resume_or_load("", /*resume=*/true);
    const auto it = extra.find("iteration");
    const int64_t loaded = it == extra.end() ? -1 : std::get<int64_t>(it->second);
    if (loaded < saves.committed) {
      fail(fmt::format("resumed from iteration {} ('{}'), but the save of iteration {} had "
                       "returned before the cut", loaded, ckpt.loaded_from(), saves.committed));
    } else if (loaded > saves.started) {
      fail(fmt::format("resumed from iteration {}, never saved", loaded));
    }
    if (tagged.empty() && loaded < 0 &&
        !checkpoint::save_dir::committed_checkpoints(Env::posix(), out).empty()) {
      fail("no last_checkpoint, and the resume ignored the committed checkpoints");
    }
    if (!tagged.empty() && ckpt.loaded_from() != out + "/" + tagged) {
      fail(fmt::format("last_checkpoint names '{}' but the resume loaded '{}'", tagged, ckpt.loaded_from()));
    }
    if (loaded >= 0) {
      TrainingState expected(OptKind::kAdamW, kSeed, comm.rank(), setup.world);
      expected.train(static_cast<int>(loaded + 1));
      const auto diff = checkpoint::testing::state_diff(expected.snapshot(), fresh.snapshot());
      if (!diff.empty()) fail(fmt::format("rank {}: the state of iteration {} differs: {}", comm.rank(), loaded, diff.front()));
    }
    ckpt.save("model_9999999");
  }, world_options());
  for (const auto& e : errors) {
    if (!e) continue;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      fail(std::string("resume or the next save failed: ") + x.what());
    }
  }
  if (problem.empty()) {
    for (const auto& name : Env::posix().children(out)) {
      if (name[0] == '.') return "the save after the resume left '" + name + "' behind";
    }
  }
  return problem;
}

class CheckpointSweep : public ::testing::TestWithParam<Layout> {
 protected:
  // The scenario and its check for this setup (`saves` is reset by each run).
  Scenario scenario() {
    return [this](Env& env, const std::string& root) {
      saves_.committed = saves_.started = -1;
      train(env, root, GetParam(), saves_);
    };
  }
  Check check() {
    return [this](const std::string& image, const Outcome&) { return check_resume(image, GetParam(), saves_); };
  }
  Saves saves_;
};

std::string describe(const std::vector<Failure>& failures) {
  std::string text;
  for (const auto& f : failures) text += fmt::format("\n  cut at {} ({}): {}", f.cut_at, f.mutation, f.problem);
  return text;
}

TEST_P(CheckpointSweep, EveryCrashPointResumesTheNewestCommittedCheckpointBitwise) {
  const SweepResult r = sweep(scenario(), check());
  // Two saves and a delete: a dozen mutations at the very least.
  EXPECT_GE(r.reference_log.size(), 12u);
  EXPECT_EQ(r.points, static_cast<int64_t>(r.reference_log.size()) + 1);
  EXPECT_TRUE(r.failures.empty()) << r.failures.size() << " of " << r.points << " crash points failed:"
                                  << describe(r.failures);
  std::cout << fmt::format("[ sweep    ] np{} {}: {} crash points, {} failed; the mutations:\n", GetParam().world,
                           GetParam().async ? "async" : "sync", r.points, r.failures.size());
  for (size_t i = 0; i < r.reference_log.size(); ++i) std::cout << fmt::format("  {:3} {}\n", i + 1, r.reference_log[i]);
}

INSTANTIATE_TEST_SUITE_P(Setups, CheckpointSweep,
                         ::testing::Values(Layout{1, false}, Layout{1, true}, Layout{2, false},
                                           Layout{2, true}, Layout{4, false}),
                         name_of);

// A save over an existing checkpoint of the same name (model_final saved again, as a
// second run of the same config does): swapped in with RENAME_EXCHANGE, the old one
// deleted. Every crash point leaves the old or the new model_final, whole.
void save_twice(Env& env, const std::string& root, Saves& saves) {
  dist::LocalCommunicator comm;
  TrainingState s(OptKind::kAdamW, kSeed, 0, 1);
  CheckpointerOptions options;
  options.env = &env;
  Checkpointer ckpt(s.model, root + "/out", comm, s.checkpointables(), options);
  for (int64_t it = 0; it < 2; ++it) {
    s.train(1);
    saves.started = it;
    ckpt.save("model_final", {{"iteration", it}});
    saves.committed = it;
  }
}

TEST(CheckpointSweepReplace, SavingOverAnExistingCheckpointKeepsTheOldOrTheNewWhole) {
  Saves saves;
  const Layout layout{1, false};
  const SweepResult r = sweep(
      [&](Env& env, const std::string& root) {
        saves.committed = saves.started = -1;
        save_twice(env, root, saves);
      },
      [&](const std::string& image, const Outcome&) { return check_resume(image, layout, saves); });
  const bool exchanged = std::any_of(r.reference_log.begin(), r.reference_log.end(),
                                     [](const std::string& m) { return m.rfind("exchange ", 0) == 0; });
  EXPECT_TRUE(exchanged) << "the second save did not use RENAME_EXCHANGE";
  EXPECT_TRUE(r.failures.empty()) << r.failures.size() << " of " << r.points << " crash points failed:"
                                  << describe(r.failures);
  std::cout << fmt::format("[ sweep    ] replace: {} crash points, {} failed\n", r.points, r.failures.size());
}

// The syncs that no crash point needs (docs/FORMAT.md, "Which fsync protects what"):
// - the save directory's sync right after a commit rename, and right after retention's
//   rename to ".deleting-": they only order two renames that a later sync of the same
//   directory makes durable together (the tag's rename; the next save's);
// - the save directory's sync after the first save's tag rename: without a durable tag, a
//   resume takes the newest committed checkpoint, which is that save's.
bool not_needed(const std::vector<std::string>& log, size_t at) {
  static const std::regex commit_rename(R"(^(rename /out/\.model_\d+\.tmp-\w+ -> |exchange /out/\.model_\d+\.tmp-\w+ <-> )/out/model_\d+$)");
  static const std::regex to_deleting(R"(^rename /out/model_\d+ -> /out/\.model_\d+\.deleting-\w+$)");
  static const std::regex tag_rename(R"(^rename /out/\.last_checkpoint\.tmp-\w+ -> /out/last_checkpoint$)");
  if (log[at] != "sync /out" || at == 0) return false;
  const std::string& before = log[at - 1];
  if (std::regex_match(before, commit_rename) || std::regex_match(before, to_deleting)) return true;
  if (!std::regex_match(before, tag_rename)) return false;
  for (size_t i = 0; i + 1 < at; ++i) {
    if (std::regex_match(log[i], tag_rename)) return false;  // not the first tag
  }
  return true;
}

TEST(CheckpointMutation, EverySyncThatIsNeededIsCaughtWhenDropped) {
  const Layout setup{1, false};
  Saves saves;
  Scenario scenario = [&](Env& env, const std::string& root) {
    saves.committed = saves.started = -1;
    train(env, root, setup, saves);
  };
  Check check = [&](const std::string& image, const Outcome&) { return check_resume(image, setup, saves); };
  std::vector<std::string> log;
  const auto verdicts = drop_each_sync(scenario, check, &log);
  int64_t caught = 0;
  std::vector<std::string> missed;
  for (const auto& v : verdicts) {
    caught += v.caught ? 1 : 0;
    std::cout << fmt::format("  {:3} {:<60} {}\n", v.at + 1, log[v.at],
                             v.caught ? fmt::format("caught: cut at {}: {}", v.first.cut_at, v.first.problem.substr(0, 100))
                                      : "not caught");
    if (!v.caught && !not_needed(log, v.at)) missed.push_back(fmt::format("#{} {}", v.at + 1, log[v.at]));
    if (v.caught && not_needed(log, v.at)) {
      ADD_FAILURE() << "dropping '" << log[v.at] << "' (mutation " << v.at + 1
                    << ") was caught, but docs/FORMAT.md calls it not needed: " << v.first.problem;
    }
  }
  EXPECT_GE(verdicts.size(), 14u);
  EXPECT_TRUE(missed.empty()) << "no crash point notices these syncs missing: " << ::testing::PrintToString(missed);
  std::cout << fmt::format("[ mutation ] {} of {} syncs caught when dropped; the others are not needed\n", caught,
                           verdicts.size());
}

}  // namespace
}  // namespace dtrain::powercut
