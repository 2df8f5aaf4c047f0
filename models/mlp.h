// The `mlp` reference model: a multi-layer perceptron classifier (MODEL.MLP.*).
//
//   auto model = dtrain::models::make_mlp({/*input_dim=*/784, /*hidden_dims=*/{256}, 10});
//   at::Tensor logits = model->forward(images);  // [B, 1, 28, 28] -> [B, 10]
//
// Not thread-safe, like any torch::nn::Module: one thread at a time uses a model (the
// training thread). make_mlp() shares no state between calls.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "models/model.h"
#include "runtime/base/config.h"

namespace dtrain::models {

// Shape of an mlp; each field mirrors the MODEL.MLP.* key of the same name.
struct MlpOptions {
  int64_t input_dim = 784;                      // features per sample after flattening
  std::vector<int64_t> hidden_dims{2048, 2048};  // one Linear + ReLU per entry; may be empty
  int64_t num_classes = 10;                      // logits per sample

  // Reads MODEL.MLP.INPUT_DIM, MODEL.MLP.HIDDEN_DIMS and MODEL.MLP.NUM_CLASSES.
  static MlpOptions from_config(const Config& cfg);
};

// Builds an mlp: each sample of the inputs [B, ...] is flattened to INPUT_DIM features,
// then goes through Linear + ReLU per hidden dim and a final Linear to NUM_CLASSES.
// Parameters are "fc1.weight", "fc1.bias", ..., "fcN.*" for the N hidden layers and
// "head.weight", "head.bias" for the classifier. Initialization is LibTorch's Linear
// default (drawn from the global generator, so deterministic after torch::manual_seed).
// Throws ConfigError naming the MODEL.MLP.* key when a dimension is not positive.
// forward() throws dtrain::Error when a sample does not hold INPUT_DIM features.
std::shared_ptr<Model> make_mlp(const MlpOptions& options);

}  // namespace dtrain::models
