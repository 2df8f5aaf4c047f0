// SimpleTrainer: one data-parallel step per iteration (detectron2's SimpleTrainer),
// fed by a data::DataLoader, and the task loss.
//
// run_step(): next batch -> forward -> loss -> zero grads -> backward -> average
// gradients over ranks -> after_backward hooks -> check the loss -> clip -> optimizer
// step -> sync buffers.
// It records "total_loss" (averaged over ranks) and "data_time"; a non-finite loss on
// any rank stops every rank with FloatingPointError (average_finite_loss). Not
// thread-safe: call from the training thread.
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

// The average of every rank's `local_loss` (collective). When it is infinite or NaN (a
// non-finite loss on any rank makes it so), throws FloatingPointError on every rank with
// the same message, in detectron2's words: "Loss became infinite or NaN at
// iteration=N!\nloss_dict = {'total_loss': nan} on rank 1 (of 2 ranks)".
double average_finite_loss(dist::Communicator& comm, int64_t iteration, double local_loss);

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
