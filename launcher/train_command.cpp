// `dtrain train` (see train_command.h).
#include "launcher/train_command.h"

#include <mpi.h>

#include <cstdio>
#include <exception>
#include <optional>

#include "runtime/base/error.h"
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
  cfg.freeze();
  return cfg;
}

}  // namespace

int run_train(const TrainOptions& options, int* argc, char*** argv) {
  engine::Runtime runtime(argc, argv);
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
    engine::default_setup(*cfg, *comm);
    engine::DefaultTrainer trainer(*cfg, comm);
    trainer.resume_or_load(options.resume);
    if (options.eval_only) {
      trainer.test();
      return kExitOk;
    }
    trainer.train();
    return kExitOk;
  } catch (const engine::Preempted& e) {
    return engine::kExitPreempted;
  } catch (const ConfigError& e) {
    if (runtime.rank() == 0) std::fprintf(stderr, "dtrain train: %s\n", e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    DTRAIN_LOG_ERROR("dtrain train failed: {}", e.what());
    if (runtime.world_size() > 1) {
      // Other ranks may be blocked in a collective: take the whole job down.
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, kExitError);
    }
    return kExitError;
  }
}

}  // namespace dtrain::launcher
