// The `resnet` reference model: CIFAR-style ResNet-18/34 built from basic blocks.
#include "models/resnet.h"

#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "runtime/base/error.h"

namespace dtrain::models {
namespace {

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel)
                               .stride(stride)
                               .padding(kernel / 2)
                               .bias(false));
}

// Two 3x3 convs with BatchNorm and a residual connection (projected by a 1x1 conv +
// BatchNorm when the stride or the channel count changes). Not thread-safe.
class BasicBlockImpl : public torch::nn::Module {
 public:
  BasicBlockImpl(int64_t in, int64_t out, int64_t stride)
      : conv1_(register_module("conv1", conv(in, out, 3, stride))),
        bn1_(register_module("bn1", torch::nn::BatchNorm2d(out))),
        conv2_(register_module("conv2", conv(out, out, 3, 1))),
        bn2_(register_module("bn2", torch::nn::BatchNorm2d(out))) {
    if (stride != 1 || in != out) {
      downsample_ = register_module(
          "downsample", torch::nn::Sequential(conv(in, out, 1, stride),
                                              torch::nn::BatchNorm2d(out)));
    }
  }

  at::Tensor forward(const at::Tensor& x) {
    at::Tensor y = at::relu(bn1_->forward(conv1_->forward(x)));
    y = bn2_->forward(conv2_->forward(y));
    return at::relu(y + (downsample_ ? downsample_->forward(x) : x));
  }

 private:
  torch::nn::Conv2d conv1_;
  torch::nn::BatchNorm2d bn1_;
  torch::nn::Conv2d conv2_;
  torch::nn::BatchNorm2d bn2_;
  torch::nn::Sequential downsample_{nullptr};
};
TORCH_MODULE(BasicBlock);

// Not thread-safe (as any nn::Module).
class ResNet : public Model {
 public:
  explicit ResNet(const ResNetOptions& options) : in_channels_(options.in_channels) {
    std::vector<int64_t> blocks;
    if (options.depth == 18) {
      blocks = {2, 2, 2, 2};
    } else if (options.depth == 34) {
      blocks = {3, 4, 6, 3};
    } else {
      throw ConfigError(fmt::format(
          "MODEL.RESNET.DEPTH must be 18 or 34 (basic-block ResNets), got {}",
          options.depth));
    }
    DTRAIN_CHECK_T(ConfigError, options.width > 0, "MODEL.RESNET.WIDTH must be positive, got {}",
                   options.width);
    DTRAIN_CHECK_T(ConfigError, options.in_channels > 0,
                   "MODEL.RESNET.IN_CHANNELS must be positive, got {}", options.in_channels);
    DTRAIN_CHECK_T(ConfigError, options.num_classes > 0,
                   "MODEL.RESNET.NUM_CLASSES must be positive, got {}", options.num_classes);

    stem_conv_ = register_module("conv1", conv(options.in_channels, options.width, 3, 1));
    stem_bn_ = register_module("bn1", torch::nn::BatchNorm2d(options.width));
    int64_t in = options.width;
    for (size_t stage = 0; stage < blocks.size(); ++stage) {
      const int64_t out = options.width << stage;
      torch::nn::Sequential layer;
      for (int64_t b = 0; b < blocks[stage]; ++b) {
        layer->push_back(BasicBlock(in, out, (stage > 0 && b == 0) ? 2 : 1));
        in = out;
      }
      stages_.push_back(register_module(fmt::format("layer{}", stage + 1), layer));
    }
    fc_ = register_module("fc", torch::nn::Linear(in, options.num_classes));

    for (auto& module : modules(/*include_self=*/false)) {
      if (auto* c = module->as<torch::nn::Conv2d>()) {
        torch::nn::init::kaiming_normal_(c->weight, /*a=*/0, torch::kFanOut, torch::kReLU);
      } else if (auto* bn = module->as<torch::nn::BatchNorm2d>()) {
        torch::nn::init::ones_(bn->weight);
        torch::nn::init::zeros_(bn->bias);
      }
    }
  }

  at::Tensor forward(const at::Tensor& inputs) override {
    DTRAIN_CHECK(inputs.dim() == 4 && inputs.size(1) == in_channels_,
                 "resnet: expected inputs [B, {}, H, W] (MODEL.RESNET.IN_CHANNELS={}), "
                 "got shape [{}]",
                 in_channels_, in_channels_, fmt::join(inputs.sizes(), ", "));
    DTRAIN_CHECK(inputs.is_floating_point(), "resnet: expected floating-point inputs, got {}",
                 std::string(c10::toString(inputs.scalar_type())));
    at::Tensor x = at::relu(stem_bn_->forward(stem_conv_->forward(inputs)));
    for (auto& stage : stages_) x = stage->forward(x);
    x = x.mean({2, 3});  // global average pool -> [B, 8 * WIDTH]
    return fc_->forward(x);
  }

  Task task() const override { return Task::kClassification; }

 private:
  int64_t in_channels_;
  torch::nn::Conv2d stem_conv_{nullptr};
  torch::nn::BatchNorm2d stem_bn_{nullptr};
  std::vector<torch::nn::Sequential> stages_;
  torch::nn::Linear fc_{nullptr};
};

}  // namespace

ResNetOptions ResNetOptions::from_config(const Config& cfg) {
  ResNetOptions options;
  options.depth = cfg.get_int("MODEL.RESNET.DEPTH");
  options.width = cfg.get_int("MODEL.RESNET.WIDTH");
  options.in_channels = cfg.get_int("MODEL.RESNET.IN_CHANNELS");
  options.num_classes = cfg.get_int("MODEL.RESNET.NUM_CLASSES");
  return options;
}

std::shared_ptr<Model> make_resnet(const ResNetOptions& options) {
  return std::make_shared<ResNet>(options);
}

}  // namespace dtrain::models
