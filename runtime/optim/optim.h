// Optimizers, learning-rate schedulers (detectron2's formulas) and gradient clipping,
// all built from the config.
//
//   auto opt = dtrain::optim::build_optimizer(cfg, model->named_parameters());
//   auto sched = dtrain::optim::build_lr_scheduler(cfg, *opt);
//   ... loss.backward(); clip_gradients(cfg, params); opt->step(); sched->step();
//
// Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/optim/optimizer.h>
#include <torch/ordered_dict.h>

#include "checkpoint/stateful.h"
#include "runtime/base/config.h"

namespace dtrain::optim {

// SOLVER.OPTIMIZER: "SGD" (SOLVER.MOMENTUM, NESTEROV, WEIGHT_DECAY) or "AdamW" (BETAS,
// EPS, WEIGHT_DECAY), lr SOLVER.BASE_LR, one param group. Throws ConfigError otherwise.
std::unique_ptr<torch::optim::Optimizer> build_optimizer(
    const Config& cfg, const torch::OrderedDict<std::string, at::Tensor>& named_params);

// The lr multiplier of detectron2's warmup (method "linear" or "constant") at `iter`.
double warmup_factor_at(const std::string& method, int64_t iter, int64_t warmup_iters,
                        double warmup_factor);

// An LR scheduler stepping once per iteration (detectron2 semantics: after step() has
// been called k times the lr is lr_at(k); at construction it is lr_at(0)).
class LRScheduler : public checkpoint::Stateful {
 public:
  ~LRScheduler() override = default;
  // Advances one iteration and writes the new lr into every param group.
  void step();
  // lr at iteration `iter` (closed form).
  virtual double lr_at(int64_t iter) const = 0;
  double current_lr() const { return lr_at(last_iter_); }
  int64_t last_iter() const { return last_iter_; }
  // Keys: "last_iter", "base_lr" (checked on load), "name".
  checkpoint::StateDict state_dict() const override;
  void load_state_dict(const checkpoint::StateDict& state) override;

 protected:
  LRScheduler(torch::optim::Optimizer& opt, std::string name);
  void apply_lr();
  torch::optim::Optimizer& opt_;
  std::string name_;
  int64_t last_iter_ = 0;
};

// lr = BASE_LR * warmup(iter) * GAMMA ^ (number of STEPS <= iter).
class WarmupMultiStepLR : public LRScheduler { /* see optim.cpp */
 public:
  WarmupMultiStepLR(torch::optim::Optimizer& opt, double base_lr, std::vector<int64_t> steps,
                    double gamma, double warmup_factor, int64_t warmup_iters,
                    std::string warmup_method);
  double lr_at(int64_t iter) const override;

 private:
  double base_lr_;
  std::vector<int64_t> steps_;
  double gamma_, warmup_factor_;
  int64_t warmup_iters_;
  std::string warmup_method_;
};

// lr = warmup(iter) * (end + (BASE_LR - end) * 0.5 * (1 + cos(pi * iter / MAX_ITER))).
class WarmupCosineLR : public LRScheduler {
 public:
  WarmupCosineLR(torch::optim::Optimizer& opt, double base_lr, double base_lr_end,
                 int64_t max_iter, double warmup_factor, int64_t warmup_iters,
                 std::string warmup_method);
  double lr_at(int64_t iter) const override;

 private:
  double base_lr_, base_lr_end_;
  int64_t max_iter_;
  double warmup_factor_;
  int64_t warmup_iters_;
  std::string warmup_method_;
};

// SOLVER.LR_SCHEDULER_NAME; throws ConfigError for an unknown name or bad STEPS.
std::unique_ptr<LRScheduler> build_lr_scheduler(const Config& cfg, torch::optim::Optimizer& opt);

// Applies SOLVER.CLIP_GRADIENTS.* to the gradients of `params` (no-op when disabled):
// "value" clamps each element to [-v, v]; "norm" rescales each parameter's gradient to
// norm <= v (detectron2's per-parameter clipping); "full_model" rescales all gradients
// together so their joint norm <= v.
void clip_gradients(const Config& cfg, const std::vector<at::Tensor>& params);

}  // namespace dtrain::optim
