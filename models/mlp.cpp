// The `mlp` reference model: flatten, Linear + ReLU per hidden layer, Linear head.
#include "models/mlp.h"

#include <string>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/modules/linear.h>

#include "runtime/base/error.h"

namespace dtrain::models {
namespace {

// Not thread-safe (as any nn::Module).
class Mlp : public Model {
 public:
  explicit Mlp(const MlpOptions& options) : input_dim_(options.input_dim) {
    DTRAIN_CHECK_T(ConfigError, options.input_dim > 0,
                   "MODEL.MLP.INPUT_DIM must be positive, got {}", options.input_dim);
    DTRAIN_CHECK_T(ConfigError, options.num_classes > 0,
                   "MODEL.MLP.NUM_CLASSES must be positive, got {}", options.num_classes);
    int64_t in = options.input_dim;
    for (size_t i = 0; i < options.hidden_dims.size(); ++i) {
      const int64_t out = options.hidden_dims[i];
      DTRAIN_CHECK_T(ConfigError, out > 0,
                     "MODEL.MLP.HIDDEN_DIMS must hold positive widths, got {} at index {}",
                     fmt::join(options.hidden_dims, ", "), i);
      hidden_.push_back(
          register_module(fmt::format("fc{}", i + 1), torch::nn::Linear(in, out)));
      in = out;
    }
    head_ = register_module("head", torch::nn::Linear(in, options.num_classes));
  }

  at::Tensor forward(const at::Tensor& inputs) override {
    DTRAIN_CHECK(inputs.dim() >= 1 && inputs.size(0) > 0 &&
                     inputs.numel() == inputs.size(0) * input_dim_,
                 "mlp: expected inputs [B, ...] with {} features per sample "
                 "(MODEL.MLP.INPUT_DIM), got shape [{}]",
                 input_dim_, fmt::join(inputs.sizes(), ", "));
    DTRAIN_CHECK(inputs.is_floating_point(), "mlp: expected floating-point inputs, got {}",
                 std::string(c10::toString(inputs.scalar_type())));
    at::Tensor x = inputs.reshape({inputs.size(0), input_dim_});
    for (auto& fc : hidden_) x = at::relu(fc->forward(x));
    return head_->forward(x);
  }

  Task task() const override { return Task::kClassification; }

 private:
  int64_t input_dim_;
  std::vector<torch::nn::Linear> hidden_;
  torch::nn::Linear head_{nullptr};
};

}  // namespace

MlpOptions MlpOptions::from_config(const Config& cfg) {
  MlpOptions options;
  options.input_dim = cfg.get_int("MODEL.MLP.INPUT_DIM");
  options.hidden_dims = cfg.get_int_list("MODEL.MLP.HIDDEN_DIMS");
  options.num_classes = cfg.get_int("MODEL.MLP.NUM_CLASSES");
  return options;
}

std::shared_ptr<Model> make_mlp(const MlpOptions& options) {
  return std::make_shared<Mlp>(options);
}

}  // namespace dtrain::models
