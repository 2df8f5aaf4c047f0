// Rank and device discovery from the launcher's environment variables, before (or
// without) MPI: which rank this process is, how many there are, and which GPU it takes.
//
//   if (auto env = dtrain::dist::rank_env_from_process()) {
//     int device = dtrain::dist::select_cuda_device(env->local_rank, visible_gpus);
//   }
//
// Launchers are recognized in this priority order (the first complete one wins):
//   1. "openmpi":  OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK,
//                  OMPI_COMM_WORLD_LOCAL_SIZE (mpirun/mpiexec of Open MPI).
//   2. "pmi":      PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS (MPICH/Hydra,
//                  Intel MPI, PMI-based launchers).
//   3. "slurm":    SLURM_PROCID, SLURM_STEP_NUM_TASKS or else SLURM_NTASKS, SLURM_LOCALID,
//                  and the tasks on this node from SLURM_STEP_TASKS_PER_NODE, else
//                  SLURM_TASKS_PER_NODE, else SLURM_NTASKS_PER_NODE (srun).
//   4. "torchrun": RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE.
// MPI launchers come first because an mpirun/mpiexec started inside a SLURM allocation
// (an sbatch script) inherits the allocation's SLURM_* variables, which then describe
// the batch step rather than this process; generic torchrun names come last. Caveat: a
// program run directly in an sbatch script (no srun, no mpirun) sees the batch step's
// SLURM_PROCID=0 and the job's task count.
//
// SLURM per-node lists ("4(x2)", "2,1", "3(x2),1") are indexed by SLURM_NODEID; without
// it the list must be uniform.
//
// Thread-safe (rank_env_from_process as long as no other thread modifies the
// environment meanwhile).
#pragma once

#include <map>
#include <optional>
#include <string>

namespace dtrain::dist {

// This process's place in the job, as the launcher described it.
struct RankEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  // among the ranks on this node
  int local_size = 1;  // ranks on this node
  std::string source;  // "openmpi", "pmi", "slurm" or "torchrun"
};

// Reads the rank environment from `env` (variable name -> value). Returns nullopt when
// no launcher variables are set (a process started alone). A launcher whose rank
// variable is set but which lacks other variables is skipped; if no launcher is complete
// but some were partially set, throws dtrain::Error naming the missing variables.
// Malformed or inconsistent values (not a non-negative integer, rank >= size, ...) throw
// dtrain::Error naming the variable and its value. Thread-safe.
std::optional<RankEnv> rank_env_from(const std::map<std::string, std::string>& env);

// rank_env_from() over this process's environment (environ). Thread-safe as long as no
// other thread modifies the environment meanwhile.
std::optional<RankEnv> rank_env_from_process();

// The CUDA device index (within the visible devices) for the rank with `local_rank`:
// local_rank itself, or 0 when exactly one GPU is visible (the launcher gave each process
// its own GPU, e.g. srun --gpus-per-task=1). Throws dtrain::Error when several GPUs are
// visible but local_rank >= visible_gpus, e.g. "rank has local rank 3 but only 2 GPUs are
// visible (CUDA_VISIBLE_DEVICES=0,1)", or when no GPU is visible. Reads
// CUDA_VISIBLE_DEVICES only for that message.
int select_cuda_device(int local_rank, int visible_gpus);

}  // namespace dtrain::dist
