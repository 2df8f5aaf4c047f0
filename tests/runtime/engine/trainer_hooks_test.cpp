// Unit tests of TrainerBase (hook call order, exceptions) and of the EvalHook and
// PeriodicWriter periods, with a trainer whose steps only record themselves.
#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/optim/sgd.h>

#include "runtime/engine/events.h"
#include "runtime/engine/hooks.h"
#include "runtime/engine/trainer.h"
#include "runtime/optim/optim.h"

namespace dtrain::engine {
namespace {

using Log = std::vector<std::string>;

// A trainer whose run_step logs "step <iter>", puts "total_loss" and throws at
// `throw_at` (when >= 0).
class RecordingTrainer : public TrainerBase {
 public:
  explicit RecordingTrainer(Log* log, int64_t throw_at = -1) : log_(log), throw_at_(throw_at) {}
  void run_step() override {
    log_->push_back("step " + std::to_string(iter()));
    if (iter() == throw_at_) throw std::runtime_error("boom at " + std::to_string(iter()));
    storage().put_scalar("total_loss", static_cast<double>(iter()));
  }

 private:
  Log* log_;
  int64_t throw_at_;
};

// Logs every callback as "<name>.<callback> <trainer iter>".
class RecordingHook : public HookBase {
 public:
  RecordingHook(std::string name, Log* log) : name_(std::move(name)), log_(log) {}
  void before_train() override { record("before_train"); }
  void after_train() override { record("after_train"); }
  void before_step() override { record("before_step"); }
  void after_step() override { record("after_step"); }

 private:
  void record(const std::string& what) {
    log_->push_back(name_ + "." + what + " " + std::to_string(trainer_->iter()));
  }
  std::string name_;
  Log* log_;
};

// Records the storage iteration of every write and counts closes.
class RecordingWriter : public EventWriter {
 public:
  void write(const EventStorage& storage) override { writes.push_back(storage.iter()); }
  void close() override { ++closes; }
  void resume(const WriteSchedule& s) override { schedules.push_back(s); }
  std::vector<int64_t> writes;
  int closes = 0;
  std::vector<WriteSchedule> schedules;
};

TEST(TrainerBaseTest, HooksRunInOrderAroundEveryStep) {
  Log log;
  RecordingTrainer trainer(&log);
  trainer.register_hooks({std::make_shared<RecordingHook>("a", &log), nullptr,
                          std::make_shared<RecordingHook>("b", &log)});
  ASSERT_EQ(trainer.hooks().size(), 2u);  // null hooks are dropped
  trainer.train(/*start_iter=*/3, /*max_iter=*/5);
  const Log expected = {
      "a.before_train 3", "b.before_train 3",                                   //
      "a.before_step 3",  "b.before_step 3",  "step 3", "a.after_step 3", "b.after_step 3",  //
      "a.before_step 4",  "b.before_step 4",  "step 4", "a.after_step 4", "b.after_step 4",  //
      "a.after_train 5",  "b.after_train 5"};
  EXPECT_EQ(log, expected);
  EXPECT_EQ(trainer.iter(), 5);
  EXPECT_EQ(trainer.start_iter(), 3);
  EXPECT_EQ(trainer.max_iter(), 5);
  EXPECT_EQ(trainer.storage().iter(), 5);
  // Scalars were put at the iteration of their step.
  const auto& h = trainer.storage().history("total_loss");
  ASSERT_EQ(h.values().size(), 2u);
  EXPECT_EQ(h.values()[0], (std::pair<double, int64_t>{3.0, 3}));
  EXPECT_EQ(h.values()[1], (std::pair<double, int64_t>{4.0, 4}));
}

TEST(TrainerBaseTest, NoStepsStillRunsBeforeAndAfterTrain) {
  Log log;
  RecordingTrainer trainer(&log);
  trainer.register_hooks({std::make_shared<RecordingHook>("a", &log)});
  trainer.train(7, 7);  // e.g. resumed from model_final
  EXPECT_EQ(log, (Log{"a.before_train 7", "a.after_train 7"}));
}

TEST(TrainerBaseTest, AfterTrainRunsOnExceptionAndTheExceptionPropagates) {
  Log log;
  RecordingTrainer trainer(&log, /*throw_at=*/1);
  trainer.register_hooks({std::make_shared<RecordingHook>("a", &log)});
  try {
    trainer.train(0, 4);
    FAIL() << "expected the step's exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "boom at 1");
  }
  const Log expected = {"a.before_train 0", "a.before_step 0", "step 0", "a.after_step 0",
                        "a.before_step 1",  "step 1",          "a.after_train 1"};
  EXPECT_EQ(log, expected);
  EXPECT_EQ(trainer.iter(), 1);  // after_train can tell the run did not finish
}

TEST(TrainerBaseTest, ExceptionInAHookAlsoRunsAfterTrain) {
  class Throwing : public HookBase {
   public:
    void after_step() override {
      if (trainer_->iter() == 2) throw std::logic_error("hook failed");
    }
  };
  Log log;
  RecordingTrainer trainer(&log);
  trainer.register_hooks(
      {std::make_shared<Throwing>(), std::make_shared<RecordingHook>("a", &log)});
  EXPECT_THROW(trainer.train(0, 5), std::logic_error);
  ASSERT_FALSE(log.empty());
  EXPECT_EQ(log.back(), "a.after_train 2");
}

TEST(TrainerBaseTest, ExceptionInAfterTrainDuringFailureKeepsTheOriginalError) {
  class BadAfterTrain : public HookBase {
   public:
    void after_train() override { throw std::logic_error("after_train failed"); }
  };
  Log log;
  RecordingTrainer trainer(&log, /*throw_at=*/0);
  trainer.register_hooks({std::make_shared<BadAfterTrain>()});
  try {
    trainer.train(0, 3);
    FAIL() << "expected the step's exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "boom at 0");
  }
}

// Runs RecordingTrainer with an EvalHook of `period` for [0, max_iter) and returns the
// storage iterations at which the evaluation ran.
std::vector<int64_t> eval_iterations(int64_t period, int64_t max_iter, int64_t throw_at = -1) {
  Log log;
  RecordingTrainer trainer(&log, throw_at);
  std::vector<int64_t> at;
  int calls = 0;
  trainer.register_hooks({std::make_shared<EvalHook>(period, [&] {
    at.push_back(trainer.storage().iter());
    ++calls;
    return std::map<std::string, double>{{"accuracy", 0.25 * calls}};
  })});
  try {
    trainer.train(0, max_iter);
  } catch (const std::runtime_error&) {
  }
  if (!at.empty()) {
    // Metrics are put as eval/<name> at the storage iteration of the evaluation.
    const auto& h = trainer.storage().history("eval/accuracy");
    EXPECT_EQ(h.values().size(), at.size());
    EXPECT_EQ(h.values().back(), (std::pair<double, int64_t>{0.25 * calls, at.back()}));
  }
  return at;
}

TEST(EvalHookTest, Periods) {
  // After iterations 2, 5, 8 ((iter + 1) % 3 == 0), then once after training.
  EXPECT_EQ(eval_iterations(3, 10), (std::vector<int64_t>{2, 5, 8, 10}));
  // The period's last multiple is the last iteration: evaluated once, not twice.
  EXPECT_EQ(eval_iterations(5, 10), (std::vector<int64_t>{4, 10}));
  // Period 0: only at the end.
  EXPECT_EQ(eval_iterations(0, 10), (std::vector<int64_t>{10}));
  // Period longer than the run.
  EXPECT_EQ(eval_iterations(50, 10), (std::vector<int64_t>{10}));
}

TEST(EvalHookTest, NoFinalEvaluationWhenTrainingFailed) {
  EXPECT_EQ(eval_iterations(3, 10, /*throw_at=*/7), (std::vector<int64_t>{2, 5}));
}

TEST(PeriodicWriterTest, WritesEveryPeriodAtTheLastIterationAndAfterTraining) {
  Log log;
  RecordingTrainer trainer(&log);
  auto w1 = std::make_shared<RecordingWriter>();
  auto w2 = std::make_shared<RecordingWriter>();
  trainer.register_hooks({std::make_shared<PeriodicWriter>(
      std::vector<std::shared_ptr<EventWriter>>{w1, w2}, /*period=*/4)});
  trainer.train(0, 10);
  const std::vector<int64_t> expected = {3, 7, 9, 10};
  EXPECT_EQ(w1->writes, expected);
  EXPECT_EQ(w2->writes, expected);
  EXPECT_EQ(w1->closes, 1);
  EXPECT_EQ(w2->closes, 1);
}

TEST(PeriodicWriterTest, PeriodCountsFromIterationZeroAfterAResume) {
  Log log;
  RecordingTrainer trainer(&log);
  auto w = std::make_shared<RecordingWriter>();
  trainer.register_hooks({std::make_shared<PeriodicWriter>(
      std::vector<std::shared_ptr<EventWriter>>{w}, /*period=*/5)});
  trainer.train(7, 16);
  EXPECT_EQ(w->writes, (std::vector<int64_t>{9, 14, 15, 16}));
}

TEST(PeriodicWriterTest, AResumedRunTellsTheWritersItsSchedule) {
  Log log;
  RecordingTrainer trainer(&log);
  auto w = std::make_shared<RecordingWriter>();
  trainer.register_hooks({std::make_shared<PeriodicWriter>(
      std::vector<std::shared_ptr<EventWriter>>{w}, /*period=*/5, /*eval_period=*/int64_t{4})});
  trainer.train(0, 3);
  EXPECT_TRUE(w->schedules.empty());  // a run from 0 appends
  trainer.train(7, 16);
  ASSERT_EQ(w->schedules.size(), 1u);
  const WriteSchedule& s = w->schedules[0];
  EXPECT_EQ(s.start_iter, 7);
  EXPECT_EQ(s.max_iter, 16);
  EXPECT_EQ(s.log_period, 5);
  EXPECT_EQ(s.eval_period, std::optional<int64_t>(4));
  // The schedule's iterations include every write the run made.
  for (int64_t it : w->writes) {
    if (it >= 7) {
      EXPECT_TRUE(s.writes(it)) << it;
    }
  }
}

TEST(PeriodicWriterTest, NonPositivePeriodFallsBackToTwenty) {
  Log log;
  RecordingTrainer trainer(&log);
  auto w = std::make_shared<RecordingWriter>();
  trainer.register_hooks({std::make_shared<PeriodicWriter>(
      std::vector<std::shared_ptr<EventWriter>>{w}, /*period=*/0)});
  trainer.train(0, 45);
  EXPECT_EQ(w->writes, (std::vector<int64_t>{19, 39, 44, 45}));
}

TEST(PeriodicWriterTest, WritesAndClosesWhenTrainingFails) {
  Log log;
  RecordingTrainer trainer(&log, /*throw_at=*/6);
  auto w = std::make_shared<RecordingWriter>();
  trainer.register_hooks({std::make_shared<PeriodicWriter>(
      std::vector<std::shared_ptr<EventWriter>>{w}, /*period=*/4)});
  EXPECT_THROW(trainer.train(0, 10), std::runtime_error);
  EXPECT_EQ(w->writes, (std::vector<int64_t>{3, 6}));
  EXPECT_EQ(w->closes, 1);
}

TEST(IterationTimerTest, PutsOneTimePerStep) {
  Log log;
  RecordingTrainer trainer(&log);
  trainer.register_hooks({std::make_shared<IterationTimer>()});
  trainer.train(2, 6);
  const auto& h = trainer.storage().history("time");
  ASSERT_EQ(h.values().size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(h.values()[i].second, static_cast<int64_t>(i) + 2);
    EXPECT_GE(h.values()[i].first, 0.0);
  }
}

TEST(LRSchedulerHookTest, PutsTheLrOfEachStepThenStepsTheScheduler) {
  at::Tensor w = at::zeros({1}).requires_grad_(true);
  torch::optim::SGD sgd({w}, torch::optim::SGDOptions(1.0));
  // lr_at: 0.5, 0.75 (linear warmup over 2 iterations from 0.5), then 1.0 until step 3,
  // then 0.1.
  optim::WarmupMultiStepLR sched(sgd, /*base_lr=*/1.0, /*steps=*/{3}, /*gamma=*/0.1,
                                 /*warmup_factor=*/0.5, /*warmup_iters=*/2, "linear");
  // The step sees the lr that the hook then records for its iteration.
  class LrTrainer : public TrainerBase {
   public:
    explicit LrTrainer(torch::optim::SGD& sgd) : sgd_(sgd) {}
    void run_step() override {
      seen.push_back(static_cast<torch::optim::SGDOptions&>(sgd_.param_groups()[0].options()).lr());
    }
    std::vector<double> seen;

   private:
    torch::optim::SGD& sgd_;
  };
  LrTrainer trainer(sgd);
  trainer.register_hooks({std::make_shared<LRSchedulerHook>(sched)});
  trainer.train(0, 5);
  const std::vector<double> expected = {0.5, 0.75, 1.0, 1.0 * 0.1, 1.0 * 0.1};
  ASSERT_EQ(trainer.seen.size(), expected.size());
  const auto& h = trainer.storage().history("lr");
  ASSERT_EQ(h.values().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_DOUBLE_EQ(trainer.seen[i], expected[i]) << "iteration " << i;
    EXPECT_EQ(h.values()[i].first, trainer.seen[i]) << "iteration " << i;
    EXPECT_EQ(h.values()[i].second, static_cast<int64_t>(i));
  }
  EXPECT_EQ(sched.last_iter(), 5);
  // "lr" is not smoothed on the console.
  EXPECT_EQ(trainer.storage().latest_with_smoothing_hint(20)["lr"].first, 0.1);
}

TEST(LocalSnapshotStepTest, SnapshotsEveryPeriodCommitsAStepLaterAndPreparesOnlyForASnapshotToCome) {
  // Every period and run length up to 24, against a walk over the iterations: a
  // snapshot after each period-th step but the last iteration's; the step after one
  // commits it (a snapshot commits the one before itself); a file is prepared between
  // snapshots only if another one comes.
  for (int64_t period = 1; period <= 6; ++period) {
    for (int64_t max_iter = 1; max_iter <= 24; ++max_iter) {
      auto is_snapshot = [&](int64_t i) { return (i + 1) % period == 0 && i < max_iter - 1; };
      for (int64_t it = 0; it < max_iter; ++it) {
        SCOPED_TRACE(::testing::Message() << "period " << period << ", max_iter " << max_iter << ", it " << it);
        const LocalSnapshotStep step = local_snapshot_step(it, period, max_iter);
        bool to_come = false;
        for (int64_t s = it + 1; s < max_iter; ++s) to_come = to_come || is_snapshot(s);
        EXPECT_EQ(step.snapshot, is_snapshot(it));
        EXPECT_EQ(step.commit, !is_snapshot(it) && it % period == 0);  // with none in flight: nothing
        if (it > 0 && is_snapshot(it - 1)) {
          EXPECT_TRUE(step.commit || step.snapshot) << "the snapshot of the step before is not committed";
        }
        EXPECT_EQ(step.prepare, !is_snapshot(it) && to_come);
      }
    }
  }
}

}  // namespace
}  // namespace dtrain::engine
