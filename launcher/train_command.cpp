// `dtrain train` (see train_command.h): in this process, or as N local ranks (--num-gpus).
#include "launcher/train_command.h"

#include <mpi.h>

#include <cstdio>
#include <exception>
#include <optional>

#include "launcher/launch_command.h"
#include "launcher/train_flags.h"
#include "runtime/base/error.h"
#include "runtime/base/interrupt.h"
#include "runtime/base/logging.h"
#include "runtime/engine/default_trainer.h"
#include "runtime/engine/preemption.h"
#include "runtime/engine/runtime.h"

namespace dtrain::launcher {
namespace {

Config load_config(const TrainOptions& options) {
  Config cfg = Config::defaults();
  if (!options.config_file.empty()) cfg.merge_file(options.config_file);
  cfg.merge_overrides(options.overrides);
  return cfg;
}

// dtrain train on `runtime`; returns the exit status.
int train_on(engine::Runtime& runtime, const TrainOptions& options) {
  std::optional<Config> cfg;
  try {
    cfg.emplace(load_config(options));
  } catch (const Error& e) {
    // Every rank reads the same files and fails the same way; rank 0 reports.
    if (runtime.rank() == 0) std::fprintf(stderr, "dtrain train: %s\n", e.what());
    return kExitUsage;
  }
  try {
    auto comm = runtime.connect(*cfg);
    cfg->set("SEED", engine::resolve_seed(*cfg, *comm, options.resume));
    cfg->freeze();
    engine::default_setup(*cfg, *comm);
    engine::DefaultTrainer trainer(*cfg, comm);
    trainer.resume_or_load(options.resume);
    if (options.eval_only) {
      trainer.test();
      return kExitOk;
    }
    trainer.train();
    return kExitOk;
  } catch (const engine::Preempted&) {
    return engine::kExitPreempted;
  } catch (const Interrupted& e) {
    // A termination signal during the start-up (e.g. downloading MODEL.WEIGHTS): every rank
    // stopped together, nothing was saved or cached; the batch script may requeue.
    DTRAIN_LOG_WARN("dtrain train stopped before training: {}; exiting with status {}", e.what(),
                    engine::kExitPreempted);
    return engine::kExitPreempted;
  } catch (const ConfigError& e) {
    if (runtime.rank() == 0) std::fprintf(stderr, "dtrain train: %s\n", e.what());
    return kExitUsage;
  } catch (const FloatingPointError& e) {
    // Every rank stopped at the same iteration with this error (SimpleTrainer agrees on
    // it), so no rank is left in a collective: each exits with the error status.
    DTRAIN_LOG_ERROR("dtrain train failed: {}", e.what());
    return kExitError;
  } catch (const std::exception& e) {
    DTRAIN_LOG_ERROR("dtrain train failed: {}", e.what());
    // An error every rank threw at the same step (e.g. a save that failed on a full disk)
    // leaves no rank in a collective: each exits with the error status.
    if (runtime.world_size() > 1 && !agreed_on_every_rank(e)) {
      // Other ranks may be blocked in a collective: take the whole job down.
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, kExitError);
    }
    return kExitError;
  }
}

}  // namespace

int run_train(const TrainOptions& options, int* argc, char*** argv) {
  engine::Runtime runtime(argc, argv);
  const int status = train_on(runtime, options);
  runtime.end(status);
  return status;
}

int run_train_command(const TrainOptions& options, int* argc, char*** argv) {
  std::optional<dist::RankEnv> env;
  TrainLaunchPlan plan;
  try {
    env = dist::rank_env_from_process();
    plan = plan_train_launch(options, env);
  } catch (const Error& e) {
    std::fprintf(stderr, "dtrain train: %s\n", e.what());
    return kExitUsage;
  }
  if (!env || env->rank == 0) {
    for (const std::string& note : plan.notes) {
      std::fprintf(stderr, "dtrain train: %s\n", note.c_str());
    }
  }
  if (plan.spawn_ranks == 0) return run_train(options, argc, argv);
  // The same path as `dtrain launch --nproc-per-node N -- train ...`.
  LaunchOptions launch;
  launch.nproc_per_node = plan.spawn_ranks;
  launch.train_args = train_args_for_ranks(options);
  try {
    return run_launch(launch);
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "dtrain train: %s\n", e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dtrain train: %s\n", e.what());
    return kExitError;
  }
}

}  // namespace dtrain::launcher
