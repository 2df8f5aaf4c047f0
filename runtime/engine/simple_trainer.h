// SimpleTrainer: one data-parallel step per iteration (detectron2's SimpleTrainer),
// fed by a data::DataLoader, and the task loss.
//
// run_step(): next batch -> forward -> loss -> zero grads -> backward -> average
// gradients over ranks -> after_backward hooks -> clip -> optimizer step -> sync buffers.
// It records "total_loss" (averaged over ranks) and "data_time". Not thread-safe.
#pragma once

#include <functional>
#include <memory>

#include <torch/optim/optimizer.h>

#include "models/model.h"
#include "runtime/data/data_loader.h"
#include "runtime/engine/data_parallel.h"
#include "runtime/engine/trainer.h"

namespace dtrain::engine {

using data::DataLoader;

// Mean cross-entropy of logits against targets for the model's task (for language
// models over every token position).
at::Tensor task_loss(models::Task task, const at::Tensor& logits, const at::Tensor& targets);

class SimpleTrainer : public TrainerBase {
 public:
  using ClipFn = std::function<void(const std::vector<at::Tensor>&)>;

  SimpleTrainer(std::shared_ptr<models::Model> model, std::shared_ptr<DataLoader> loader,
                std::shared_ptr<torch::optim::Optimizer> optimizer,
                std::shared_ptr<DataParallel> data_parallel, ClipFn clip = nullptr);

  void run_step() override;

  models::Model& model() { return *model_; }
  std::shared_ptr<models::Model> model_ptr() { return model_; }
  DataLoader& loader() { return *loader_; }
  torch::optim::Optimizer& optimizer() { return *optimizer_; }
  DataParallel& data_parallel() { return *data_parallel_; }

 private:
  std::shared_ptr<models::Model> model_;
  std::shared_ptr<DataLoader> loader_;
  std::shared_ptr<torch::optim::Optimizer> optimizer_;
  std::shared_ptr<DataParallel> data_parallel_;
  ClipFn clip_;
};

}  // namespace dtrain::engine
