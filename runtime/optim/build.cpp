// Builds optimizers and LR schedulers from SOLVER.* and applies SOLVER.CLIP_GRADIENTS.*
// (detectron2's solver/build.py); every configuration mistake names its key.
#include <cmath>
#include <unordered_set>

#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include "runtime/base/error.h"
#include "runtime/base/logging.h"
#include "runtime/optim/internal.h"
#include "runtime/optim/optim.h"

namespace dtrain::optim {
namespace {

// cfg[key] as a finite float >= 0, or ConfigError naming the key.
double non_negative(const Config& cfg, const char* key) {
  const double v = cfg.get_float(key);
  DTRAIN_CHECK_T(ConfigError, std::isfinite(v) && v >= 0,
                 "{}: expected a finite value >= 0, got {}", key, v);
  return v;
}

// The parameters that require grad, in order, each TensorImpl once.
std::vector<at::Tensor> trainable_params(
    const torch::OrderedDict<std::string, at::Tensor>& named_params) {
  std::vector<at::Tensor> params;
  std::unordered_set<const void*> seen;
  for (const auto& item : named_params) {
    const at::Tensor& p = item.value();
    if (!p.defined() || !p.requires_grad()) continue;
    if (!seen.insert(p.unsafeGetTensorImpl()).second) continue;
    params.push_back(p);
  }
  return params;
}

}  // namespace

std::unique_ptr<torch::optim::Optimizer> build_optimizer(
    const Config& cfg, const torch::OrderedDict<std::string, at::Tensor>& named_params) {
  static const std::vector<std::string> kOptimizers = {"SGD", "AdamW"};
  const std::string& name = internal::canonical_choice(cfg.get_string("SOLVER.OPTIMIZER"),
                                                       kOptimizers, "SOLVER.OPTIMIZER");
  const double lr = non_negative(cfg, "SOLVER.BASE_LR");
  const double weight_decay = non_negative(cfg, "SOLVER.WEIGHT_DECAY");
  std::vector<at::Tensor> params = trainable_params(named_params);
  DTRAIN_CHECK(!params.empty(), "build_optimizer: none of the model's {} parameters requires grad",
               named_params.size());

  if (name == "SGD") {
    const double momentum = non_negative(cfg, "SOLVER.MOMENTUM");
    const bool nesterov = cfg.get_bool("SOLVER.NESTEROV");
    DTRAIN_CHECK_T(ConfigError, !nesterov || momentum > 0,
                   "SOLVER.NESTEROV: Nesterov momentum needs SOLVER.MOMENTUM > 0, got {}",
                   momentum);
    return std::make_unique<torch::optim::SGD>(
        std::move(params),
        torch::optim::SGDOptions(lr).momentum(momentum).nesterov(nesterov).weight_decay(
            weight_decay));
  }
  const std::vector<double>& betas = cfg.get_float_list("SOLVER.BETAS");
  DTRAIN_CHECK_T(ConfigError, betas.size() == 2,
                 "SOLVER.BETAS: expected 2 entries (beta1, beta2), got {}", betas.size());
  for (double b : betas) {
    DTRAIN_CHECK_T(ConfigError, b >= 0 && b < 1,
                   "SOLVER.BETAS: expected each entry in [0, 1), got {}", b);
  }
  const double eps = non_negative(cfg, "SOLVER.EPS");
  return std::make_unique<torch::optim::AdamW>(std::move(params), torch::optim::AdamWOptions(lr)
                                                                      .betas({betas[0], betas[1]})
                                                                      .eps(eps)
                                                                      .weight_decay(weight_decay));
}

std::unique_ptr<LRScheduler> build_lr_scheduler(const Config& cfg, torch::optim::Optimizer& opt) {
  static const std::vector<std::string> kSchedulers = {"WarmupMultiStepLR", "WarmupCosineLR"};
  const std::string& name = internal::canonical_choice(cfg.get_string("SOLVER.LR_SCHEDULER_NAME"),
                                                       kSchedulers, "SOLVER.LR_SCHEDULER_NAME");
  const int64_t max_iter = cfg.get_int("SOLVER.MAX_ITER");
  DTRAIN_CHECK_T(ConfigError, max_iter > 0, "SOLVER.MAX_ITER: expected an integer > 0, got {}",
                 max_iter);
  const double base_lr = cfg.get_float("SOLVER.BASE_LR");
  const double warmup_factor = cfg.get_float("SOLVER.WARMUP_FACTOR");
  const int64_t warmup_iters = cfg.get_int("SOLVER.WARMUP_ITERS");
  const std::string& warmup_method = cfg.get_string("SOLVER.WARMUP_METHOD");

  if (name == "WarmupMultiStepLR") {
    const std::vector<int64_t>& steps = cfg.get_int_list("SOLVER.STEPS");
    // As detectron2: steps beyond MAX_ITER never take effect; say so, don't fail (a
    // run shortened with SOLVER.MAX_ITER on the command line keeps its config's STEPS).
    for (int64_t s : steps) {
      if (s > max_iter) {
        DTRAIN_LOG_WARN("SOLVER.STEPS contains {} > SOLVER.MAX_ITER ({}); it will be ignored", s,
                        max_iter);
      }
    }
    return std::make_unique<WarmupMultiStepLR>(opt, base_lr, steps, cfg.get_float("SOLVER.GAMMA"),
                                               warmup_factor, warmup_iters, warmup_method);
  }
  return std::make_unique<WarmupCosineLR>(opt, base_lr, cfg.get_float("SOLVER.BASE_LR_END"),
                                          max_iter, warmup_factor, warmup_iters, warmup_method);
}

void clip_gradients(const Config& cfg, const std::vector<at::Tensor>& params) {
  if (!cfg.get_bool("SOLVER.CLIP_GRADIENTS.ENABLED")) return;
  clip_gradients(cfg.get_string("SOLVER.CLIP_GRADIENTS.CLIP_TYPE"),
                 cfg.get_float("SOLVER.CLIP_GRADIENTS.CLIP_VALUE"),
                 cfg.get_float("SOLVER.CLIP_GRADIENTS.NORM_TYPE"), params);
}

}  // namespace dtrain::optim
