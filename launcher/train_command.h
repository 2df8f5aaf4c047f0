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
  // detectron2's train_net.py launcher flags (launcher/train_flags.h).
  int num_gpus = 1;       // ranks to start on this machine
  int num_machines = 1;   // > 1 only under a launcher
  int machine_rank = 0;
  std::string dist_url;   // ignored, with a note
};

// Exit codes of `dtrain train` (documented in README and docs/OPERATIONS.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;      // training failed
inline constexpr int kExitUsage = 2;      // bad command line or config
// 75 (engine::kExitPreempted): preempted; a checkpoint was committed (or the run was
// cut short by a second signal / the deadline); requeue with --resume.

// Runs `dtrain train` in this process; returns the process exit code. argc/argv go to
// MPI_Init.
int run_train(const TrainOptions& options, int* argc, char*** argv);

// `dtrain train` as the command line asked: detectron2's launcher flags first
// (plan_train_launch; --num-gpus N > 1 runs N ranks through run_launch), else
// run_train(). Returns the process exit code.
int run_train_command(const TrainOptions& options, int* argc, char*** argv);

}  // namespace dtrain::launcher
