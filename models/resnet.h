// The `resnet` reference model (MODEL.RESNET.*): ResNet-18/34 (basic blocks) and
// ResNet-50/101 (bottleneck blocks), with a CIFAR stem (the default) or torchvision's
// ImageNet stem, whose state dict is torchvision's key for key.
//
//   auto model = dtrain::models::make_resnet({/*depth=*/18, /*width=*/64, 3, 10});
//   at::Tensor logits = model->forward(images);  // [B, 3, 32, 32] -> [B, 10]
//
//   ResNetOptions r50{50, 64, 3, 1000, ResNetStem::kImagenet};  // torchvision resnet50
//
// Not thread-safe, like any torch::nn::Module: one thread at a time uses a model (the
// training thread). make_resnet() shares no state between calls.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "models/model.h"
#include "runtime/base/config.h"

namespace dtrain::models {

// The first layers of a resnet (MODEL.RESNET.STEM).
enum class ResNetStem {
  kCifar,     // "cifar": 3x3 stride-1 conv + BatchNorm + ReLU, no max pool (32x32 inputs)
  kImagenet,  // "imagenet": torchvision's 7x7 stride-2 pad-3 conv + BatchNorm + ReLU +
              // 3x3 stride-2 pad-1 max pool (224x224 inputs)
};

// The stem named by a MODEL.RESNET.STEM value ("cifar" or "imagenet"). Throws
// ConfigError naming MODEL.RESNET.STEM, the allowed values and `name` otherwise.
ResNetStem resnet_stem_from_name(const std::string& name);

// Shape of a resnet; each field mirrors the MODEL.RESNET.* key of the same name.
struct ResNetOptions {
  int64_t depth = 18;        // 18 ([2,2,2,2]) or 34 ([3,4,6,3]) basic blocks, 50
                             // ([3,4,6,3]) or 101 ([3,4,23,3]) bottleneck blocks
  int64_t width = 64;        // planes of stage 1; stages 2-4 have 2x, 4x, 8x (bottleneck
                             // blocks output 4x their planes)
  int64_t in_channels = 3;   // channels of the input images
  int64_t num_classes = 10;  // logits per sample
  ResNetStem stem = ResNetStem::kCifar;

  // Reads MODEL.RESNET.DEPTH, .WIDTH, .IN_CHANNELS, .NUM_CLASSES and .STEM; throws
  // ConfigError for a STEM other than cifar or imagenet.
  static ResNetOptions from_config(const Config& cfg);
};

// Builds a ResNet (He et al. 2016) laid out as torchvision's `ResNet`: a stem ("conv1",
// "bn1", ReLU, and for the ImageNet stem a max pool), four stages "layer1".."layer4" of
// blocks (stride 2 in the first block of stages 2-4; torchvision's BasicBlock for
// depths 18/34, its v1.5 Bottleneck with the stride on the 3x3 conv2 for 50/101; a
// "downsample" 1x1 conv + BatchNorm shortcut where the shape changes), global average
// pooling and a Linear head "fc". Any input height/width works.
//
// Parameter and buffer names and their registration order are torchvision's
// ("conv1.weight", "bn1.{weight,bias,running_mean,running_var,num_batches_tracked}",
// "layer{1-4}.{block}.conv{1,2[,3]}.weight", "layer{1-4}.{block}.bn{1,2[,3]}.*",
// "layer{1-4}.0.downsample.{0,1}.*", "fc.{weight,bias}"): with the ImageNet stem, width
// 64 and in_channels 3, a torchvision resnet{18,34,50,101} state dict loads strictly
// and the forward pass computes the same logits. Parameter counts: CIFAR stem, 10
// classes: 11,173,962 (18), 21,282,122 (34); ImageNet stem, 1000 classes: 11,689,512
// (18), 21,797,672 (34), 25,557,032 (50), 44,549,160 (101).
//
// Init is torchvision's default: convs Kaiming-normal (fan_out, ReLU), BatchNorm weight
// 1 and bias 0 (no zero-init of the last BatchNorm of a block), the head LibTorch's
// Linear default; all drawn from the global generator.
// Throws ConfigError naming MODEL.RESNET.DEPTH and the allowed depths for another depth,
// or the MODEL.RESNET.* key of a non-positive size. forward() throws dtrain::Error
// unless the inputs are floating-point [B, IN_CHANNELS, H, W].
std::shared_ptr<Model> make_resnet(const ResNetOptions& options);

}  // namespace dtrain::models
