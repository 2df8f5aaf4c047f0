// Gradient clipping: by value, per-parameter norm (detectron2) and joint norm
// (torch.nn.utils.clip_grad_norm_), computed the way PyTorch 1.13 computes them.
#include <cmath>

#include <ATen/core/Tensor.h>
#include <ATen/ops/linalg_vector_norm.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <c10/core/ScalarType.h>

#include "runtime/base/error.h"
#include "runtime/optim/internal.h"
#include "runtime/optim/optim.h"

namespace dtrain::optim {
namespace {

// PyTorch's clip_grad_norm_ adds this to the norm before dividing.
constexpr double kNormEps = 1e-6;

void check_max_norm(double max_norm, double norm_type) {
  DTRAIN_CHECK_T(ConfigError, max_norm > 0,
                 "SOLVER.CLIP_GRADIENTS.CLIP_VALUE: expected a value > 0, got {}", max_norm);
  DTRAIN_CHECK_T(ConfigError, norm_type > 0,
                 "SOLVER.CLIP_GRADIENTS.NORM_TYPE: expected a value > 0 or inf, got {}", norm_type);
}

// The defined gradients of `params`, detached.
std::vector<at::Tensor> defined_grads(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> grads;
  grads.reserve(params.size());
  for (const at::Tensor& p : params) {
    const at::Tensor& g = p.grad();
    if (g.defined()) grads.push_back(g.detach());
  }
  return grads;
}

// Joint-norm clipping of `grads` (non-empty, checked arguments); returns the norm.
at::Tensor clip_norm_of(const std::vector<at::Tensor>& grads, double max_norm, double norm_type) {
  std::vector<at::Tensor> norms;
  norms.reserve(grads.size());
  c10::ScalarType dtype = grads[0].scalar_type();
  const bool inf_norm = std::isinf(norm_type);
  for (const at::Tensor& g : grads) {
    norms.push_back(inf_norm ? g.abs().max() : at::linalg_vector_norm(g, norm_type));
    dtype = c10::promoteTypes(dtype, norms.back().scalar_type());
  }
  at::Tensor total;
  if (norms.size() == 1) {
    total = norms[0];
  } else {
    for (at::Tensor& n : norms) n = n.to(dtype);
    const at::Tensor stacked = at::stack(norms);
    total = inf_norm ? stacked.max() : at::linalg_vector_norm(stacked, norm_type);
  }
  // Python's `max_norm / (total + eps)` on a tensor is reciprocal() * max_norm.
  const at::Tensor coef = total.add(kNormEps).reciprocal().mul(max_norm).clamp_max(1.0);
  for (const at::Tensor& g : grads) g.mul_(coef.to(g.scalar_type()));
  return total;
}

}  // namespace

at::Tensor clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm,
                          double norm_type) {
  check_max_norm(max_norm, norm_type);
  const std::vector<at::Tensor> grads = defined_grads(params);
  if (grads.empty()) return at::zeros({});
  return clip_norm_of(grads, max_norm, norm_type);
}

void clip_gradients(const std::string& clip_type, double clip_value, double norm_type,
                    const std::vector<at::Tensor>& params) {
  static const std::vector<std::string> kTypes = {"value", "norm", "full_model"};
  const std::string& type =
      internal::canonical_choice(clip_type, kTypes, "SOLVER.CLIP_GRADIENTS.CLIP_TYPE");
  if (type == "value") {
    DTRAIN_CHECK_T(ConfigError, clip_value > 0,
                   "SOLVER.CLIP_GRADIENTS.CLIP_VALUE: expected a value > 0, got {}", clip_value);
    for (const at::Tensor& g : defined_grads(params)) g.clamp_(-clip_value, clip_value);
  } else if (type == "norm") {
    check_max_norm(clip_value, norm_type);
    for (const at::Tensor& g : defined_grads(params)) clip_norm_of({g}, clip_value, norm_type);
  } else {
    clip_grad_norm(params, clip_value, norm_type);
  }
}

}  // namespace dtrain::optim
