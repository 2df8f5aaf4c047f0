// Distributed evaluation (see evaluator.h).
#include "runtime/engine/evaluator.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

namespace dtrain::engine {

std::map<std::string, double> evaluate(models::Model& model, const data::Dataset& dataset,
                                       dist::Communicator& comm, int64_t global_batch) {
  at::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const int world = comm.size();
  const int64_t per_rank = std::max<int64_t>(1, (global_batch + world - 1) / world);
  // [sum of per-element loss, correct predictions, elements]
  double sums[3] = {0.0, 0.0, 0.0};
  std::vector<int64_t> indices;
  auto flush = [&] {
    if (indices.empty()) return;
    data::Batch b = dataset.get_batch(indices);
    if (!model.parameters().empty() && model.parameters().front().device() != b.inputs.device()) {
      b.inputs = b.inputs.to(model.parameters().front().device());
      b.targets = b.targets.to(model.parameters().front().device());
    }
    at::Tensor logits = model.forward(b.inputs);
    const int64_t classes = logits.size(-1);
    at::Tensor flat_logits = logits.reshape({-1, classes});
    at::Tensor flat_targets = b.targets.reshape({-1});
    at::Tensor loss = at::cross_entropy_loss(flat_logits, flat_targets, {}, at::Reduction::Sum);
    sums[0] += loss.item<double>();
    sums[1] += flat_logits.argmax(1).eq(flat_targets).sum().item<double>();
    sums[2] += static_cast<double>(flat_targets.numel());
    indices.clear();
  };
  for (int64_t i = comm.rank(); i < dataset.size(); i += world) {
    indices.push_back(i);
    if (static_cast<int64_t>(indices.size()) == per_rank) flush();
  }
  flush();
  if (was_training) model.train();

  at::Tensor t = at::tensor(std::vector<double>{sums[0], sums[1], sums[2]}, at::kDouble);
  comm.all_reduce(t, dist::ReduceOp::kSum);
  const double loss_sum = t[0].item<double>(), correct = t[1].item<double>();
  const double count = std::max(1.0, t[2].item<double>());
  std::map<std::string, double> out{{"loss", loss_sum / count}, {"accuracy", correct / count}};
  if (model.task() == models::Task::kLanguageModel) out["perplexity"] = std::exp(loss_sum / count);
  return out;
}

}  // namespace dtrain::engine
