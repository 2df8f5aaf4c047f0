// The residual blocks of the `resnet` model (torchvision's BasicBlock and v1.5 Bottleneck),
// internal to models/resnet.cpp.
//
//   torch::nn::Sequential layer2 = internal::make_resnet_stage(
//       internal::ResNetBlockKind::kBottleneck, /*in=*/256, /*planes=*/128, /*blocks=*/4,
//       /*stride=*/2);   // 256 -> 512 channels, half the height and width
//
// Submodule names and registration order are torchvision's, so that state dicts (and
// the parameters() order that numbers PyTorch optimizer state) match it key for key.
// Not thread-safe (as any nn::Module).
#pragma once

#include <cstdint>

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>

namespace dtrain::models::internal {

// A bias-free Conv2d with padding kernel / 2 (torchvision's conv1x1, conv3x3 and the
// 7x7 ImageNet stem).
torch::nn::Conv2d resnet_conv(int64_t in, int64_t out, int64_t kernel, int64_t stride);

// Two 3x3 convs with BatchNorm ("conv1", "bn1", "conv2", "bn2") and a residual
// connection, projected by "downsample" (1x1 conv + BatchNorm) when the stride or the
// channel count changes. Output channels: `planes` (expansion 1).
class BasicBlockImpl : public torch::nn::Module {
 public:
  static constexpr int64_t kExpansion = 1;
  // `in` input channels, stride of conv1 (and of the projection).
  BasicBlockImpl(int64_t in, int64_t planes, int64_t stride);
  // relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::Conv2d conv1_;
  torch::nn::BatchNorm2d bn1_;
  torch::nn::Conv2d conv2_;
  torch::nn::BatchNorm2d bn2_;
  torch::nn::Sequential downsample_{nullptr};
};
TORCH_MODULE(BasicBlock);

// torchvision's Bottleneck (ResNet v1.5: the stride sits on the 3x3 conv2): 1x1 conv
// `in` -> `planes`, 3x3 conv `planes` -> `planes`, 1x1 conv `planes` -> 4 * `planes`,
// each with BatchNorm ("conv1".."bn3"), and the residual connection, projected by
// "downsample" (1x1 conv + BatchNorm) when the stride or the channel count changes.
class BottleneckImpl : public torch::nn::Module {
 public:
  static constexpr int64_t kExpansion = 4;
  // `in` input channels, stride of conv2 (and of the projection).
  BottleneckImpl(int64_t in, int64_t planes, int64_t stride);
  // relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x)).
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::Conv2d conv1_;
  torch::nn::BatchNorm2d bn1_;
  torch::nn::Conv2d conv2_;
  torch::nn::BatchNorm2d bn2_;
  torch::nn::Conv2d conv3_;
  torch::nn::BatchNorm2d bn3_;
  torch::nn::Sequential downsample_{nullptr};
};
TORCH_MODULE(Bottleneck);

// Which block a ResNet depth uses.
enum class ResNetBlockKind { kBasic, kBottleneck };

// Output channels of a block of `kind` with `planes` (planes x expansion).
int64_t resnet_block_out_channels(ResNetBlockKind kind, int64_t planes);

// One stage ("layerN"): `blocks` blocks of `kind`, the first with `stride` and input
// channels `in`, the rest with stride 1 (torchvision's ResNet._make_layer).
torch::nn::Sequential make_resnet_stage(ResNetBlockKind kind, int64_t in, int64_t planes,
                                        int64_t blocks, int64_t stride);

}  // namespace dtrain::models::internal
