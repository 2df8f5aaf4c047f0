// Optimizer and LR-scheduler state saved by PyTorch (torch.optim's state_dict(), as in a
// detectron2 checkpoint), mapped onto OptimizerState and LRScheduler (see their headers).
#include <cmath>
#include <optional>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "checkpoint/interop/pickle.h"
#include "runtime/optim/optim.h"
#include "runtime/optim/optimizer_state.h"

namespace dtrain::optim {
namespace {

using interop::PyObject;
using interop::PyType;

// A number: int, float, bool or a one-element tensor (torch >= 1.12 keeps Adam's step in one).
std::optional<double> number(const PyObject* v) {
  if (!v) return std::nullopt;
  if (v->type == PyType::kInt || v->type == PyType::kBool) return static_cast<double>(v->i);
  if (v->type == PyType::kFloat) return v->f;
  if (v->type == PyType::kTensor && v->tensor.numel() == 1) return v->tensor.item<double>();
  return std::nullopt;
}

// The entry of dict `d` whose key is the int `id`, or nullptr.
const PyObject* by_id(const PyObject& d, int64_t id) {
  for (const auto& [k, v] : d.entries) {
    if (k->type == PyType::kInt && k->i == id) return v;
  }
  return nullptr;
}

// A state tensor shaped like `param`; sets `why` otherwise.
std::optional<at::Tensor> state_tensor(const PyObject* v, const at::Tensor& param,
                                       const std::string& what, std::string& why) {
  if (!v || v->type != PyType::kTensor) {
    why = fmt::format("{} is {}, not a tensor", what, v ? v->type_name() : "missing");
    return std::nullopt;
  }
  if (v->tensor.sizes() != param.sizes()) {
    why = fmt::format("{} has shape [{}] but the parameter has shape [{}]", what,
                      fmt::join(v->tensor.sizes(), ", "), fmt::join(param.sizes(), ", "));
    return std::nullopt;
  }
  return v->tensor;
}

}  // namespace

std::string OptimizerState::load_pytorch_state(const PyObject& sd) {
  const PyObject* groups = sd.get("param_groups");
  const PyObject* state = sd.get("state");
  if (!groups || groups->type != PyType::kList || !state || state->type != PyType::kDict) {
    return "it is not a torch.optim state dict (no 'state' dict and 'param_groups' list)";
  }
  auto& own = opt_.param_groups();
  if (groups->items.size() != own.size()) {
    return fmt::format("it has {} parameter groups and this optimizer has {}; PyTorch numbers "
                       "parameters across its groups, so which state belongs to which parameter "
                       "is known only when the groups correspond one to one",
                       groups->items.size(), own.size());
  }
  StateDict out;
  out["kind"] = kind_;
  std::string why;
  for (size_t g = 0; g < own.size(); ++g) {
    const PyObject& pg = *groups->items[g];
    const std::string prefix = fmt::format("param_groups/{}/", g);
    const PyObject* ids = pg.get("params");
    if (!ids || ids->type != PyType::kList || ids->items.size() != own[g].params().size()) {
      return fmt::format("group {} holds {} parameters in the file and {} here", g,
                         ids && ids->type == PyType::kList ? ids->items.size() : 0,
                         own[g].params().size());
    }
    const bool sgd = kind_ == "SGD";
    const PyObject* betas = pg.get("betas");
    if (sgd != (betas == nullptr) || (sgd && !pg.get("momentum"))) {
      return fmt::format("the file's optimizer is {} but this one is {}",
                         betas ? "Adam/AdamW" : "SGD-like", kind_);
    }
    if (auto m = number(pg.get("maximize")); m && *m != 0) return "it maximizes (maximize=True)";
    auto hyper = [&](const char* key, const std::string& as) {
      auto v = number(pg.get(key));
      if (!v) why = fmt::format("group {} has no number '{}'", g, key);
      out[prefix + as] = v.value_or(0.0);
    };
    hyper("lr", "lr");
    hyper("weight_decay", "weight_decay");
    if (sgd) {
      hyper("momentum", "momentum");
      hyper("dampening", "dampening");
      out[prefix + "nesterov"] = static_cast<int64_t>(number(pg.get("nesterov")).value_or(0));
    } else {
      hyper("eps", "eps");
      if (betas->items.size() != 2 || !number(betas->items[0]) || !number(betas->items[1])) {
        return fmt::format("group {} has betas that are not two numbers", g);
      }
      out[prefix + "beta1"] = *number(betas->items[0]);
      out[prefix + "beta2"] = *number(betas->items[1]);
      out[prefix + "amsgrad"] = static_cast<int64_t>(number(pg.get("amsgrad")).value_or(0));
    }
    for (size_t k = 0; k < ids->items.size() && why.empty(); ++k) {
      const at::Tensor& p = own[g].params()[k];
      const std::string name = names_.at(p.unsafeGetTensorImpl());
      const PyObject* id = ids->items[k];
      if (id->type != PyType::kInt) return fmt::format("group {} lists a parameter id that is not an int", g);
      const PyObject* st = by_id(*state, id->i);
      if (!st) continue;  // never stepped
      if (st->type != PyType::kDict) return fmt::format("the state of parameter {} is not a dict", id->i);
      const std::string what = fmt::format("the state of parameter {} (here '{}')", id->i, name);
      const std::string key = "state/" + name + "/";
      auto take = [&](const char* field) {
        if (auto t = state_tensor(st->get(field), p, what + " '" + field + "'", why)) out[key + field] = *t;
      };
      if (sgd) {
        const PyObject* buf = st->get("momentum_buffer");
        if (buf && buf->type != PyType::kNone) take("momentum_buffer");
        continue;
      }
      auto step = number(st->get("step"));
      if (!step) why = what + " has no step";
      out[key + "step"] = static_cast<int64_t>(step.value_or(0));
      take("exp_avg");
      take("exp_avg_sq");
      if (st->get("max_exp_avg_sq")) take("max_exp_avg_sq");
    }
    if (!why.empty()) return why;
  }
  load(out, /*adopt=*/false);
  return "";
}

std::string LRScheduler::load_pytorch_state(const PyObject& sd) {
  auto last = number(sd.get("last_epoch"));
  if (!last || *last < 0) return "it has no non-negative 'last_epoch'";
  if (const PyObject* lrs = sd.get("base_lrs"); lrs && !lrs->items.empty()) {
    auto lr = number(lrs->items[0]);
    if (!lr || std::abs(*lr - base_lr_) > 1e-12 * std::abs(base_lr_)) {
      return fmt::format("its base lr {} differs from SOLVER.BASE_LR {}", lr.value_or(NAN), base_lr_);
    }
  }
  last_iter_ = static_cast<int64_t>(*last);
  apply_lr();
  return "";
}

}  // namespace dtrain::optim
