// The `cnn` reference model (MODEL.CNN.*): a small convolutional classifier, one
// Conv + BatchNorm + ReLU + 2x2 max pool block per entry of CHANNELS, then a hidden
// Linear + ReLU and a Linear head. The default (two blocks of 32 and 64 3x3 filters on
// 28x28 grey images) is the "two conv layers with pooling" of Fashion-MNIST's table.
//
//   auto model = dtrain::models::make_cnn({});        // [B, 1, 28, 28] -> [B, 10]
//   at::Tensor logits = model->forward(images);
//
// Not thread-safe, like any torch::nn::Module: one thread at a time uses a model (the
// training thread). make_cnn() shares no state between calls.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "models/model.h"
#include "runtime/base/config.h"

namespace dtrain::models {

// Shape of a cnn; each field mirrors the MODEL.CNN.* key of the same name.
struct CnnOptions {
  int64_t in_channels = 1;                // channels of the input images
  std::vector<int64_t> input_size{28, 28};  // height, width of the input images
  std::vector<int64_t> channels{32, 64};  // filters of each conv block (at least one)
  int64_t kernel_size = 3;                // odd; "same" padding
  int64_t hidden_dim = 256;               // width of the hidden Linear (0: none)
  int64_t num_classes = 10;               // logits per sample

  // Reads MODEL.CNN.IN_CHANNELS, .INPUT_SIZE, .CHANNELS, .KERNEL_SIZE, .HIDDEN_DIM and
  // .NUM_CLASSES.
  static CnnOptions from_config(const Config& cfg);
};

// Builds a cnn. Block i (1-based) is "conv{i}" (kernel_size x kernel_size, stride 1,
// padding kernel_size / 2, no bias) + "bn{i}" (BatchNorm2d) + ReLU + 2x2 max pool, which
// halves height and width (rounding down). Then flatten, "fc1" (Linear + ReLU; absent
// when hidden_dim is 0) and "head" (Linear to num_classes). Names and order match a
// PyTorch module with the same attribute names, so its state dict loads strictly.
// Throws ConfigError naming the MODEL.CNN.* key for a non-positive size, an even kernel,
// or an input pooled to nothing. forward() throws dtrain::Error for inputs that are not
// [B, in_channels, height, width].
std::shared_ptr<Model> make_cnn(const CnnOptions& options);

}  // namespace dtrain::models
