// Training-time augmentation of image batches (INPUT.RANDOM_FLIP, INPUT.CROP.*): a random
// flip and a random crop with zero padding (torchvision's RandomCrop(size, padding) then
// RandomHorizontalFlip), applied to each sample of a float batch [B, C, H, W].
//
//   Augmenter aug(AugmentOptions::from_config(cfg));
//   aug.check_sample_shape(dataset->sample_shape(), "fashion_mnist_train");
//   aug.apply(batch, seed, epoch, indices, dataset->padding_value());
//
// The randomness of a sample depends only on (seed, epoch, sample index): never on the
// rank, the world size, the data loader's worker or the order in which batches are
// made, so that a resumed run (also on another world size) sees the same augmented
// samples as an uninterrupted one. Immutable after construction: apply() is thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/base/config.h"
#include "runtime/data/dataset.h"

namespace dtrain::data {

enum class FlipMode { kNone, kHorizontal, kVertical };

// FlipMode of an INPUT.RANDOM_FLIP value: "none", "horizontal" or "vertical" (detectron2's
// values). Throws ConfigError naming the key and the allowed values otherwise.
FlipMode flip_mode_from_name(const std::string& name);

struct AugmentOptions {
  FlipMode flip = FlipMode::kNone;  // each sample flipped with probability 1/2
  int64_t crop_padding = 0;         // > 0: pad each side by this, crop back at random

  bool enabled() const { return flip != FlipMode::kNone || crop_padding > 0; }
  // Reads INPUT.RANDOM_FLIP, INPUT.CROP.ENABLED and INPUT.CROP.PADDING.
  static AugmentOptions from_config(const Config& cfg);
};

class Augmenter {
 public:
  explicit Augmenter(AugmentOptions options) : options_(options) {}

  const AugmentOptions& options() const { return options_; }

  // Throws ConfigError naming INPUT.RANDOM_FLIP / INPUT.CROP.ENABLED and `dataset` when
  // samples of `sample_shape` are not images ([C, H, W] or [H, W]).
  void check_sample_shape(const std::vector<int64_t>& sample_shape,
                          const std::string& dataset) const;

  // Augments batch.inputs (float32 [B, ..., H, W], contiguous) in place; `indices` are
  // the dataset indices of its samples, `fill` the value padding takes (the float a zero
  // input becomes). A sample's draws: crop offsets (dy, dx) uniform in [0, 2 * padding],
  // then the flip bit, from Rng(mix_seed(mix_seed(mix_seed(seed, kAugmentStream), epoch),
  // index)); the crop comes first, the flip applies to the cropped image.
  void apply(Batch& batch, uint64_t seed, int64_t epoch, const std::vector<int64_t>& indices,
             float fill) const;

 private:
  AugmentOptions options_;
};

}  // namespace dtrain::data
