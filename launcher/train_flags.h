// detectron2's launcher flags on `dtrain train` (train_net.py's --num-gpus,
// --num-machines, --machine-rank, --dist-url): what dtrain does with each.
//
//   dtrain train --num-gpus 2 --config-file F ...   // = dtrain launch --nproc-per-node 2
//                                                  //     -- train --config-file F ...
//
// dtrain's ranks meet through MPI, not at a URL: --num-gpus N > 1 starts N ranks on this
// machine through `dtrain launch`'s code; several machines are started by one command
// (dtrain launch --hostfile, mpirun, srun), so --num-machines > 1 and --machine-rank > 0
// are refused with that advice, and --dist-url is ignored with a note. Under a launcher
// (mpirun, srun: the process is already one of several ranks) the flags are ignored with
// a note. Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "launcher/train_command.h"
#include "runtime/dist/rank_env.h"

namespace dtrain::launcher {

// What `dtrain train` should do with detectron2's flags.
struct TrainLaunchPlan {
  int spawn_ranks = 0;              // > 0: start this many local ranks (dtrain launch)
  std::vector<std::string> notes;   // printed on stderr (by rank 0 of a launched job)
};

// Decides from the flags and the launcher environment (`env`: rank_env_from_process()).
// Throws ConfigError for what dtrain cannot do (several machines without a launcher, a
// machine rank > 0, counts < 1), naming the flag and what to run instead.
TrainLaunchPlan plan_train_launch(const TrainOptions& options,
                                  const std::optional<dist::RankEnv>& env);

// The arguments of the ranks --num-gpus starts: "train" and the same options, without
// detectron2's launcher flags (so that no rank launches again).
std::vector<std::string> train_args_for_ranks(const TrainOptions& options);

}  // namespace dtrain::launcher
