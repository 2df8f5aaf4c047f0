// The model interface and the registry that builds reference models by name.
//
//   auto model = dtrain::models::build_model(cfg);      // MODEL.NAME: mlp, cnn, resnet, gpt
//   at::Tensor logits = model->forward(batch.inputs);
//
// Models are plain torch::nn::Modules: they know nothing about MPI, devices or data
// parallelism (the engine wraps them). Not thread-safe (as any nn::Module).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "runtime/base/config.h"

namespace dtrain::models {

// What a model's logits mean, which decides the loss and the evaluation metric.
enum class Task {
  kClassification,  // inputs [B, ...] -> logits [B, C]; targets [B] int64
  kLanguageModel,   // inputs [B, T] int64 tokens -> logits [B, T, V]; targets [B, T]
};

class Model : public torch::nn::Module {
 public:
  // Logits for a batch of inputs (see Task for shapes).
  virtual at::Tensor forward(const at::Tensor& inputs) = 0;
  virtual Task task() const = 0;
};

using ModelBuilder = std::function<std::shared_ptr<Model>(const Config&)>;

// Name -> builder for every reference model, declared in one place (registry.cpp).
const std::map<std::string, ModelBuilder>& model_registry();

// Builds MODEL.NAME from cfg. Throws dtrain::ConfigError naming the unknown model and
// listing the registered ones, or naming the bad MODEL.<NAME>.* key.
std::shared_ptr<Model> build_model(const Config& cfg);

}  // namespace dtrain::models
