// `dtrain train`: load the config, set up the runtime, train or evaluate.
#pragma once

#include <string>
#include <vector>

namespace dtrain::launcher {

struct TrainOptions {
  std::string config_file;
  bool resume = false;
  bool eval_only = false;
  std::vector<std::string> overrides;  // KEY VALUE ...
};

// Exit codes of `dtrain train` (documented in README and docs/OPERATIONS.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;      // training failed
inline constexpr int kExitUsage = 2;      // bad command line or config
// 75 (engine::kExitPreempted): preempted; a checkpoint was committed (or the run was
// cut short by a second signal / the deadline); requeue with --resume.

// Runs `dtrain train`; returns the process exit code. argc/argv go to MPI_Init.
int run_train(const TrainOptions& options, int* argc, char*** argv);

}  // namespace dtrain::launcher
