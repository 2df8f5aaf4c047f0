// LR schedulers with warmup, detectron2's closed forms (solver/lr_scheduler.py), stepped
// once per iteration and written into every param group of a LibTorch optimizer.
#include <algorithm>
#include <cmath>
#include <utility>

#include "runtime/base/error.h"
#include "runtime/optim/internal.h"
#include "runtime/optim/optim.h"

namespace dtrain::optim {
namespace {

constexpr double kPi = 3.14159265358979323846;
const char kOwner[] = "lr_scheduler";

// Canonical spelling of a warmup method, or ConfigError naming SOLVER.WARMUP_METHOD.
const std::string& canonical_warmup_method(const std::string& method) {
  static const std::vector<std::string> kMethods = {"linear", "constant"};
  return internal::canonical_choice(method, kMethods, "SOLVER.WARMUP_METHOD");
}

// Checks the arguments every warmup scheduler shares.
void check_common(double base_lr, double warmup_factor, int64_t warmup_iters) {
  DTRAIN_CHECK_T(ConfigError, std::isfinite(base_lr) && base_lr >= 0,
                 "SOLVER.BASE_LR: expected a finite value >= 0, got {}", base_lr);
  DTRAIN_CHECK_T(ConfigError, std::isfinite(warmup_factor) && warmup_factor >= 0,
                 "SOLVER.WARMUP_FACTOR: expected a finite value >= 0, got {}", warmup_factor);
  DTRAIN_CHECK_T(ConfigError, warmup_iters >= 0,
                 "SOLVER.WARMUP_ITERS: expected an integer >= 0, got {}", warmup_iters);
}

}  // namespace

double warmup_factor_at(const std::string& method, int64_t iter, int64_t warmup_iters,
                        double warmup_factor) {
  const std::string& m = canonical_warmup_method(method);
  if (iter >= warmup_iters) return 1.0;
  if (m == "constant") return warmup_factor;
  const double alpha = static_cast<double>(iter) / static_cast<double>(warmup_iters);
  return warmup_factor * (1 - alpha) + alpha;
}

// ---- LRScheduler ---------------------------------------------------------------------

LRScheduler::LRScheduler(torch::optim::Optimizer& opt, std::string name, double base_lr)
    : opt_(opt), name_(std::move(name)), base_lr_(base_lr) {}

void LRScheduler::step() {
  ++last_iter_;
  apply_lr();
}

void LRScheduler::apply_lr() {
  const double lr = current_lr();
  for (auto& group : opt_.param_groups()) group.options().set_lr(lr);
}

StateDict LRScheduler::state_dict() const {
  StateDict s;
  s["last_iter"] = last_iter_;
  s["base_lr"] = base_lr_;
  s["name"] = name_;
  return s;
}

void LRScheduler::load_state_dict(const StateDict& state) {
  const std::string& saved_name = state_string(state, "name", kOwner);
  DTRAIN_CHECK_T(ConfigError, saved_name == name_,
                 "lr_scheduler state: saved with SOLVER.LR_SCHEDULER_NAME '{}', but this run "
                 "uses '{}'",
                 saved_name, name_);
  // As detectron2's LRMultiplier (whose state holds base_lrs): the saved base lr wins
  // over SOLVER.BASE_LR, so a resumed run continues the schedule it was on. The trainer
  // warns once about every config key that differs from the checkpoint's.
  const double saved_lr = state_double(state, "base_lr", kOwner);
  DTRAIN_CHECK_T(CheckpointError, std::isfinite(saved_lr) && saved_lr >= 0,
                 "lr_scheduler state: 'base_lr' is {}, expected a finite value >= 0", saved_lr);
  base_lr_ = saved_lr;
  const int64_t iter = state_int(state, "last_iter", kOwner);
  DTRAIN_CHECK(iter >= 0, "lr_scheduler state: entry 'last_iter' is {}, expected >= 0", iter);
  last_iter_ = iter;
  apply_lr();
}

// ---- WarmupMultiStepLR -------------------------------------------------------------

WarmupMultiStepLR::WarmupMultiStepLR(torch::optim::Optimizer& opt, double base_lr,
                                     std::vector<int64_t> steps, double gamma, double warmup_factor,
                                     int64_t warmup_iters, std::string warmup_method)
    : LRScheduler(opt, "WarmupMultiStepLR", base_lr),
      steps_(std::move(steps)),
      gamma_(gamma),
      warmup_factor_(warmup_factor),
      warmup_iters_(warmup_iters),
      warmup_method_(canonical_warmup_method(warmup_method)) {
  check_common(base_lr, warmup_factor, warmup_iters);
  DTRAIN_CHECK_T(ConfigError, std::isfinite(gamma) && gamma > 0,
                 "SOLVER.GAMMA: expected a finite value > 0, got {}", gamma);
  for (size_t i = 0; i < steps_.size(); ++i) {
    DTRAIN_CHECK_T(ConfigError, steps_[i] > 0,
                   "SOLVER.STEPS: expected positive iterations, got {} at index {}", steps_[i], i);
    DTRAIN_CHECK_T(ConfigError, i == 0 || steps_[i] > steps_[i - 1],
                   "SOLVER.STEPS: expected strictly increasing iterations, got {} after {}",
                   steps_[i], steps_[i - 1]);
  }
  apply_lr();
}

double WarmupMultiStepLR::lr_at(int64_t iter) const {
  // bisect_right: the number of milestones <= iter.
  const auto decays = std::upper_bound(steps_.begin(), steps_.end(), iter) - steps_.begin();
  const double warmup = warmup_factor_at(warmup_method_, iter, warmup_iters_, warmup_factor_);
  return base_lr() * warmup * std::pow(gamma_, static_cast<double>(decays));
}

// ---- WarmupCosineLR ----------------------------------------------------------------

WarmupCosineLR::WarmupCosineLR(torch::optim::Optimizer& opt, double base_lr, double base_lr_end,
                               int64_t max_iter, double warmup_factor, int64_t warmup_iters,
                               std::string warmup_method)
    : LRScheduler(opt, "WarmupCosineLR", base_lr),
      base_lr_end_(base_lr_end),
      max_iter_(max_iter),
      warmup_factor_(warmup_factor),
      warmup_iters_(warmup_iters),
      warmup_method_(canonical_warmup_method(warmup_method)) {
  check_common(base_lr, warmup_factor, warmup_iters);
  DTRAIN_CHECK_T(ConfigError, std::isfinite(base_lr_end) && base_lr_end >= 0,
                 "SOLVER.BASE_LR_END: expected a finite value >= 0, got {}", base_lr_end);
  DTRAIN_CHECK_T(ConfigError, max_iter > 0, "SOLVER.MAX_ITER: expected an integer > 0, got {}",
                 max_iter);
  apply_lr();
}

double WarmupCosineLR::lr_at(int64_t iter) const {
  const double warmup = warmup_factor_at(warmup_method_, iter, warmup_iters_, warmup_factor_);
  const double it = static_cast<double>(std::min(iter, max_iter_));
  const double cosine = 0.5 * (1.0 + std::cos(kPi * it / static_cast<double>(max_iter_)));
  return warmup * (base_lr_end_ + (base_lr() - base_lr_end_) * cosine);
}

}  // namespace dtrain::optim
