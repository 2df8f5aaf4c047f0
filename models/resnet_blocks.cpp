// The residual blocks of the `resnet` model (see resnet_blocks.h).
#include "models/resnet_blocks.h"

#include <ATen/ATen.h>

namespace dtrain::models::internal {
namespace {

// torchvision's shortcut projection: a 1x1 conv with the block's stride and BatchNorm,
// registered as "downsample.0" and "downsample.1".
torch::nn::Sequential projection(int64_t in, int64_t out, int64_t stride) {
  return torch::nn::Sequential(resnet_conv(in, out, 1, stride), torch::nn::BatchNorm2d(out));
}

}  // namespace

torch::nn::Conv2d resnet_conv(int64_t in, int64_t out, int64_t kernel, int64_t stride) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel)
                               .stride(stride)
                               .padding(kernel / 2)
                               .bias(false));
}

BasicBlockImpl::BasicBlockImpl(int64_t in, int64_t planes, int64_t stride)
    : conv1_(register_module("conv1", resnet_conv(in, planes, 3, stride))),
      bn1_(register_module("bn1", torch::nn::BatchNorm2d(planes))),
      conv2_(register_module("conv2", resnet_conv(planes, planes, 3, 1))),
      bn2_(register_module("bn2", torch::nn::BatchNorm2d(planes))) {
  if (stride != 1 || in != planes * kExpansion) {
    downsample_ = register_module("downsample", projection(in, planes * kExpansion, stride));
  }
}

at::Tensor BasicBlockImpl::forward(const at::Tensor& x) {
  at::Tensor y = at::relu(bn1_->forward(conv1_->forward(x)));
  y = bn2_->forward(conv2_->forward(y));
  return at::relu(y + (downsample_ ? downsample_->forward(x) : x));
}

BottleneckImpl::BottleneckImpl(int64_t in, int64_t planes, int64_t stride)
    : conv1_(register_module("conv1", resnet_conv(in, planes, 1, 1))),
      bn1_(register_module("bn1", torch::nn::BatchNorm2d(planes))),
      conv2_(register_module("conv2", resnet_conv(planes, planes, 3, stride))),
      bn2_(register_module("bn2", torch::nn::BatchNorm2d(planes))),
      conv3_(register_module("conv3", resnet_conv(planes, planes * kExpansion, 1, 1))),
      bn3_(register_module("bn3", torch::nn::BatchNorm2d(planes * kExpansion))) {
  if (stride != 1 || in != planes * kExpansion) {
    downsample_ = register_module("downsample", projection(in, planes * kExpansion, stride));
  }
}

at::Tensor BottleneckImpl::forward(const at::Tensor& x) {
  at::Tensor y = at::relu(bn1_->forward(conv1_->forward(x)));
  y = at::relu(bn2_->forward(conv2_->forward(y)));
  y = bn3_->forward(conv3_->forward(y));
  return at::relu(y + (downsample_ ? downsample_->forward(x) : x));
}

int64_t resnet_block_out_channels(ResNetBlockKind kind, int64_t planes) {
  return planes * (kind == ResNetBlockKind::kBasic ? BasicBlockImpl::kExpansion
                                                   : BottleneckImpl::kExpansion);
}

torch::nn::Sequential make_resnet_stage(ResNetBlockKind kind, int64_t in, int64_t planes,
                                        int64_t blocks, int64_t stride) {
  torch::nn::Sequential stage;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t block_in = b == 0 ? in : resnet_block_out_channels(kind, planes);
    const int64_t block_stride = b == 0 ? stride : 1;
    if (kind == ResNetBlockKind::kBasic) {
      stage->push_back(BasicBlock(block_in, planes, block_stride));
    } else {
      stage->push_back(Bottleneck(block_in, planes, block_stride));
    }
  }
  return stage;
}

}  // namespace dtrain::models::internal
