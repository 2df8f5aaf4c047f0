// Intra-op threads per rank: which setting decides (SYSTEM.NUM_THREADS, then
// OMP_NUM_THREADS, then the CPUs this process may use, divided among the node's ranks),
// and keeping a checkpoint's count on resume so that a resumed run stays bitwise equal.
//
//   ThreadCount t = resolve_threads(probe_thread_inputs(cfg_threads, comm.local_size()));
//   set_intra_op_threads(t);          // at::set_num_threads + remembered for checkpoints
//   ...
//   ThreadCountState state;           // a per-rank Checkpointable: "threads/"
//   checkpointer.resume_or_load(...); // restores state.saved()
//   keep_checkpoint_threads(state.saved());
//
// resolve_threads() is pure (unit-tested with made-up inputs); the rest touches
// process-wide state (the environment, LibTorch's thread pool): call from the main
// thread only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "runtime/base/stateful.h"

namespace dtrain::engine {

// Where a thread count came from, in order of precedence.
enum class ThreadSource { kConfig, kEnv, kCheckpoint, kCgroup, kAffinity, kHardware };

// "SYSTEM.NUM_THREADS", "OMP_NUM_THREADS", "the checkpoint", "cgroup cpu.max",
// "CPU affinity", "hardware threads".
const char* thread_source_name(ThreadSource source);

// What the thread count depends on; probe_thread_inputs() fills it from the process.
struct ThreadInputs {
  int64_t config = 0;                          // SYSTEM.NUM_THREADS (0: automatic)
  std::optional<std::string> omp_num_threads;  // $OMP_NUM_THREADS when set
  int affinity_cpus = 0;                       // CPUs in the affinity mask (0: unknown)
  double cgroup_cpus = 0;                      // cgroup v2 cpu.max quota/period (0: none)
  int hardware_threads = 1;                    // std::thread::hardware_concurrency()
  int local_size = 1;                          // ranks on this node
};

struct ThreadCount {
  int count = 1;
  ThreadSource source = ThreadSource::kHardware;
  std::string detail;   // e.g. "OMP_NUM_THREADS=4", "2 CPUs (CPU affinity) / 2 local ranks"
  std::string warning;  // non-empty when a setting was ignored (e.g. OMP_NUM_THREADS=abc)

  // True when the user chose the count (config or environment), not dtrain.
  bool chosen() const { return source == ThreadSource::kConfig || source == ThreadSource::kEnv; }
};

// SYSTEM.NUM_THREADS > 0 wins; then a positive OMP_NUM_THREADS (its first entry, as in
// "4,2"); then the CPUs this process may use: the affinity mask (else the hardware
// threads), lowered to the cgroup quota when that is smaller, divided among the local
// ranks (at least 1). Pure; thread-safe.
ThreadCount resolve_threads(const ThreadInputs& in);

// ThreadInputs of this process: the environment, sched_getaffinity and the cgroup v2
// cpu.max of this process's cgroup and its ancestors.
ThreadInputs probe_thread_inputs(int64_t config, int local_size);

// The smallest cpu.max quota (quota/period, in CPUs) of the cgroup named in
// `proc_self_cgroup` (the text of /proc/self/cgroup, v2 line "0::/path") and its
// ancestors under `cgroup_root`; 0 when there is none ("max") or it cannot be read.
double cgroup_cpu_limit(const std::string& proc_self_cgroup,
                        const std::string& cgroup_root = "/sys/fs/cgroup");

// Sets LibTorch's intra-op threads and remembers `t` for current_threads().
void set_intra_op_threads(const ThreadCount& t);
// The count set last (before any: LibTorch's own count, source kHardware).
ThreadCount current_threads();

// On resume: with a checkpoint's count `saved` that differs from the current one, an
// automatic count is replaced by it (logged); a chosen one is kept, with one warning
// naming both counts (bitwise equality with the uninterrupted run is lost). Returns
// the count in use afterwards.
ThreadCount keep_checkpoint_threads(std::optional<int64_t> saved);

// The intra-op thread count as checkpoint state ("intra_op_threads"), per rank: saves
// current_threads(), and on load only records the saved count (see saved()).
class ThreadCountState : public Stateful {
 public:
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;
  // The count the loaded checkpoint was written with (nullopt before a load).
  std::optional<int64_t> saved() const { return saved_; }

 private:
  std::optional<int64_t> saved_;
};

}  // namespace dtrain::engine
