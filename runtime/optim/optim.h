// Optimizers, learning-rate schedulers (detectron2's formulas) and gradient clipping,
// built from the SOLVER.* config keys.
//
//   auto opt = dtrain::optim::build_optimizer(cfg, model->named_parameters());
//   auto sched = dtrain::optim::build_lr_scheduler(cfg, *opt);
//   ... loss.backward(); clip_gradients(cfg, params); opt->step(); sched->step();
//
// Layout mirrors detectron2's solver package: build.cpp turns the config into objects
// (build_optimizer, build_lr_scheduler, clip_gradients(cfg, ...)); lr_scheduler.cpp and
// clip.cpp hold the mechanics, usable without a Config. Configuration mistakes throw
// dtrain::ConfigError naming the key. Nothing here is thread-safe: call it from the
// training thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/optim/optimizer.h>
#include <torch/ordered_dict.h>

#include "runtime/base/config.h"
#include "runtime/base/stateful.h"

namespace dtrain::optim {

// ---- optimizers ------------------------------------------------------------------

// SOLVER.OPTIMIZER (case-insensitive): "SGD" (SOLVER.MOMENTUM, NESTEROV, WEIGHT_DECAY)
// or "AdamW" (BETAS, EPS, WEIGHT_DECAY), lr SOLVER.BASE_LR, one param group holding the
// parameters of `named_params` that require grad, in order, each once (shared
// parameters are deduplicated, as detectron2 does). Throws ConfigError for an unknown
// optimizer or an invalid hyper-parameter (naming the key), dtrain::Error when no
// parameter requires grad.
std::unique_ptr<torch::optim::Optimizer> build_optimizer(
    const Config& cfg, const torch::OrderedDict<std::string, at::Tensor>& named_params);

// ---- learning-rate schedulers ----------------------------------------------------

// The lr multiplier of detectron2's warmup at `iter`: 1 once iter >= warmup_iters;
// before that warmup_factor ("constant") or warmup_factor * (1 - a) + a with
// a = iter / warmup_iters ("linear"). `method` is case-insensitive; an unknown one
// throws ConfigError naming SOLVER.WARMUP_METHOD.
double warmup_factor_at(const std::string& method, int64_t iter, int64_t warmup_iters,
                        double warmup_factor);

// An LR scheduler stepping once per iteration (detectron2 semantics: after step() has
// been called k times the lr is lr_at(k); at construction it is lr_at(0)). It writes
// the lr into every param group of the optimizer it was built for, which must outlive
// it. Not thread-safe; not copyable.
class LRScheduler : public Stateful {
 public:
  ~LRScheduler() override = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  // Advances one iteration and writes the new lr into every param group.
  void step();
  // lr at iteration `iter` (closed form, independent of the current iteration).
  virtual double lr_at(int64_t iter) const = 0;
  // The lr currently in the optimizer: lr_at(last_iter()).
  double current_lr() const { return lr_at(last_iter_); }
  // How many times step() has been called (or the restored count).
  int64_t last_iter() const { return last_iter_; }
  // The scheduler's name, e.g. "WarmupMultiStepLR".
  const std::string& name() const { return name_; }
  // SOLVER.BASE_LR this scheduler was built with.
  double base_lr() const { return base_lr_; }

  // Keys: "last_iter" (int), "base_lr" (double), "name" (string).
  StateDict state_dict() const override;
  // Restores last_iter and writes lr_at(last_iter) into the optimizer. Throws
  // ConfigError when the saved name or base_lr differ from this scheduler's (both
  // values named), dtrain::Error for a missing entry or a negative last_iter.
  void load_state_dict(const StateDict& state) override;
  // Loads a PyTorch LR scheduler's state_dict() (torch's or detectron2's LRMultiplier:
  // "last_epoch" steps taken, "base_lrs"): last_iter = last_epoch. Returns why not (no
  // last_epoch, or a base lr other than SOLVER.BASE_LR), and then nothing was changed.
  std::string load_pytorch_state(const interop::PyObject& state) override;

 protected:
  // Subclass constructors call apply_lr() once their own members are set.
  LRScheduler(torch::optim::Optimizer& opt, std::string name, double base_lr);
  // Writes current_lr() into every param group of the optimizer.
  void apply_lr();

 private:
  torch::optim::Optimizer& opt_;
  std::string name_;
  double base_lr_;
  int64_t last_iter_ = 0;
};

// lr = BASE_LR * warmup(iter) * GAMMA ^ (number of STEPS <= iter).
class WarmupMultiStepLR : public LRScheduler {
 public:
  // `steps` must be strictly increasing and positive, gamma > 0, warmup_iters >= 0,
  // base_lr >= 0; otherwise throws ConfigError naming the SOLVER.* key.
  WarmupMultiStepLR(torch::optim::Optimizer& opt, double base_lr, std::vector<int64_t> steps,
                    double gamma, double warmup_factor, int64_t warmup_iters,
                    std::string warmup_method);
  double lr_at(int64_t iter) const override;

 private:
  std::vector<int64_t> steps_;
  double gamma_;
  double warmup_factor_;
  int64_t warmup_iters_;
  std::string warmup_method_;
};

// lr = warmup(iter) * (end + (BASE_LR - end) * 0.5 * (1 + cos(pi * iter / MAX_ITER))),
// end = SOLVER.BASE_LR_END. Past MAX_ITER the lr stays at `end` (the cosine is not
// continued back up).
class WarmupCosineLR : public LRScheduler {
 public:
  // max_iter > 0, base_lr and base_lr_end >= 0, warmup_iters >= 0; otherwise throws
  // ConfigError naming the SOLVER.* key.
  WarmupCosineLR(torch::optim::Optimizer& opt, double base_lr, double base_lr_end, int64_t max_iter,
                 double warmup_factor, int64_t warmup_iters, std::string warmup_method);
  double lr_at(int64_t iter) const override;

 private:
  double base_lr_end_;
  int64_t max_iter_;
  double warmup_factor_;
  int64_t warmup_iters_;
  std::string warmup_method_;
};

// SOLVER.LR_SCHEDULER_NAME (case-insensitive) with its SOLVER.* keys; every STEPS
// entry must be <= SOLVER.MAX_ITER. Throws ConfigError for an unknown name or a bad
// value, naming the key.
std::unique_ptr<LRScheduler> build_lr_scheduler(const Config& cfg, torch::optim::Optimizer& opt);

// ---- gradient clipping -------------------------------------------------------------

// Rescales the gradients of `params` together so their joint `norm_type`-norm (inf
// allowed) is <= max_norm, exactly like torch.nn.utils.clip_grad_norm_: the factor is
// min(1, max_norm / (total_norm + 1e-6)). Parameters without a gradient are skipped.
// Returns the joint norm before clipping (a 0-dim tensor, 0 when no gradient exists;
// no device sync). Throws ConfigError when max_norm <= 0 or norm_type <= 0.
at::Tensor clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm, double norm_type);

// Clips the gradients of `params` in place (parameters without a gradient are skipped):
// clip_type "value" clamps each element to [-clip_value, clip_value]; "norm" applies
// clip_grad_norm to each parameter on its own (detectron2's per-parameter clipping);
// "full_model" applies it to all parameters jointly. `clip_type` is case-insensitive.
// Throws ConfigError naming SOLVER.CLIP_GRADIENTS.* for an unknown type or bad value.
void clip_gradients(const std::string& clip_type, double clip_value, double norm_type,
                    const std::vector<at::Tensor>& params);

// clip_gradients with SOLVER.CLIP_GRADIENTS.{CLIP_TYPE, CLIP_VALUE, NORM_TYPE}; a no-op
// when SOLVER.CLIP_GRADIENTS.ENABLED is false.
void clip_gradients(const Config& cfg, const std::vector<at::Tensor>& params);

}  // namespace dtrain::optim
