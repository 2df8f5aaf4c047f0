// Helpers shared by the model tests: a few plain SGD steps, parameter comparison and
// exception-message capture.
#pragma once

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <gtest/gtest.h>

#include "models/model.h"

namespace dtrain::models::testing {

// Loss of the model on (inputs, targets) by its task: cross-entropy over classes
// (kClassification) or over the vocabulary at every position (kLanguageModel).
at::Tensor task_loss(Model& model, const at::Tensor& inputs, const at::Tensor& targets);

// Runs `steps` plain SGD steps (p -= lr * grad) on one fixed batch and returns the loss
// before each step.
std::vector<double> sgd_losses(Model& model, const at::Tensor& inputs,
                               const at::Tensor& targets, int steps, double lr);

// True when both models have the same parameter and buffer names, shapes and bits.
bool bitwise_equal_state(Model& a, Model& b);

// Number of scalars over all parameters.
int64_t parameter_count(const Model& model);

// Names of all parameters, in registration order.
std::vector<std::string> parameter_names(const Model& model);

// The keys PyTorch's Module.state_dict() would have, in its order: modules in
// pre-order, each with its own parameters and then its own buffers.
std::vector<std::string> state_dict_keys(const torch::nn::Module& module);

// Calls f, which must throw E; returns the message (and records a failure otherwise).
template <typename E, typename F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "did not throw";
  return "";
}

}  // namespace dtrain::models::testing
