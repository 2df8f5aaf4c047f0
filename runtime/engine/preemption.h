// Preemption: a Boost.Asio watcher for SIGTERM/SIGUSR1 (SLURM's --signal) and the hook
// that turns a signal into "all ranks save a checkpoint at the next iteration boundary,
// then exit with kExitPreempted (75, EX_TEMPFAIL: requeue me)".
//
//   PreemptionWatcher watcher({SIGTERM, SIGUSR1}, /*deadline_s=*/120);
//   trainer.register_hooks({std::make_shared<PreemptionHook>(watcher, checkpointer, comm)});
//   try { trainer.train(...); } catch (const Preempted&) { return kExitPreempted; }
//
// The signal handler only records the signal (on the watcher's own thread), also as the
// process-wide stop request of runtime/base/interrupt.h, so that a download in progress
// (MODEL.WEIGHTS from a URL) gives up at once with dtrain::Interrupted. At the next
// iteration boundary the ranks agree with one all-reduce of a flag, so a signal to any
// single rank is enough. A second signal, or the deadline passing before the save is
// committed, exits the process at once with kExitPreempted; committed checkpoints are
// never touched (an interrupted save leaves only a hidden temporary directory). The same
// signal again within kRepeatWindowS of the first is taken as one event delivered twice
// (under SLURM a task gets SIGTERM from its step and again through srun) and ignored.
// A signal during the last iteration lets the run finish normally (status 0).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/checkpointer.h"
#include "runtime/base/error.h"
#include "runtime/dist/communicator.h"
#include "runtime/engine/trainer.h"

namespace dtrain::engine {

// Exit status of a preempted run: EX_TEMPFAIL from <sysexits.h>.
inline constexpr int kExitPreempted = 75;

// A repeat of the first signal within this many seconds is a duplicate, not a second
// signal.
inline constexpr double kRepeatWindowS = 1.0;

// Thrown (on every rank together) after the preemption checkpoint was committed.
class Preempted : public Error {
 public:
  using Error::Error;
};

// Signal number for "SIGTERM", "TERM", "SIGUSR1", "USR1", ... Throws ConfigError naming
// CHECKPOINT.PREEMPT_SIGNALS for an unknown or uncatchable name.
int signal_from_name(const std::string& name);

// Watches signals on a background thread. Thread-safe: requested() may be called from
// any thread. Only one watcher should exist per process (it owns the signals' handling
// while alive and restores the defaults when destroyed).
class PreemptionWatcher {
 public:
  PreemptionWatcher(const std::vector<int>& signals, double deadline_s);
  ~PreemptionWatcher();
  PreemptionWatcher(const PreemptionWatcher&) = delete;
  PreemptionWatcher& operator=(const PreemptionWatcher&) = delete;

  // Whether a watched signal arrived in this process.
  bool requested() const { return first_signal_.load() != 0; }
  // The first signal received (0: none).
  int signal() const { return first_signal_.load(); }
  // Seconds to wait, after the first signal, before exiting without a save.
  double deadline_s() const { return deadline_s_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<int> first_signal_{0};
  double deadline_s_;
};

// After every step but the last: all-reduce (max) of the local flag; if any rank was
// signalled, all ranks save "model_<iter:07d>" (unless the periodic checkpointer just
// saved it; the save tags it in last_checkpoint), log where they stopped, and throw
// Preempted. Collective.
class PreemptionHook : public HookBase {
 public:
  PreemptionHook(PreemptionWatcher& watcher, checkpoint::Checkpointer& checkpointer,
                 dist::Communicator& comm)
      : watcher_(watcher), checkpointer_(checkpointer), comm_(comm) {}
  void after_step() override;

 private:
  PreemptionWatcher& watcher_;
  checkpoint::Checkpointer& checkpointer_;
  dist::Communicator& comm_;
};

}  // namespace dtrain::engine
