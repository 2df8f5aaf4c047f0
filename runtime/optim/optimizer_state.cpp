// OptimizerState: SGD/AdamW state by parameter name (see optimizer_state.h).
#include "runtime/optim/optimizer_state.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

#include "runtime/base/error.h"

namespace dtrain::optim {


namespace {

// The key of a parameter in Optimizer::state(): its TensorImpl's address as a string in
// LibTorch 1.x, the address itself (void*) in LibTorch 2.x.
using StateKey =
    std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>::key_type;

template <class Key>
Key impl_key_as(c10::TensorImpl* impl) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream s;  // what LibTorch 1.x writes (c10::guts::to_string)
    s << impl;
    return s.str();
  } else {
    return static_cast<Key>(impl);
  }
}

StateKey impl_key(const at::Tensor& p) { return impl_key_as<StateKey>(p.unsafeGetTensorImpl()); }

// The new state tensor for `key` (shaped like the parameter `like`): `current` itself
// when the loader filled it in place (load_targets), `src` itself when adopting and it
// already has the parameter's dtype and device, else a copy of `src`.
at::Tensor take_checked(const StateDict& s, const std::string& key, const at::Tensor& like,
                        const at::Tensor& current, bool adopt) {
  const at::Tensor& src = state_tensor(s, key, "optimizer");
  DTRAIN_CHECK(src.sizes() == like.sizes(),
               "optimizer state '{}': checkpoint shape [{}] but the parameter has shape [{}]", key,
               fmt::join(src.sizes(), ", "), fmt::join(like.sizes(), ", "));
  if (current.defined() && current.is_same(src)) return src;
  if (adopt && src.scalar_type() == like.scalar_type() && src.device() == like.device() &&
      src.layout() == at::kStrided && src.is_contiguous() && !src.requires_grad()) {
    return src;
  }
  return src.to(like.options(), /*non_blocking=*/false, /*copy=*/true);
}

}  // namespace

OptimizerState::OptimizerState(torch::optim::Optimizer& optimizer,
                               const torch::OrderedDict<std::string, at::Tensor>& named_params)
    : opt_(optimizer) {
  if (dynamic_cast<torch::optim::SGD*>(&optimizer)) {
    kind_ = "SGD";
  } else if (dynamic_cast<torch::optim::AdamW*>(&optimizer)) {
    kind_ = "AdamW";
  } else {
    throw Error("OptimizerState supports SGD and AdamW optimizers only");
  }
  for (const auto& item : named_params) {
    names_.emplace(item.value().unsafeGetTensorImpl(), item.key());
  }
  for (const auto& group : opt_.param_groups()) {
    for (const auto& p : group.params()) {
      DTRAIN_CHECK(names_.count(p.unsafeGetTensorImpl()),
                   "OptimizerState: a parameter of the optimizer (shape [{}]) has no name",
                   fmt::join(p.sizes(), ", "));
    }
  }
}

StateDict OptimizerState::state_dict() const {
  StateDict out;
  out["kind"] = kind_;
  const auto& groups = opt_.param_groups();
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::string pg = fmt::format("param_groups/{}/", g);
    if (kind_ == "SGD") {
      const auto& o = static_cast<const torch::optim::SGDOptions&>(groups[g].options());
      out[pg + "lr"] = o.lr();
      out[pg + "momentum"] = o.momentum();
      out[pg + "dampening"] = o.dampening();
      out[pg + "weight_decay"] = o.weight_decay();
      out[pg + "nesterov"] = int64_t{o.nesterov()};
    } else {
      const auto& o = static_cast<const torch::optim::AdamWOptions&>(groups[g].options());
      out[pg + "lr"] = o.lr();
      out[pg + "beta1"] = std::get<0>(o.betas());
      out[pg + "beta2"] = std::get<1>(o.betas());
      out[pg + "eps"] = o.eps();
      out[pg + "weight_decay"] = o.weight_decay();
      out[pg + "amsgrad"] = int64_t{o.amsgrad()};
    }
    for (const auto& p : groups[g].params()) {
      auto it = opt_.state().find(impl_key(p));
      if (it == opt_.state().end()) continue;  // state is created at the first step
      const std::string prefix = "state/" + names_.at(p.unsafeGetTensorImpl()) + "/";
      if (kind_ == "SGD") {
        const auto& st = static_cast<const torch::optim::SGDParamState&>(*it->second);
        if (st.momentum_buffer().defined()) out[prefix + "momentum_buffer"] = st.momentum_buffer();
      } else {
        const auto& st = static_cast<const torch::optim::AdamWParamState&>(*it->second);
        out[prefix + "step"] = st.step();
        out[prefix + "exp_avg"] = st.exp_avg();
        out[prefix + "exp_avg_sq"] = st.exp_avg_sq();
        if (st.max_exp_avg_sq().defined()) out[prefix + "max_exp_avg_sq"] = st.max_exp_avg_sq();
      }
    }
  }
  return out;
}

StateDict OptimizerState::load_targets() {
  StateDict out;
  for (const auto& group : opt_.param_groups()) {
    for (const auto& p : group.params()) {
      auto it = opt_.state().find(impl_key(p));
      if (it == opt_.state().end()) continue;
      const std::string prefix = "state/" + names_.at(p.unsafeGetTensorImpl()) + "/";
      if (kind_ == "SGD") {
        const auto& st = static_cast<const torch::optim::SGDParamState&>(*it->second);
        if (st.momentum_buffer().defined()) out[prefix + "momentum_buffer"] = st.momentum_buffer();
      } else {
        const auto& st = static_cast<const torch::optim::AdamWParamState&>(*it->second);
        if (st.exp_avg().defined()) out[prefix + "exp_avg"] = st.exp_avg();
        if (st.exp_avg_sq().defined()) out[prefix + "exp_avg_sq"] = st.exp_avg_sq();
        if (st.max_exp_avg_sq().defined()) out[prefix + "max_exp_avg_sq"] = st.max_exp_avg_sq();
      }
    }
  }
  return out;
}

void OptimizerState::load_state_dict(const StateDict& s) { load(s, /*adopt=*/false); }

void OptimizerState::adopt_state_dict(StateDict&& s) {
  const StateDict state = std::move(s);
  load(state, /*adopt=*/true);
}

void OptimizerState::load(const StateDict& s, bool adopt) {
  const std::string& kind = state_string(s, "kind", "optimizer");
  DTRAIN_CHECK_T(ConfigError, kind == kind_,
                 "optimizer state was saved from {} but this run's SOLVER.OPTIMIZER is {}", kind,
                 kind_);
  at::NoGradGuard no_grad;
  auto& groups = opt_.param_groups();
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::string pg = fmt::format("param_groups/{}/", g);
    if (kind_ == "SGD") {
      auto& o = static_cast<torch::optim::SGDOptions&>(groups[g].options());
      o.lr(state_double(s, pg + "lr", "optimizer"));
      o.momentum(state_double(s, pg + "momentum", "optimizer"));
      o.dampening(state_double(s, pg + "dampening", "optimizer"));
      o.weight_decay(state_double(s, pg + "weight_decay", "optimizer"));
      o.nesterov(state_int(s, pg + "nesterov", "optimizer") != 0);
    } else {
      auto& o = static_cast<torch::optim::AdamWOptions&>(groups[g].options());
      o.lr(state_double(s, pg + "lr", "optimizer"));
      o.betas({state_double(s, pg + "beta1", "optimizer"),
               state_double(s, pg + "beta2", "optimizer")});
      o.eps(state_double(s, pg + "eps", "optimizer"));
      o.weight_decay(state_double(s, pg + "weight_decay", "optimizer"));
      o.amsgrad(state_int(s, pg + "amsgrad", "optimizer") != 0);
    }
    for (const auto& p : groups[g].params()) {
      const std::string prefix = "state/" + names_.at(p.unsafeGetTensorImpl()) + "/";
      const StateKey key = impl_key(p);
      // The current state's tensors, which the loader may have filled in place.
      at::Tensor cur_a, cur_b, cur_c;
      if (auto it = opt_.state().find(key); it != opt_.state().end()) {
        if (kind_ == "SGD") {
          cur_a = static_cast<const torch::optim::SGDParamState&>(*it->second).momentum_buffer();
        } else {
          const auto& st = static_cast<const torch::optim::AdamWParamState&>(*it->second);
          cur_a = st.exp_avg();
          cur_b = st.exp_avg_sq();
          cur_c = st.max_exp_avg_sq();
        }
      }
      opt_.state().erase(key);
      if (kind_ == "SGD") {
        if (!s.count(prefix + "momentum_buffer")) continue;
        auto st = std::make_unique<torch::optim::SGDParamState>();
        st->momentum_buffer(take_checked(s, prefix + "momentum_buffer", p, cur_a, adopt));
        opt_.state()[key] = std::move(st);
      } else {
        if (!s.count(prefix + "exp_avg")) continue;  // parameter never stepped
        auto st = std::make_unique<torch::optim::AdamWParamState>();
        st->step(state_int(s, prefix + "step", "optimizer"));
        st->exp_avg(take_checked(s, prefix + "exp_avg", p, cur_a, adopt));
        st->exp_avg_sq(take_checked(s, prefix + "exp_avg_sq", p, cur_b, adopt));
        if (s.count(prefix + "max_exp_avg_sq")) {
          st->max_exp_avg_sq(take_checked(s, prefix + "max_exp_avg_sq", p, cur_c, adopt));
        }
        opt_.state()[key] = std::move(st);
      }
    }
  }
}

}  // namespace dtrain::optim
