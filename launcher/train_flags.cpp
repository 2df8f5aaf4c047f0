// detectron2's launcher flags on `dtrain train` (see train_flags.h).
#include "launcher/train_flags.h"

#include <fmt/format.h>

#include "runtime/base/error.h"

namespace dtrain::launcher {
namespace {

constexpr const char* kInstead =
    "dtrain starts the ranks of all machines with one command: dtrain launch --nnodes M "
    "--nproc-per-node N --hostfile H -- train ..., mpirun, or srun (launcher/slurm/"
    "train.sbatch); see docs/OPERATIONS.md";

}  // namespace

TrainLaunchPlan plan_train_launch(const TrainOptions& o, const std::optional<dist::RankEnv>& env) {
  DTRAIN_CHECK_T(ConfigError, o.num_gpus >= 1, "--num-gpus must be >= 1, got {}", o.num_gpus);
  DTRAIN_CHECK_T(ConfigError, o.num_machines >= 1, "--num-machines must be >= 1, got {}",
                 o.num_machines);
  DTRAIN_CHECK_T(ConfigError, o.machine_rank >= 0 && o.machine_rank < o.num_machines,
                 "--machine-rank must be in [0, --num-machines) = [0, {}), got {}",
                 o.num_machines, o.machine_rank);
  TrainLaunchPlan plan;
  if (!o.dist_url.empty()) {
    plan.notes.push_back(fmt::format(
        "--dist-url {} is ignored: dtrain's ranks find each other through MPI (mpirun, srun "
        "or dtrain launch), not at a URL",
        o.dist_url));
  }
  const bool flags_given = o.num_gpus > 1 || o.num_machines > 1 || o.machine_rank > 0;
  if (env && env->world_size > 1) {
    // Already started as one of several ranks: the launcher decided the layout.
    if (flags_given) {
      plan.notes.push_back(fmt::format(
          "--num-gpus/--num-machines/--machine-rank are ignored: this process is one of {} "
          "ranks ({} on this node) started by {}",
          env->world_size, env->local_size, env->source));
    }
    return plan;
  }
  DTRAIN_CHECK_T(ConfigError, o.num_machines == 1,
                 "--num-machines {}: dtrain does not start one process per machine that meets "
                 "the others at a --dist-url; {}",
                 o.num_machines, kInstead);
  if (o.num_gpus > 1) plan.spawn_ranks = o.num_gpus;
  return plan;
}

std::vector<std::string> train_args_for_ranks(const TrainOptions& o) {
  std::vector<std::string> args{"train"};
  if (!o.config_file.empty()) args.insert(args.end(), {"--config-file", o.config_file});
  if (o.resume) args.push_back("--resume");
  if (o.eval_only) args.push_back("--eval-only");
  args.insert(args.end(), o.overrides.begin(), o.overrides.end());
  return args;
}

}  // namespace dtrain::launcher
