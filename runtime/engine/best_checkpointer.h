// BestCheckpointer (detectron2's hooks.BestCheckpointer): after each evaluation, saves
// the checkpoint `model_best` when the chosen metric improved (TEST.BEST_CHECKPOINT.*).
//
//   BestMetric best("eval/fashion_mnist_test/accuracy", BestMetric::Mode::kMax);
//   checkpointables["best_checkpointer"] = {&best};   // every checkpoint carries the best
//   hooks.push_back(std::make_shared<BestCheckpointer>(eval_period, best, comm, save_fn));
//
// The hook must come after the EvalHook that puts the metric (build_hooks' order).
// Not thread-safe: called by the trainer on the training thread (hooks.h).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "runtime/base/stateful.h"
#include "runtime/dist/communicator.h"
#include "runtime/engine/trainer.h"

namespace dtrain::engine {

// The best value seen so far of one metric and the iteration it was put at, as a
// Stateful ("best_checkpointer/{metric, mode, best_metric, best_iter}"; nothing while no
// best is known), so that a resumed run keeps it. Not thread-safe.
class BestMetric : public Stateful {
 public:
  enum class Mode { kMax, kMin };
  // Throws ConfigError naming TEST.BEST_CHECKPOINT.MODE unless `mode` is max or min.
  static Mode parse_mode(const std::string& mode);

  // `metric` is the EventStorage name ("eval/<dataset>/<metric>").
  BestMetric(std::string metric, Mode mode) : metric_(std::move(metric)), mode_(mode) {}

  // Whether `value` would be saved as the new best: finite, and with a best known,
  // strictly greater (max) or smaller (min) than it (detectron2's _compare/_update_best).
  bool improves(double value) const;
  // Records `value` at `iteration` as the best.
  void update(double value, int64_t iteration);

  const std::string& metric() const { return metric_; }
  Mode mode() const { return mode_; }
  bool has_best() const { return best_.has_value(); }
  // The best value and its iteration; only when has_best().
  double best_value() const { return best_->first; }
  int64_t best_iter() const { return best_->second; }

  StateDict state_dict() const override;
  // An empty state (a checkpoint from before this hook existed, or saved before the
  // first evaluation) means no best. A best saved for another metric or mode is
  // ignored with a warning: it cannot be compared with this run's values.
  void load_state_dict(const StateDict& state) override;

 private:
  std::string metric_;
  Mode mode_;
  std::optional<std::pair<double, int64_t>> best_;
};

// After each evaluation (the EvalHook's schedule: every `eval_period` iterations except
// the last, and after training), compares the storage's latest value of the metric with
// the best so far and, when it improved, saves "model_best" through `save` with
// "iteration" = the last finished training iteration (so that a resume from it continues
// exactly). Logs detectron2's lines ("Saved first model at ...", "Saved best model as
// ...", "Not saving as ...") and warns when the metric was not put.
//
// Collective: rank 0's value is broadcast, so every rank takes the same decision and
// calls `save` (a collective Checkpointer save) together. Not thread-safe.
class BestCheckpointer : public HookBase {
 public:
  using SaveFn = std::function<void(const std::string& name, const StateDict& extra)>;
  // `best` must outlive the hook; `file_prefix` names the checkpoint (detectron2's default).
  BestCheckpointer(int64_t eval_period, BestMetric& best, dist::Communicator& comm, SaveFn save,
                   std::string file_prefix = "model_best");
  void after_step() override;
  void after_train() override;

 private:
  // Checks the metric put at the current iteration; `trained_iter` is the last finished
  // training iteration (saved as "iteration").
  void check(int64_t trained_iter);

  int64_t period_;
  BestMetric& best_;
  dist::Communicator& comm_;
  SaveFn save_;
  std::string file_prefix_;
};

// The EventStorage name of TEST.BEST_CHECKPOINT.METRIC: "eval/" + metric, the name the
// EvalHook puts ("<dataset>/<metric>" in DefaultTrainer::test()); a metric already
// starting with "eval/" is taken as is.
std::string best_metric_storage_name(const std::string& metric);

}  // namespace dtrain::engine
