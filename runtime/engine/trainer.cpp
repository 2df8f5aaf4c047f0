// TrainerBase: the hook-driven training loop.
#include "runtime/engine/trainer.h"

#include <exception>

#include "runtime/base/logging.h"

namespace dtrain::engine {

void TrainerBase::register_hooks(const std::vector<std::shared_ptr<HookBase>>& hooks) {
  for (const auto& h : hooks) {
    if (!h) continue;
    h->set_trainer(this);
    hooks_.push_back(h);
  }
}

void TrainerBase::train(int64_t start_iter, int64_t max_iter) {
  iter_ = start_iter_ = start_iter;
  max_iter_ = max_iter;
  storage_.set_iter(start_iter);
  stopped_by_exception_ = false;
  DTRAIN_LOG_INFO("Starting training from iteration {}", start_iter);
  try {
    before_train();
    for (iter_ = start_iter; iter_ < max_iter; ++iter_) {
      before_step();
      run_step();
      after_step();
    }
  } catch (...) {
    // after_train must run (writers flush, async saves finish), then the error goes on.
    // A preemption also ends here (the engine's Preempted error): not necessarily a failure.
    DTRAIN_LOG_WARN("Training stopped at iteration {} by an exception", iter_);
    stopped_by_exception_ = true;
    try {
      after_train();
    } catch (const std::exception& e) {
      DTRAIN_LOG_ERROR("after_train failed too: {}", e.what());
    }
    throw;
  }
  after_train();
}

void TrainerBase::before_train() {
  for (auto& h : hooks_) h->before_train();
}
void TrainerBase::after_train() {
  storage_.set_iter(iter_);
  for (auto& h : hooks_) h->after_train();
}
void TrainerBase::before_step() {
  storage_.set_iter(iter_);
  for (auto& h : hooks_) h->before_step();
}
void TrainerBase::after_backward() {
  for (auto& h : hooks_) h->after_backward();
}
void TrainerBase::after_step() {
  for (auto& h : hooks_) h->after_step();
}

}  // namespace dtrain::engine
