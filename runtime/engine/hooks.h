// The default hooks (detectron2's engine/hooks.py): iteration timer, LR scheduler,
// periodic metric writer and periodic evaluation.
//
//   trainer.register_hooks({std::make_shared<IterationTimer>(),
//                           std::make_shared<LRSchedulerHook>(scheduler)});
//
// Not thread-safe: a hook is called by its trainer on the training thread, one call at
// a time (HookBase, trainer.h); the collective ones (checkpointing, evaluation) make
// their collective calls there, on every rank at the same iteration.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/checkpointer.h"
#include "runtime/engine/events.h"
#include "runtime/engine/trainer.h"
#include "runtime/optim/optim.h"

namespace dtrain::engine {

// Puts "time" (seconds of each iteration, hooks included) and logs the total at the end.
class IterationTimer : public HookBase {
 public:
  void before_train() override;
  void after_train() override;
  void before_step() override;
  void after_step() override;

 private:
  std::chrono::steady_clock::time_point train_start_, step_start_;
  double step_total_s_ = 0.0;
};

// Puts "lr" (the lr this iteration used) then steps the scheduler.
class LRSchedulerHook : public HookBase {
 public:
  explicit LRSchedulerHook(optim::LRScheduler& scheduler) : scheduler_(scheduler) {}
  void after_step() override;

 private:
  optim::LRScheduler& scheduler_;
};

// Calls every writer each `period` iterations, at the last iteration and after training.
// A resumed run (start_iter > 0) first calls each writer's resume() with its
// WriteSchedule; `eval_period` is the EvalHook's period (nullopt: no evaluation).
class PeriodicWriter : public HookBase {
 public:
  PeriodicWriter(std::vector<std::shared_ptr<EventWriter>> writers, int64_t period,
                 std::optional<int64_t> eval_period = std::nullopt);
  void before_train() override;
  void after_step() override;
  void after_train() override;

 private:
  std::vector<std::shared_ptr<EventWriter>> writers_;
  int64_t period_;
  std::optional<int64_t> eval_period_;
};

// Saves checkpoints through a PeriodicCheckpointer after each step (detectron2's
// hooks.PeriodicCheckpointer): model_<iter> every period, model_final at the end. An
// asynchronous save still in flight when training ends is committed in after_train,
// or, when training stopped by an exception, dropped uncommitted (the exception may
// have reached only this rank, so no collective call is made).
class PeriodicCheckpointerHook : public HookBase {
 public:
  PeriodicCheckpointerHook(checkpoint::PeriodicCheckpointer& periodic,
                           checkpoint::Checkpointer& checkpointer)
      : periodic_(periodic), checkpointer_(checkpointer) {}
  void after_step() override { periodic_.step(trainer_->iter()); }
  void after_train() override;

 private:
  checkpoint::PeriodicCheckpointer& periodic_;
  checkpoint::Checkpointer& checkpointer_;
};

// Snapshots the training state into the node-local tier (CHECKPOINT.LOCAL.PERIOD;
// checkpoint/local_tier.h) after every `period`-th step, at the same point of the step
// as the PeriodicCheckpointerHook's saves, written in the background during the next
// step and committed at its end (waiting for the write if it is still running): a kill
// loses at most `period` iterations. The shards then go to their buddies in the
// background; the next commit waits for them (so a lost node, whose newest snapshot's
// replicas may not have arrived, loses at most 2 x `period`). The last iteration takes none
// (model_final is saved). When training ends normally the job's local snapshots are
// removed (model_final supersedes them); when it stops by an error, the one in flight
// is dropped and the committed ones stay for --resume. Between snapshots (period >= 2),
// where a snapshot is still to come, the tier may make the next shard file ready ahead
// (Checkpointer::prepare_local: the first one created, or a resumed run's files taken
// over), out of the snapshots' stalls.
class LocalSnapshotHook : public HookBase {
 public:
  LocalSnapshotHook(checkpoint::Checkpointer& checkpointer, int64_t period)
      : checkpointer_(checkpointer), period_(period) {}
  void after_step() override;
  void after_train() override;

 private:
  checkpoint::Checkpointer& checkpointer_;
  int64_t period_;
};

// What LocalSnapshotHook does after step `it` (0-based) of a run of `max_iter`
// iterations, snapshotting every `period` >= 1: start a snapshot; else commit the one
// started a step before, if any (`it % period == 0`), or poll; and prepare (a file
// ahead) when a snapshot is still to come.
struct LocalSnapshotStep {
  bool snapshot = false;
  bool commit = false;
  bool prepare = false;
};
LocalSnapshotStep local_snapshot_step(int64_t it, int64_t period, int64_t max_iter);

// Runs `eval_fn` every `period` iterations (period 0: only after the last iteration)
// and puts each returned metric as "eval/<name>". eval_fn is collective: it runs on
// every rank and must return the same metrics everywhere.
class EvalHook : public HookBase {
 public:
  using EvalFn = std::function<std::map<std::string, double>()>;
  EvalHook(int64_t period, EvalFn eval_fn) : period_(period), eval_fn_(std::move(eval_fn)) {}
  void after_step() override;
  void after_train() override;

 private:
  void do_eval();
  int64_t period_;
  EvalFn eval_fn_;
};

}  // namespace dtrain::engine
