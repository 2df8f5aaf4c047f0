// A full disk (ENOSPC) or an I/O error (EIO) at every file-system step of training with
// periodic saves and retention, in-process over a FaultInjectionEnv (fault_env.h): the
// error names the file and the cause; nothing already saved is lost (last_checkpoint names
// a checkpoint that verifies, at least as new as the last save that returned); under
// CHECKPOINT.ON_SAVE_ERROR stop the run stops and a resume finishes it bitwise equal to an
// uninterrupted run, under warn it goes on, says why, and ends with the same state.
// A shard write that HDF5 itself fails is the FUSE tests' case (e2e.powercut_enospc_*).
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "checkpoint/checkpointer.h"
#include "checkpoint/inspect.h"
#include "checkpoint/retention.h"
#include "checkpoint/save_dir.h"
#include "runtime/dist/local_communicator.h"
#include "tests/checkpoint/test_support.h"
#include "tests/powercut/sweep.h"

namespace dtrain::powercut {
namespace {

using checkpoint::Checkpointer;
using checkpoint::CheckpointerOptions;
using checkpoint::OnSaveError;
using checkpoint::PeriodicCheckpointer;
using checkpoint::testing::OptKind;
using checkpoint::testing::TrainingState;

constexpr uint64_t kSeed = 11;
constexpr int64_t kPeriod = 2;
constexpr int64_t kIters = 6;  // saves at 1, 3, 5; MAX_TO_KEEP 1 deletes 1 and 3

// Trains from whatever `out` holds (resume) to kIters through `env`; returns the number of
// periodic saves skipped under warn. Throws what a stopped run throws.
int64_t train(Env& env, const std::string& out, OnSaveError on_error, TrainingState& s) {
  dist::LocalCommunicator comm;
  CheckpointerOptions options;
  options.env = &env;
  Checkpointer ckpt(s.model, out, comm, s.checkpointables(), options);
  const StateDict extra = ckpt.resume_or_load("", /*resume=*/true);
  const auto it = extra.find("iteration");
  const int64_t start = it == extra.end() ? 0 : std::get<int64_t>(it->second) + 1;
  PeriodicCheckpointer periodic(ckpt, kPeriod, std::nullopt, /*max_to_keep=*/1, "model", false, on_error);
  for (int64_t i = start; i < kIters; ++i) {
    s.train(1);
    periodic.step(i);
  }
  return periodic.failed_saves();
}

// The tag names a checkpoint that verifies, of an iteration >= `at_least`; "" or why not.
std::string check_tag(const std::string& out, int64_t at_least) {
  const std::string name = checkpoint::save_dir::tagged_name(Env::posix(), out);
  if (name.empty()) return at_least >= 0 ? "last_checkpoint is gone" : "";
  const auto problems = checkpoint::verify_checkpoint(out + "/" + name);
  if (!problems.empty()) return "last_checkpoint names " + name + ", which does not verify: " + problems.front();
  const int64_t iteration = checkpoint::load_index(out + "/" + name).iteration;
  if (iteration < at_least) return fmt::format("last_checkpoint names iteration {}, older than {}", iteration, at_least);
  return "";
}

std::string state_problem(const TrainingState& got) {
  TrainingState expected(OptKind::kSGD, kSeed, 0, 1);
  expected.train(static_cast<int>(kIters));
  const auto diff = checkpoint::testing::state_diff(expected.snapshot(), got.snapshot());
  return diff.empty() ? "" : "the final state differs: " + diff.front();
}

struct Case {
  int err;
  OnSaveError on_error;
};

class SaveErrorSweep : public ::testing::TestWithParam<Case> {};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return fmt::format("{}_{}", info.param.err == ENOSPC ? "enospc" : "eio",
                     info.param.on_error == OnSaveError::kStop ? "stop" : "warn");
}

TEST_P(SaveErrorSweep, EveryStepFailsCleanlyAndNothingSavedIsLost) {
  const Case c = GetParam();
  int64_t mutations = 0;
  {
    const std::string root = fresh_dir("enospc-ref");
    FaultInjectionEnv env(root);
    TrainingState s(OptKind::kSGD, kSeed, 0, 1);
    train(env, root + "/out", c.on_error, s);
    mutations = env.mutations();
    ASSERT_EQ(state_problem(s), "");
    std::filesystem::remove_all(root);
  }
  ASSERT_GE(mutations, 30);
  std::vector<std::string> failures;
  for (int64_t n = 1; n <= mutations; ++n) {
    const std::string root = fresh_dir("enospc");
    const std::string out = root + "/out";
    FaultInjectionEnv env(root);
    env.fail_at(n, c.err);
    TrainingState s(OptKind::kSGD, kSeed, 0, 1);
    std::string error, problem;
    int64_t skipped = 0;
    checkpoint::testing::LogCapture log;
    try {
      skipped = train(env, out, c.on_error, s);
    } catch (const std::exception& e) {
      error = e.what();
    }
    const std::string failed = env.failed_path();
    const std::string cause = std::strerror(c.err);
    const std::string said = error + "\n" + log.text();  // the error, or a warning
    const auto where = env.log();
    if (failed.empty()) {
      problem = "the failure was never reached";
    } else if (said.find(failed) == std::string::npos || said.find(cause) == std::string::npos) {
      // The error names the file and the cause (under warn: the warning does).
      problem = fmt::format("the error does not name '{}' and '{}': {}", failed, cause,
                            (said.empty() ? std::string("(nothing)") : said.substr(0, 300)));
    } else if (c.on_error == OnSaveError::kWarn && (!error.empty() || skipped > 1)) {
      problem = fmt::format("under warn the run stopped or skipped {} saves: {}", skipped, error);
    }
    if (problem.empty() && !error.empty()) {
      // Stopped: what was saved is intact; a resume finishes the run.
      problem = check_tag(out, -1);
      if (problem.empty()) {
        FaultInjectionEnv after(root);
        TrainingState resumed(OptKind::kSGD, kSeed, 0, 1);  // a restart builds the same model
        train(after, out, c.on_error, resumed);
        problem = state_problem(resumed);
      }
    } else if (problem.empty()) {
      // Went on: the same final state; the last save, unless it was the one skipped.
      problem = state_problem(s);
      if (problem.empty()) problem = check_tag(out, skipped == 0 ? kIters - 1 : -1);
    }
    if (!problem.empty()) {
      failures.push_back(fmt::format("{} failing at {} ({}): {}", cause, n,
                                     static_cast<size_t>(n - 1) < where.size() ? where[n - 1] : "?", problem));
    } else {
      std::filesystem::remove_all(root);
    }
  }
  EXPECT_TRUE(failures.empty()) << failures.size() << " of " << mutations << " failed:\n" << ::testing::PrintToString(failures);
  std::cout << fmt::format("[ sweep    ] {}: {} failing steps, {} problems\n", case_name({c, 0}), mutations, failures.size());
}

INSTANTIATE_TEST_SUITE_P(Errors, SaveErrorSweep,
                         ::testing::Values(Case{ENOSPC, OnSaveError::kStop}, Case{ENOSPC, OnSaveError::kWarn},
                                           Case{EIO, OnSaveError::kStop}),
                         case_name);

}  // namespace
}  // namespace dtrain::powercut
