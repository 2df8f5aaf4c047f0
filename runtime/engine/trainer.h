// TrainerBase, hooks and SimpleTrainer, shaped like detectron2's engine/train_loop.py.
//
//   SimpleTrainer trainer(model, loader, optimizer, data_parallel, cfg);
//   trainer.register_hooks({std::make_shared<IterationTimer>(), ...});
//   trainer.train(/*start_iter=*/0, /*max_iter=*/1000);
//
// The loop runs, for iter in [start_iter, max_iter): before_step hooks, run_step(),
// after_step hooks; before_train/after_train hooks around it (after_train also runs
// when a step throws, then the exception propagates). Not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/engine/events.h"

namespace dtrain::engine {

class TrainerBase;

// A hook called by TrainerBase at fixed points of the loop (detectron2's HookBase).
class HookBase {
 public:
  virtual ~HookBase() = default;
  virtual void before_train() {}
  virtual void after_train() {}
  virtual void before_step() {}
  // Called by SimpleTrainer after backward and gradient reduction, before the
  // optimizer step.
  virtual void after_backward() {}
  virtual void after_step() {}
  // Set by TrainerBase::register_hooks.
  void set_trainer(TrainerBase* trainer) { trainer_ = trainer; }

 protected:
  TrainerBase* trainer_ = nullptr;
};

class TrainerBase {
 public:
  virtual ~TrainerBase() = default;
  // Appends hooks (in call order) and points them at this trainer.
  void register_hooks(const std::vector<std::shared_ptr<HookBase>>& hooks);
  // Runs the loop from start_iter to max_iter (exclusive).
  void train(int64_t start_iter, int64_t max_iter);
  // One training iteration.
  virtual void run_step() = 0;

  // Current iteration (== max_iter once the loop finished).
  int64_t iter() const { return iter_; }
  int64_t start_iter() const { return start_iter_; }
  int64_t max_iter() const { return max_iter_; }
  EventStorage& storage() { return storage_; }
  // True in after_train when the loop ended by an exception (which may have reached
  // only this rank, so after_train hooks must then not communicate).
  bool stopped_by_exception() const { return stopped_by_exception_; }
  const std::vector<std::shared_ptr<HookBase>>& hooks() const { return hooks_; }

 protected:
  void before_train();
  void after_train();
  void before_step();
  void after_backward();
  void after_step();

  int64_t iter_ = 0;
  int64_t start_iter_ = 0;
  int64_t max_iter_ = 0;
  bool stopped_by_exception_ = false;
  EventStorage storage_;
  std::vector<std::shared_ptr<HookBase>> hooks_;
};

}  // namespace dtrain::engine
