// SimpleTrainer::run_step and the task loss.
#include "runtime/engine/simple_trainer.h"

#include <chrono>
#include <cmath>

#include <ATen/ATen.h>
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
  if (clip_) clip_(data_parallel_->parameters());
  optimizer_->step();
  data_parallel_->sync_buffers();
  fault::point("train.after_step", data_parallel_->comm().rank());

  // Average first so that every rank sees the same value and fails (or not) together.
  auto& comm = data_parallel_->comm();
  double loss_value = loss.item<double>();
  if (comm.size() > 1) loss_value = comm.all_reduce_double(loss_value, dist::ReduceOp::kAvg);
  DTRAIN_CHECK(std::isfinite(loss_value), "loss became {} at iteration {}", loss_value, iter_);
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
