// Random flip and padded random crop of image batches (augment.h).
#include "runtime/data/augment.h"

#include <algorithm>
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

// One output row: out[x] = src[sx(x)] where sx(x) = (flip ? w - 1 - x : x) + shift, or
// `fill` where sx(x) falls outside [0, w). The inside is one contiguous (possibly
// reversed) run of src, copied as such.
void crop_row(const float* src, float* out, int64_t w, int64_t shift, bool flip, float fill) {
  // Without flip sx(x) = x + shift is inside for x in [-shift, w - shift); with flip
  // sx(x) = w - 1 - x + shift is inside for x in [shift, w + shift).
  const int64_t lo = std::max<int64_t>(0, flip ? shift : -shift);
  const int64_t hi = std::min<int64_t>(w, flip ? w + shift : w - shift);
  if (lo >= hi) {
    std::fill(out, out + w, fill);
    return;
  }
  std::fill(out, out + lo, fill);
  std::fill(out + hi, out + w, fill);
  if (flip) {
    // out[lo..hi) = src[w-1-lo+shift] down to src[w-hi+shift].
    const float* first = src + (w - hi + shift);
    std::reverse_copy(first, first + (hi - lo), out + lo);
  } else {
    std::copy(src + lo + shift, src + hi + shift, out + lo);
  }
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
      if (sy < 0 || sy >= h) {
        std::fill(dst + y * w, dst + (y + 1) * w, fill);
      } else {
        crop_row(src + sy * w, dst + y * w, w, shift_x, flip_x, fill);
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
