// Default hooks: timer, LR scheduler, periodic writer, evaluation.
#include "runtime/engine/hooks.h"

#include "runtime/base/logging.h"

namespace dtrain::engine {
namespace {

double seconds_between(std::chrono::steady_clock::time_point a,
                       std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

void IterationTimer::before_train() {
  train_start_ = std::chrono::steady_clock::now();
  step_total_s_ = 0.0;
}

void IterationTimer::after_train() {
  const double total = seconds_between(train_start_, std::chrono::steady_clock::now());
  const int64_t iters = trainer_->iter() - trainer_->start_iter();
  if (iters > 0) {
    DTRAIN_LOG_INFO("Overall training speed: {} iterations in {} ({:.4f} s / it)", iters,
                    format_duration(step_total_s_), step_total_s_ / static_cast<double>(iters));
  }
  DTRAIN_LOG_INFO("Total training time: {} ({} on hooks and other overhead)",
                  format_duration(total), format_duration(total - step_total_s_));
  DTRAIN_LOG_DEBUG("Training loop: {:.4f} s, of which steps {:.4f} s, {} iterations", total, step_total_s_,
                   iters);
}

void IterationTimer::before_step() { step_start_ = std::chrono::steady_clock::now(); }

void IterationTimer::after_step() {
  const double s = seconds_between(step_start_, std::chrono::steady_clock::now());
  step_total_s_ += s;
  trainer_->storage().put_scalar("time", s);
}

void LRSchedulerHook::after_step() {
  trainer_->storage().put_scalar("lr", scheduler_.current_lr(), /*smoothing_hint=*/false);
  scheduler_.step();
}

void PeriodicCheckpointerHook::after_train() {
  if (trainer_->stopped_by_exception()) {
    if (checkpointer_.async_in_flight()) {
      DTRAIN_LOG_WARN("Dropping the asynchronous checkpoint save in flight: training stopped "
                      "by an error");
    }
    checkpointer_.abandon_async();
  } else {
    periodic_.finish();
  }
}

LocalSnapshotStep local_snapshot_step(int64_t it, int64_t period, int64_t max_iter) {
  LocalSnapshotStep step;
  if ((it + 1) % period == 0 && it < max_iter - 1) {
    step.snapshot = true;  // the last iteration takes none: model_final is saved
    return step;
  }
  step.commit = it % period == 0;
  // The next iteration s > it with (s + 1) % period == 0.
  const int64_t next_snapshot = (it + period) / period * period - 1;
  step.prepare = next_snapshot < max_iter - 1;
  return step;
}

void LocalSnapshotHook::after_step() {
  const int64_t it = trainer_->iter();
  const LocalSnapshotStep step = local_snapshot_step(it, period_, trainer_->max_iter());
  if (step.snapshot) {
    checkpointer_.snapshot_local(it);
    return;
  }
  if (step.commit) {
    // One step after a snapshot: it commits now, waiting for a write still running, so
    // that a kill loses at most `period` iterations (the snapshot before it is committed).
    // Its replicas go to the buddies in the background.
    checkpointer_.commit_local();
  } else {
    checkpointer_.poll_local();
  }
  if (step.prepare) checkpointer_.prepare_local(it);
}

void LocalSnapshotHook::after_train() {
  if (trainer_->stopped_by_exception()) {
    checkpointer_.abandon_local();
  } else if (trainer_->iter() >= trainer_->max_iter() - 1) {
    checkpointer_.end_local();
  } else {
    checkpointer_.finish_local();  // stopped early (preempted): keep them
  }
}

PeriodicWriter::PeriodicWriter(std::vector<std::shared_ptr<EventWriter>> writers, int64_t period,
                               std::optional<int64_t> eval_period)
    : writers_(std::move(writers)), period_(period > 0 ? period : 20), eval_period_(eval_period) {}

void PeriodicWriter::before_train() {
  // After a resume, records of the iterations about to be written again are dropped; a
  // run starting at 0 appends, as detectron2 does.
  if (trainer_->start_iter() > 0) {
    const WriteSchedule schedule{trainer_->start_iter(), trainer_->max_iter(), period_, eval_period_};
    for (auto& w : writers_) w->resume(schedule);
  }
}

void PeriodicWriter::after_step() {
  const int64_t it = trainer_->iter();
  if ((it + 1) % period_ == 0 || it == trainer_->max_iter() - 1) {
    for (auto& w : writers_) w->write(trainer_->storage());
  }
}

void PeriodicWriter::after_train() {
  for (auto& w : writers_) {
    w->write(trainer_->storage());
    w->close();
  }
}

void EvalHook::do_eval() {
  auto metrics = eval_fn_();
  for (const auto& [name, value] : metrics) {
    trainer_->storage().put_scalar("eval/" + name, value, /*smoothing_hint=*/false);
  }
}

void EvalHook::after_step() {
  const int64_t next = trainer_->iter() + 1;
  if (period_ > 0 && next % period_ == 0 && next != trainer_->max_iter()) do_eval();
}

void EvalHook::after_train() {
  // Only after a complete run (not when training stopped on an exception).
  if (trainer_->iter() >= trainer_->max_iter()) do_eval();
}

}  // namespace dtrain::engine
