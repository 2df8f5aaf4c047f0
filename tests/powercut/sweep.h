// Crash-point sweeps over a FaultInjectionEnv (fault_env.h), shared by the in-process
// power-loss tests: run a scenario once to count its mutations, then once per crash point
// with the power cut there, and check what the disk holds afterwards.
//
//   const SweepResult r = sweep([&](Env& env, const std::string& root) { ... },
//                               [&](const std::string& image, const Outcome& o) { return problem; });
//
// Each run gets a fresh root directory (and a fresh image directory for the check);
// both are removed unless the check failed.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/base/env.h"
#include "tests/powercut/fault_env.h"

namespace dtrain::powercut {

// What one run under a FaultInjectionEnv did.
struct Outcome {
  int64_t cut_at = 0;          // the crash point (0: none)
  bool power_cut = false;      // whether the run reached it
  std::string error;           // what the scenario threw ("" when it finished)
  std::vector<std::string> log;  // the mutations performed
};

// Runs the scenario in `root` through `env`; throws whatever the code under test throws.
using Scenario = std::function<void(Env& env, const std::string& root)>;
// Checks the durable image (the root as the disk holds it) after `outcome`; returns what
// is wrong, "" when it is fine.
using Check = std::function<std::string(const std::string& image, const Outcome& outcome)>;

struct Failure {
  int64_t cut_at = 0;
  std::string mutation;  // the log line of the mutation that met the cut
  std::string problem;
};

struct SweepResult {
  std::vector<std::string> reference_log;  // the mutations of an uncut run
  int64_t points = 0;                      // crash points swept (every mutation, and none)
  std::vector<Failure> failures;
};

// A sync to drop (FaultInjectionEnv::drop_sync); nth 0: none.
struct DroppedSync {
  std::string name;
  int64_t nth = 0;
};

// One run with the power cut at mutation `cut_at` (0: never) and sync `drop` dropped,
// checked by `check`; "" or the problem found.
std::string run_once(const Scenario& scenario, const Check& check, int64_t cut_at,
                     const DroppedSync& drop = {}, Outcome* outcome = nullptr);

// Counts the scenario's mutations (an uncut run, itself checked), then cuts at each
// mutation from `first` on in turn, and at none; collects every failed check.
// With `stop_at_first_failure`, stops at the first failed check.
SweepResult sweep(const Scenario& scenario, const Check& check, int64_t first = 1,
                  const DroppedSync& drop = {}, bool stop_at_first_failure = false);

// The mutation test of the scenario's syncs: for each sync of an uncut run, in turn, that
// sync is dropped and the power cut at every mutation until a check fails.
struct SyncVerdict {
  size_t at = 0;          // index of the sync in `log`
  bool caught = false;    // some crash point failed without it
  Failure first;          // the first failure, when caught
};
std::vector<SyncVerdict> drop_each_sync(const Scenario& scenario, const Check& check,
                                        std::vector<std::string>* log);

// A fresh empty directory $TMPDIR/dtrain-powercut-<tag>-XXXXXX.
std::string fresh_dir(const std::string& tag);

}  // namespace dtrain::powercut
