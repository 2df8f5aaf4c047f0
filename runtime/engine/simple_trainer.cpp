// SimpleTrainer::run_step and the task loss.
#include "runtime/engine/simple_trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/autograd.h>

#include "runtime/base/error.h"
#include "runtime/base/fault.h"

namespace dtrain::engine {

at::Tensor task_loss(models::Task task, const at::Tensor& logits, const at::Tensor& targets) {
  if (task == models::Task::kLanguageModel) {
    const int64_t vocab = logits.size(-1);
    return at::cross_entropy_loss(logits.reshape({-1, vocab}), targets.reshape({-1}));
  }
  return at::cross_entropy_loss(logits, targets);
}

double average_finite_loss(dist::Communicator& comm, int64_t iteration, double local_loss) {
  // The average is all-reduced for logging anyway, and a non-finite loss on any rank
  // makes it non-finite: every rank sees the same value and fails (or not) together.
  // Only then are the ranks' own losses gathered, to say where it happened.
  const double average =
      comm.size() > 1 ? comm.all_reduce_double(local_loss, dist::ReduceOp::kAvg) : local_loss;
  if (std::isfinite(average)) return average;
  std::string where;
  if (comm.size() > 1) {
    const auto losses = comm.all_gather_bytes(fmt::format("{}", local_loss));
    // Ranks with the same non-finite value are listed together, in rank order.
    std::vector<std::pair<std::string, std::vector<size_t>>> bad;
    for (size_t r = 0; r < losses.size(); ++r) {
      if (std::isfinite(std::strtod(losses[r].c_str(), nullptr))) continue;
      auto it = std::find_if(bad.begin(), bad.end(), [&](const auto& b) { return b.first == losses[r]; });
      if (it == bad.end()) {
        bad.push_back({losses[r], {r}});
      } else {
        it->second.push_back(r);
      }
    }
    for (const auto& [value, ranks] : bad) {
      where += fmt::format("{}{{'total_loss': {}}} on {} {}", where.empty() ? "" : "; ", value,
                           ranks.size() > 1 ? "ranks" : "rank", fmt::join(ranks, ", "));
    }
    where = bad.empty()
                ? fmt::format("{{'total_loss': {}}} (the average over {} ranks overflowed; "
                              "every rank's own loss was finite)",
                              average, comm.size())
                : fmt::format("{} (of {} ranks)", where, comm.size());
  } else {
    where = fmt::format("{{'total_loss': {}}}", average);
  }
  throw FloatingPointError(
      fmt::format("Loss became infinite or NaN at iteration={}!\nloss_dict = {}", iteration, where));
}

SimpleTrainer::SimpleTrainer(std::shared_ptr<models::Model> model,
                             std::shared_ptr<DataLoader> loader,
                             std::shared_ptr<torch::optim::Optimizer> optimizer,
                             std::shared_ptr<DataParallel> data_parallel, ClipFn clip)
    : model_(std::move(model)),
      loader_(std::move(loader)),
      optimizer_(std::move(optimizer)),
      data_parallel_(std::move(data_parallel)),
      clip_(std::move(clip)) {
  model_->train();
}

void SimpleTrainer::run_step() {
  const auto t0 = std::chrono::steady_clock::now();
  data::Batch batch = loader_->next();
  if (!data_parallel_->parameters().empty()) {
    const at::Device device = data_parallel_->parameters().front().device();
    if (batch.inputs.device() != device) {
      batch.inputs = batch.inputs.to(device, /*non_blocking=*/true);
      batch.targets = batch.targets.to(device, /*non_blocking=*/true);
    }
  }
  const double data_time =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  at::Tensor logits = model_->forward(batch.inputs);
  at::Tensor loss = task_loss(model_->task(), logits, batch.targets);
  for (auto& p : data_parallel_->parameters()) {
    if (p.grad().defined()) {
      p.mutable_grad().detach_();
      p.mutable_grad().zero_();
    }
  }
  data_parallel_->prepare_for_backward();
  torch::autograd::backward({loss});
  data_parallel_->reduce_gradients();
  after_backward();
  // Checked before the optimizer step, as detectron2 does: a non-finite loss leaves the
  // parameters as they were.
  auto& comm = data_parallel_->comm();
  double local_loss = loss.item<double>();
  if (fault::poisoned("train.loss", comm.rank())) local_loss = std::nan("");
  const double loss_value = average_finite_loss(comm, iter_, local_loss);
  if (clip_) clip_(data_parallel_->parameters());
  optimizer_->step();
  data_parallel_->sync_buffers();
  fault::point("train.after_step", comm.rank());

  storage_.put_scalar("total_loss", loss_value);
  storage_.put_scalar("data_time", data_time);
  if (comm.size() > 1) {
    // Launch-to-completion time of the gradient all-reduce, and the part of it that
    // backward did not hide (time spent waiting after backward).
    storage_.put_scalar("allreduce_time", data_parallel_->last_allreduce_seconds());
    storage_.put_scalar("comm_exposed_time", data_parallel_->last_reduce_seconds());
  }
}

}  // namespace dtrain::engine
