// Helpers shared by the model tests (see model_test_util.h).
#include "tests/models/model_test_util.h"

#include <ATen/ATen.h>

namespace dtrain::models::testing {

at::Tensor task_loss(Model& model, const at::Tensor& inputs, const at::Tensor& targets) {
  at::Tensor logits = model.forward(inputs);
  if (model.task() == Task::kLanguageModel) {
    return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}),
                                  targets.reshape({-1}));
  }
  return at::cross_entropy_loss(logits, targets);
}

std::vector<double> sgd_losses(Model& model, const at::Tensor& inputs,
                               const at::Tensor& targets, int steps, double lr) {
  std::vector<double> losses;
  for (int step = 0; step < steps; ++step) {
    model.zero_grad();
    at::Tensor loss = task_loss(model, inputs, targets);
    loss.backward();
    losses.push_back(loss.item<double>());
    at::NoGradGuard no_grad;
    for (auto& p : model.parameters()) p.sub_(p.grad() * lr);
  }
  return losses;
}

bool bitwise_equal_state(Model& a, Model& b) {
  auto compare = [](const auto& x, const auto& y) {
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i) {
      if (x[i].first != y[i].first || !at::equal(x[i].second, y[i].second)) return false;
    }
    return true;
  };
  return compare(a.named_parameters().pairs(), b.named_parameters().pairs()) &&
         compare(a.named_buffers().pairs(), b.named_buffers().pairs());
}

int64_t parameter_count(const Model& model) {
  int64_t count = 0;
  for (const auto& p : model.parameters()) count += p.numel();
  return count;
}

std::vector<std::string> parameter_names(const Model& model) {
  return model.named_parameters().keys();
}

std::vector<std::string> state_dict_keys(const torch::nn::Module& module) {
  std::vector<std::string> keys;
  auto add_own = [&keys](const torch::nn::Module& m, const std::string& prefix) {
    for (const auto& p : m.named_parameters(/*recurse=*/false)) keys.push_back(prefix + p.key());
    for (const auto& b : m.named_buffers(/*recurse=*/false)) keys.push_back(prefix + b.key());
  };
  add_own(module, "");
  // include_self=false: named_modules() can then be called on a module not in a shared_ptr.
  for (const auto& item : module.named_modules("", /*include_self=*/false)) {
    add_own(*item.value(), item.key() + ".");
  }
  return keys;
}

}  // namespace dtrain::models::testing
