// `dtrain launch`: builds the mpirun command that starts one rank per GPU (or per CPU
// slot) on each node, runs it, forwards signals, and restarts a failed or preempted run
// with --resume (torchrun's --max-restarts).
//
//   dtrain launch --nproc-per-node 4 --nnodes 2 --hostfile hosts --max-restarts 3
//       -- train --config-file configs/gpt_tiny_synthetic.yaml   (one command line)
//
// build_mpirun_command() is a pure function (unit-tested); run_launch() does the I/O.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace dtrain::launcher {

struct LaunchOptions {
  int nproc_per_node = 1;        // ranks per node
  int nnodes = 1;                // nodes (more than one needs a hostfile or a scheduler)
  std::string hostfile;          // Open MPI hostfile ("node1 slots=4")
  int max_restarts = 0;          // relaunches after a non-zero exit (with --resume)
  double restart_backoff_s = 1;  // first wait before a restart; doubles, at most 60 s
  bool dry_run = false;          // print the command only
  std::string bind_to = "auto";  // auto | core | socket | none
  std::string mpirun = "mpirun"; // the launcher binary ($DTRAIN_MPIRUN overrides)
  std::vector<std::string> mpi_args;    // extra arguments passed to mpirun verbatim
  std::vector<std::string> train_args;  // everything after "--", starting with "train"
};

// What build_mpirun_command() needs to know about the machine it runs on.
struct LaunchContext {
  bool is_root = false;
  int cores_per_node = 1;                     // physical cores this process may run on
  std::string dtrain_exe;                     // absolute path of this executable
  std::map<std::string, std::string> env;     // the launcher's environment
};

struct MpirunCommand {
  std::map<std::string, std::string> env;  // variables set for mpirun itself
  std::vector<std::string> argv;
  // "VAR=1 mpirun -np 4 ... dtrain train ...", shell-quoted, for printing.
  std::string to_string() const;
};

// Builds the command:
//   mpirun -np <N*M> --map-by ppr:<N>:node[:PE=<c>] --bind-to <core|none>
//          [--hostfile H] [--oversubscribe --mca mpi_yield_when_idle 1]
//          -x OMP_NUM_THREADS=<c> [-x VAR ...] [mpi_args...] <dtrain_exe> train ...
// With bind_to "auto": cores bound (PE=cores/N) when each rank gets at least one core,
// otherwise --bind-to none and --oversubscribe; an explicit "core" with more ranks than
// cores binds with "core:overload-allowed" (mpirun refuses plain core binding then).
// More ranks than cores also sets mpi_yield_when_idle, so that ranks waiting in a
// collective give up their core instead of spinning. Variables forwarded with -x: those
// starting with DTRAIN_, NCCL_, CUDA_, HDF5_, OMP_, MKL_ plus PATH and
// LD_LIBRARY_PATH when set. When running as root, OMPI_ALLOW_RUN_AS_ROOT and
// OMPI_ALLOW_RUN_AS_ROOT_CONFIRM are set for mpirun (and only then). Throws
// dtrain::ConfigError for invalid options (naming the flag). Pure apart from checking
// that the hostfile exists; thread-safe.
MpirunCommand build_mpirun_command(const LaunchOptions& options, const LaunchContext& context);

// train_args with "--resume" added after "train" unless it is already there.
std::vector<std::string> with_resume(const std::vector<std::string>& train_args);

// Physical cores among `cpus` (logical CPU numbers): distinct (physical_package_id,
// core_id) pairs read from <sys_cpu_dir>/cpu<N>/topology/, so hyperthreads of one core
// count once (Open MPI's --bind-to core and PE=<n> count cores, not hardware threads).
// A CPU without readable topology counts as a core of its own; returns at least 1.
int physical_core_count(const std::vector<int>& cpus,
                        const std::string& sys_cpu_dir = "/sys/devices/system/cpu");

// Runs the launch (restart loop included); returns the exit status to exit with: the
// run's status, or 128+signal when it was killed by a signal. SIGINT, SIGTERM and SIGUSR1
// received by the launcher are forwarded to mpirun (the first SIGTERM as SIGUSR1, which
// mpirun passes on to every rank); once the launcher was signalled it never restarts.
// Not thread-safe: call once per process (it installs process-wide signal handlers).
int run_launch(const LaunchOptions& options);

}  // namespace dtrain::launcher
