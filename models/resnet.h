// The `resnet` reference model: CIFAR-style ResNet-18/34 with basic blocks (MODEL.RESNET.*).
//
//   auto model = dtrain::models::make_resnet({/*depth=*/18, /*width=*/64, 3, 10});
//   at::Tensor logits = model->forward(images);  // [B, 3, 32, 32] -> [B, 10]
#pragma once

#include <cstdint>
#include <memory>

#include "models/model.h"
#include "runtime/base/config.h"

namespace dtrain::models {

// Shape of a resnet; each field mirrors the MODEL.RESNET.* key of the same name.
struct ResNetOptions {
  int64_t depth = 18;        // 18 ([2,2,2,2] blocks) or 34 ([3,4,6,3] blocks)
  int64_t width = 64;        // channels of stage 1; stages 2-4 have 2x, 4x, 8x
  int64_t in_channels = 3;   // channels of the input images
  int64_t num_classes = 10;  // logits per sample

  // Reads MODEL.RESNET.DEPTH, .WIDTH, .IN_CHANNELS and .NUM_CLASSES.
  static ResNetOptions from_config(const Config& cfg);
};

// Builds a CIFAR-style ResNet (He et al. 2016, as in the common CIFAR-10 ResNet-18):
// a 3x3 conv stem (stride 1, no max-pool) + BatchNorm + ReLU, four stages of basic
// blocks (two 3x3 convs with BatchNorm; stride 2 in the first block of stages 2-4;
// a 1x1 conv + BatchNorm projection shortcut where the shape changes), global average
// pooling and a Linear head. Depth 18 with width 64 and 10 classes has 11,173,962
// parameters. Any input height/width works (CIFAR's 32x32 is the intended size).
//
// Parameter names follow torchvision: "conv1.weight", "bn1.{weight,bias}",
// "layer{1-4}.{block}.conv{1,2}.weight", "layer{1-4}.{block}.bn{1,2}.*",
// "layer{2-4}.0.downsample.{0,1}.*" (the shortcut conv and BatchNorm), "fc.{weight,bias}";
// BatchNorm buffers are "running_mean", "running_var", "num_batches_tracked".
// Convs use Kaiming-normal init (fan_out, ReLU), BatchNorm starts at weight 1, bias 0,
// the head uses LibTorch's Linear default; all drawn from the global generator.
// Throws ConfigError naming MODEL.RESNET.DEPTH for a depth other than 18 or 34, or the
// MODEL.RESNET.* key of a non-positive size. forward() throws dtrain::Error unless the
// inputs are floating-point [B, IN_CHANNELS, H, W].
std::shared_ptr<Model> make_resnet(const ResNetOptions& options);

}  // namespace dtrain::models
