// The `cnn` reference model: Conv + BatchNorm + ReLU + max pool blocks, then Linears.
#include "models/cnn.h"

#include <algorithm>
#include <string>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "runtime/base/error.h"

namespace dtrain::models {
namespace {

void check_options(const CnnOptions& o) {
  DTRAIN_CHECK_T(ConfigError, o.in_channels > 0, "MODEL.CNN.IN_CHANNELS must be positive, got {}",
                 o.in_channels);
  DTRAIN_CHECK_T(ConfigError, o.num_classes > 0, "MODEL.CNN.NUM_CLASSES must be positive, got {}",
                 o.num_classes);
  DTRAIN_CHECK_T(ConfigError, o.hidden_dim >= 0,
                 "MODEL.CNN.HIDDEN_DIM must be 0 (no hidden layer) or positive, got {}",
                 o.hidden_dim);
  DTRAIN_CHECK_T(ConfigError, o.kernel_size > 0 && o.kernel_size % 2 == 1,
                 "MODEL.CNN.KERNEL_SIZE must be a positive odd number, got {}", o.kernel_size);
  DTRAIN_CHECK_T(ConfigError, o.input_size.size() == 2 && o.input_size[0] > 0 && o.input_size[1] > 0,
                 "MODEL.CNN.INPUT_SIZE must be [height, width] with positive values, got [{}]",
                 fmt::join(o.input_size, ", "));
  DTRAIN_CHECK_T(ConfigError, !o.channels.empty(),
                 "MODEL.CNN.CHANNELS must name at least one conv block");
  for (size_t i = 0; i < o.channels.size(); ++i) {
    DTRAIN_CHECK_T(ConfigError, o.channels[i] > 0,
                   "MODEL.CNN.CHANNELS must hold positive widths, got [{}] (index {})",
                   fmt::join(o.channels, ", "), i);
  }
  const int64_t shrink = int64_t{1} << std::min<size_t>(o.channels.size(), 62);
  DTRAIN_CHECK_T(ConfigError, o.input_size[0] >= shrink && o.input_size[1] >= shrink,
                 "MODEL.CNN.INPUT_SIZE [{}] is pooled to nothing by {} conv blocks "
                 "(each halves height and width)",
                 fmt::join(o.input_size, ", "), o.channels.size());
}

// Not thread-safe (as any nn::Module).
class Cnn : public Model {
 public:
  explicit Cnn(const CnnOptions& o) : in_channels_(o.in_channels), input_size_(o.input_size) {
    check_options(o);
    int64_t in = o.in_channels;
    int64_t h = o.input_size[0];
    int64_t w = o.input_size[1];
    for (size_t i = 0; i < o.channels.size(); ++i) {
      const int64_t out = o.channels[i];
      convs_.push_back(register_module(
          fmt::format("conv{}", i + 1),
          torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, o.kernel_size)
                                .padding(o.kernel_size / 2)
                                .bias(false))));
      bns_.push_back(register_module(fmt::format("bn{}", i + 1), torch::nn::BatchNorm2d(out)));
      in = out;
      h /= 2;
      w /= 2;
    }
    int64_t features = in * h * w;
    if (o.hidden_dim > 0) {
      fc1_ = register_module("fc1", torch::nn::Linear(features, o.hidden_dim));
      features = o.hidden_dim;
    }
    head_ = register_module("head", torch::nn::Linear(features, o.num_classes));
  }

  at::Tensor forward(const at::Tensor& inputs) override {
    DTRAIN_CHECK(inputs.dim() == 4 && inputs.size(0) > 0 && inputs.size(1) == in_channels_ &&
                     inputs.size(2) == input_size_[0] && inputs.size(3) == input_size_[1],
                 "cnn: expected inputs [B, {}, {}, {}] (MODEL.CNN.IN_CHANNELS, INPUT_SIZE), "
                 "got shape [{}]",
                 in_channels_, input_size_[0], input_size_[1], fmt::join(inputs.sizes(), ", "));
    DTRAIN_CHECK(inputs.is_floating_point(), "cnn: expected floating-point inputs, got {}",
                 std::string(c10::toString(inputs.scalar_type())));
    at::Tensor x = inputs;
    for (size_t i = 0; i < convs_.size(); ++i) {
      x = at::max_pool2d(at::relu(bns_[i]->forward(convs_[i]->forward(x))), {2, 2});
    }
    x = x.flatten(1);
    if (fc1_) x = at::relu(fc1_->forward(x));
    return head_->forward(x);
  }

  Task task() const override { return Task::kClassification; }

 private:
  int64_t in_channels_;
  std::vector<int64_t> input_size_;
  std::vector<torch::nn::Conv2d> convs_;
  std::vector<torch::nn::BatchNorm2d> bns_;
  torch::nn::Linear fc1_{nullptr};
  torch::nn::Linear head_{nullptr};
};

}  // namespace

CnnOptions CnnOptions::from_config(const Config& cfg) {
  CnnOptions o;
  o.in_channels = cfg.get_int("MODEL.CNN.IN_CHANNELS");
  o.input_size = cfg.get_int_list("MODEL.CNN.INPUT_SIZE");
  o.channels = cfg.get_int_list("MODEL.CNN.CHANNELS");
  o.kernel_size = cfg.get_int("MODEL.CNN.KERNEL_SIZE");
  o.hidden_dim = cfg.get_int("MODEL.CNN.HIDDEN_DIM");
  o.num_classes = cfg.get_int("MODEL.CNN.NUM_CLASSES");
  return o;
}

std::shared_ptr<Model> make_cnn(const CnnOptions& options) {
  return std::make_shared<Cnn>(options);
}

}  // namespace dtrain::models
