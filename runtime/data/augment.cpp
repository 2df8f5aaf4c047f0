// Random flip and padded random crop of image batches (augment.h).
#include "runtime/data/augment.h"

#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "runtime/base/error.h"
#include "runtime/data/rng.h"

namespace dtrain::data {
namespace {

// mix_seed stream of the augmentation draws (the sampler's orders use another).
constexpr uint64_t kAugmentStream = 0x5EED'A065'0000'0001ull;

struct Draw {
  int64_t dy = 0;
  int64_t dx = 0;
  bool flip = false;
};

Draw draw_for(const AugmentOptions& o, uint64_t seed, int64_t epoch, int64_t index) {
  Rng rng(mix_seed(mix_seed(mix_seed(seed, kAugmentStream), static_cast<uint64_t>(epoch)),
                   static_cast<uint64_t>(index)));
  Draw d;
  if (o.crop_padding > 0) {
    const uint64_t span = static_cast<uint64_t>(2 * o.crop_padding + 1);
    d.dy = static_cast<int64_t>(rng.below(span));
    d.dx = static_cast<int64_t>(rng.below(span));
  }
  if (o.flip != FlipMode::kNone) d.flip = rng.below(2) == 1;
  return d;
}

// out = flip(crop(pad(in))) for one [planes, h, w] sample; `in` and `out` do not overlap.
void transform(const float* in, float* out, int64_t planes, int64_t h, int64_t w,
               const AugmentOptions& o, const Draw& d, float fill) {
  const bool flip_x = d.flip && o.flip == FlipMode::kHorizontal;
  const bool flip_y = d.flip && o.flip == FlipMode::kVertical;
  const int64_t shift_y = d.dy - o.crop_padding;  // cropped row y is input row y + shift_y
  const int64_t shift_x = d.dx - o.crop_padding;
  for (int64_t p = 0; p < planes; ++p) {
    const float* src = in + p * h * w;
    float* dst = out + p * h * w;
    for (int64_t y = 0; y < h; ++y) {
      const int64_t sy = (flip_y ? h - 1 - y : y) + shift_y;
      float* row = dst + y * w;
      if (sy < 0 || sy >= h) {
        for (int64_t x = 0; x < w; ++x) row[x] = fill;
        continue;
      }
      for (int64_t x = 0; x < w; ++x) {
        const int64_t sx = (flip_x ? w - 1 - x : x) + shift_x;
        row[x] = (sx < 0 || sx >= w) ? fill : src[sy * w + sx];
      }
    }
  }
}

}  // namespace

FlipMode flip_mode_from_name(const std::string& name) {
  if (name == "none") return FlipMode::kNone;
  if (name == "horizontal") return FlipMode::kHorizontal;
  if (name == "vertical") return FlipMode::kVertical;
  throw ConfigError(fmt::format(
      "INPUT.RANDOM_FLIP must be one of none, horizontal, vertical; got '{}'", name));
}

AugmentOptions AugmentOptions::from_config(const Config& cfg) {
  AugmentOptions o;
  o.flip = flip_mode_from_name(cfg.get_string("INPUT.RANDOM_FLIP"));
  if (cfg.get_bool("INPUT.CROP.ENABLED")) o.crop_padding = cfg.get_int("INPUT.CROP.PADDING");
  return o;
}

void Augmenter::check_sample_shape(const std::vector<int64_t>& shape,
                                   const std::string& dataset) const {
  if (!options_.enabled()) return;
  const char* key = options_.flip != FlipMode::kNone ? "INPUT.RANDOM_FLIP" : "INPUT.CROP.ENABLED";
  DTRAIN_CHECK_T(ConfigError, shape.size() == 2 || shape.size() == 3,
                 "{} augments images, but the samples of {} have shape [{}] (expected [C, H, W] "
                 "or [H, W])",
                 key, dataset, fmt::join(shape, ", "));
}

void Augmenter::apply(Batch& batch, uint64_t seed, int64_t epoch,
                      const std::vector<int64_t>& indices, float fill) const {
  if (!options_.enabled()) return;
  at::Tensor& x = batch.inputs;
  DTRAIN_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous() && x.dim() >= 3 &&
                   x.size(0) == static_cast<int64_t>(indices.size()),
               "augmentation needs a contiguous float32 batch [B, ..., H, W] of {} samples, got "
               "{} [{}]",
               indices.size(), std::string(c10::toString(x.scalar_type())),
               fmt::join(x.sizes(), ", "));
  const int64_t h = x.size(-2);
  const int64_t w = x.size(-1);
  const int64_t sample = x.numel() / std::max<int64_t>(x.size(0), 1);
  const int64_t planes = h * w == 0 ? 0 : sample / (h * w);
  std::vector<float> scratch(static_cast<size_t>(sample));
  float* data = x.data_ptr<float>();
  for (size_t b = 0; b < indices.size(); ++b) {
    float* s = data + static_cast<int64_t>(b) * sample;
    std::memcpy(scratch.data(), s, scratch.size() * sizeof(float));
    transform(scratch.data(), s, planes, h, w, options_, draw_for(options_, seed, epoch, indices[b]),
              fill);
  }
}

}  // namespace dtrain::data
