// The `resnet` reference model: torchvision's ResNet layout with a CIFAR or ImageNet stem.
#include "models/resnet.h"

#include <array>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/linear.h>

#include "models/resnet_blocks.h"
#include "runtime/base/error.h"

namespace dtrain::models {
namespace {

using internal::ResNetBlockKind;

// Block type and blocks per stage of one supported depth (torchvision's table).
struct DepthSpec {
  int64_t depth;
  ResNetBlockKind kind;
  std::array<int64_t, 4> blocks;
};

constexpr std::array<DepthSpec, 4> kDepths = {{
    {18, ResNetBlockKind::kBasic, {2, 2, 2, 2}},
    {34, ResNetBlockKind::kBasic, {3, 4, 6, 3}},
    {50, ResNetBlockKind::kBottleneck, {3, 4, 6, 3}},
    {101, ResNetBlockKind::kBottleneck, {3, 4, 23, 3}},
}};

const DepthSpec& depth_spec(int64_t depth) {
  for (const DepthSpec& spec : kDepths) {
    if (spec.depth == depth) return spec;
  }
  throw ConfigError(fmt::format(
      "MODEL.RESNET.DEPTH must be one of 18, 34 (basic blocks), 50, 101 (bottleneck "
      "blocks), got {}",
      depth));
}

void check_sizes(const ResNetOptions& options) {
  DTRAIN_CHECK_T(ConfigError, options.width > 0, "MODEL.RESNET.WIDTH must be positive, got {}",
                 options.width);
  DTRAIN_CHECK_T(ConfigError, options.in_channels > 0,
                 "MODEL.RESNET.IN_CHANNELS must be positive, got {}", options.in_channels);
  DTRAIN_CHECK_T(ConfigError, options.num_classes > 0,
                 "MODEL.RESNET.NUM_CLASSES must be positive, got {}", options.num_classes);
}

// Not thread-safe (as any nn::Module).
class ResNet : public Model {
 public:
  explicit ResNet(const ResNetOptions& options)
      : in_channels_(options.in_channels), stem_(options.stem) {
    const DepthSpec& spec = depth_spec(options.depth);
    check_sizes(options);
    // Registration order is torchvision's: conv1, bn1, layer1..layer4, fc.
    const int64_t kernel = stem_ == ResNetStem::kImagenet ? 7 : 3;
    const int64_t stride = stem_ == ResNetStem::kImagenet ? 2 : 1;
    stem_conv_ = register_module(
        "conv1", internal::resnet_conv(options.in_channels, options.width, kernel, stride));
    stem_bn_ = register_module("bn1", torch::nn::BatchNorm2d(options.width));
    int64_t in = options.width;
    for (size_t stage = 0; stage < spec.blocks.size(); ++stage) {
      const int64_t planes = options.width << stage;
      stages_.push_back(register_module(
          fmt::format("layer{}", stage + 1),
          internal::make_resnet_stage(spec.kind, in, planes, spec.blocks[stage],
                                      stage == 0 ? 1 : 2)));
      in = internal::resnet_block_out_channels(spec.kind, planes);
    }
    fc_ = register_module("fc", torch::nn::Linear(in, options.num_classes));
    init_weights();
  }

  at::Tensor forward(const at::Tensor& inputs) override {
    check_inputs(inputs);
    at::Tensor x = at::relu(stem_bn_->forward(stem_conv_->forward(inputs)));
    if (stem_ == ResNetStem::kImagenet) {
      x = at::max_pool2d(x, /*kernel_size=*/{3, 3}, /*stride=*/{2, 2}, /*padding=*/{1, 1});
    }
    for (auto& stage : stages_) x = stage->forward(x);
    // Global average pool -> [B, C]; what adaptive_avg_pool2d(x, 1) computes for 1x1.
    x = x.mean({2, 3});
    return fc_->forward(x);
  }

  Task task() const override { return Task::kClassification; }

 private:
  // torchvision's init: Kaiming-normal (fan_out, ReLU) convs, BatchNorm 1 / 0.
  void init_weights() {
    for (auto& module : modules(/*include_self=*/false)) {
      if (auto* c = module->as<torch::nn::Conv2d>()) {
        torch::nn::init::kaiming_normal_(c->weight, /*a=*/0, torch::kFanOut, torch::kReLU);
      } else if (auto* bn = module->as<torch::nn::BatchNorm2d>()) {
        torch::nn::init::ones_(bn->weight);
        torch::nn::init::zeros_(bn->bias);
      }
    }
  }

  void check_inputs(const at::Tensor& inputs) const {
    DTRAIN_CHECK(inputs.dim() == 4 && inputs.size(1) == in_channels_,
                 "resnet: expected inputs [B, {}, H, W] (MODEL.RESNET.IN_CHANNELS={}), "
                 "got shape [{}]",
                 in_channels_, in_channels_, fmt::join(inputs.sizes(), ", "));
    DTRAIN_CHECK(inputs.is_floating_point(), "resnet: expected floating-point inputs, got {}",
                 std::string(c10::toString(inputs.scalar_type())));
  }

  int64_t in_channels_;
  ResNetStem stem_;
  torch::nn::Conv2d stem_conv_{nullptr};
  torch::nn::BatchNorm2d stem_bn_{nullptr};
  std::vector<torch::nn::Sequential> stages_;
  torch::nn::Linear fc_{nullptr};
};

}  // namespace

ResNetStem resnet_stem_from_name(const std::string& name) {
  if (name == "cifar") return ResNetStem::kCifar;
  if (name == "imagenet") return ResNetStem::kImagenet;
  throw ConfigError(
      fmt::format("MODEL.RESNET.STEM must be one of cifar, imagenet, got '{}'", name));
}

ResNetOptions ResNetOptions::from_config(const Config& cfg) {
  ResNetOptions options;
  options.depth = cfg.get_int("MODEL.RESNET.DEPTH");
  options.width = cfg.get_int("MODEL.RESNET.WIDTH");
  options.in_channels = cfg.get_int("MODEL.RESNET.IN_CHANNELS");
  options.num_classes = cfg.get_int("MODEL.RESNET.NUM_CLASSES");
  options.stem = resnet_stem_from_name(cfg.get_string("MODEL.RESNET.STEM"));
  return options;
}

std::shared_ptr<Model> make_resnet(const ResNetOptions& options) {
  return std::make_shared<ResNet>(options);
}

}  // namespace dtrain::models
