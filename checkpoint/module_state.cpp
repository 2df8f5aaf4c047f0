// ModuleState and RngState (see module_state.h).
#include "checkpoint/module_state.h"

#include <mutex>

#include <ATen/ATen.h>
#include <ATen/core/Generator.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "runtime/base/error.h"

namespace dtrain::checkpoint {

std::string LoadReport::table() const {
  std::string out;
  for (const auto& n : missing) out += fmt::format("  missing    | {}\n", n);
  for (const auto& n : unexpected) out += fmt::format("  unexpected | {}\n", n);
  for (const auto& m : shape_mismatch) {
    out += fmt::format("  shape      | {} | checkpoint {} vs model {}\n", m.name,
                       m.checkpoint_shape, m.model_shape);
  }
  return out;
}

StateDict ModuleState::state_dict() const {
  StateDict out;
  for (const auto& item : module_->named_parameters(/*recurse=*/true)) out[item.key()] = item.value();
  for (const auto& item : module_->named_buffers(/*recurse=*/true)) out[item.key()] = item.value();
  return out;
}

namespace {

// Compares `state` with the module's `own` tensors; calls `copy(dst, src)` for every
// tensor that matches by name and shape.
template <typename CopyFn>
LoadReport match_state(const StateDict& own, const StateDict& state, CopyFn&& copy) {
  LoadReport report;
  for (const auto& [name, value] : own) {
    auto it = state.find(name);
    if (it == state.end() || !std::holds_alternative<at::Tensor>(it->second)) {
      report.missing.push_back(name);
      continue;
    }
    const at::Tensor& dst = std::get<at::Tensor>(value);
    const at::Tensor& src = std::get<at::Tensor>(it->second);
    if (src.sizes() != dst.sizes()) {
      report.shape_mismatch.push_back({name, src.sizes().vec(), dst.sizes().vec()});
      continue;
    }
    copy(dst, src);
  }
  for (const auto& [name, value] : state) {
    if (!own.count(name)) report.unexpected.push_back(name);
  }
  return report;
}

}  // namespace

LoadReport ModuleState::load_with_report(const StateDict& state) {
  at::NoGradGuard no_grad;
  return match_state(state_dict(), state, [](const at::Tensor& dst, const at::Tensor& src) {
    if (dst.is_same(src)) return;  // the loader already read into the module's tensor
    at::Tensor d = dst;  // shares storage with the module's tensor
    d.copy_(src);
  });
}

LoadReport ModuleState::compare(const StateDict& state) const {
  return match_state(state_dict(), state, [](const at::Tensor&, const at::Tensor&) {});
}

void ModuleState::load_state_dict(const StateDict& state) {
  LoadReport r = load_with_report(state);
  DTRAIN_CHECK_T(CheckpointError, r.clean(), "model state does not match the model:\n{}",
                 r.table());
}

StateDict RngState::state_dict() const {
  StateDict out;
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    out["cpu"] = gen.get_state();
  }
  if (at::hasCUDA()) {
    for (int i = 0; i < static_cast<int>(at::detail::getCUDAHooks().getNumGPUs()); ++i) {
      auto gen = at::globalContext().defaultGenerator(at::Device(at::kCUDA, i));
      std::lock_guard<std::mutex> lock(gen.mutex());
      out[fmt::format("cuda:{}", i)] = gen.get_state();
    }
  }
  return out;
}

void RngState::load_state_dict(const StateDict& state) {
  for (const auto& [name, value] : state) {
    const at::Tensor& t = state_tensor(state, name, "rng");
    if (name == "cpu") {
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(t);
    } else if (name.rfind("cuda:", 0) == 0) {
      const int dev = std::stoi(name.substr(5));
      DTRAIN_CHECK_T(CheckpointError,
                     at::hasCUDA() && dev < static_cast<int>(at::detail::getCUDAHooks().getNumGPUs()),
                     "rng state '{}' was saved but this process has no such CUDA device", name);
      auto gen = at::globalContext().defaultGenerator(at::Device(at::kCUDA, dev));
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(t);
    } else {
      throw CheckpointError(fmt::format("unknown rng state '{}'", name));
    }
  }
}

}  // namespace dtrain::checkpoint
