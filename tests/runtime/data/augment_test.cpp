// Tests of the random flip and padded random crop (runtime/data/augment.h).
#include "runtime/data/augment.h"

#include <set>
#include <tuple>
#include <utility>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "runtime/base/error.h"
#include "runtime/data/in_memory.h"
#include "tests/gtest_util.h"

namespace dtrain::data {
namespace {

Batch batch_of(const at::Tensor& images) {
  return Batch{images.clone(), at::zeros({images.size(0)}, at::kLong)};
}

std::vector<int64_t> iota(int64_t n, int64_t first = 0) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = first + i;
  return v;
}

// The (dy, dx) window of `padded` that equals `out`, or {-1, -1}.
std::pair<int64_t, int64_t> find_window(const at::Tensor& padded, const at::Tensor& out,
                                        int64_t pad) {
  const int64_t h = out.size(-2), w = out.size(-1);
  for (int64_t dy = 0; dy <= 2 * pad; ++dy) {
    for (int64_t dx = 0; dx <= 2 * pad; ++dx) {
      if (at::equal(padded.narrow(-2, dy, h).narrow(-1, dx, w), out)) return {dy, dx};
    }
  }
  return {-1, -1};
}

TEST(AugmentTest, DisabledLeavesTheBatchAlone) {
  Augmenter aug({});
  at::Tensor x = at::randn({3, 1, 5, 5});
  Batch b = batch_of(x);
  aug.apply(b, 1, 0, iota(3), 0.0f);
  EXPECT_TRUE(at::equal(b.inputs, x));
}

TEST(AugmentTest, CropIsAWindowOfTheZeroPaddedImageAtEveryOffset) {
  const int64_t pad = 2;
  Augmenter aug({FlipMode::kNone, pad});
  const int64_t n = 400;
  at::Tensor x = at::randn({n, 2, 6, 7});
  Batch b = batch_of(x);
  const float fill = -1.5f;
  aug.apply(b, 7, 0, iota(n), fill);
  at::Tensor padded = at::constant_pad_nd(x, {pad, pad, pad, pad}, fill);
  std::set<std::pair<int64_t, int64_t>> offsets;
  for (int64_t i = 0; i < n; ++i) {
    auto window = find_window(padded[i], b.inputs[i], pad);
    ASSERT_GE(window.first, 0) << "sample " << i << " is no window of the padded image";
    offsets.insert(window);
  }
  // 25 offsets, 400 draws: every one of them shows up (p(miss) < 1e-5 each).
  EXPECT_EQ(offsets.size(), 25u);
}

TEST(AugmentTest, FlipsAboutHalfTheSamplesAlongTheChosenAxis) {
  for (FlipMode mode : {FlipMode::kHorizontal, FlipMode::kVertical}) {
    Augmenter aug({mode, 0});
    const int64_t n = 400;
    at::Tensor x = at::randn({n, 3, 4, 5});
    Batch b = batch_of(x);
    aug.apply(b, 3, 2, iota(n), 0.0f);
    const int64_t dim = mode == FlipMode::kHorizontal ? -1 : -2;
    int flipped = 0;
    for (int64_t i = 0; i < n; ++i) {
      const bool same = at::equal(b.inputs[i], x[i]);
      const bool flip = at::equal(b.inputs[i], x[i].flip({dim}));
      ASSERT_TRUE(same || flip) << "sample " << i;
      flipped += flip;
    }
    EXPECT_GT(flipped, 150);
    EXPECT_LT(flipped, 250);
  }
}

TEST(AugmentTest, CropThenFlipIsAFlippedWindowOfThePaddedImage) {
  const int64_t pad = 3;
  for (FlipMode mode : {FlipMode::kHorizontal, FlipMode::kVertical}) {
    Augmenter aug({mode, pad});
    const int64_t n = 300;
    at::Tensor x = at::randn({n, 2, 5, 9});
    Batch b = batch_of(x);
    aug.apply(b, 11, 1, iota(n), 0.5f);
    at::Tensor padded = at::constant_pad_nd(x, {pad, pad, pad, pad}, 0.5f);
    const int64_t dim = mode == FlipMode::kHorizontal ? -1 : -2;
    int flipped = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (find_window(padded[i], b.inputs[i], pad).first >= 0) continue;
      ASSERT_GE(find_window(padded[i], b.inputs[i].flip({dim}), pad).first, 0)
          << "sample " << i << " is neither a window nor a flipped window";
      ++flipped;
    }
    // Symmetric samples would hide a flip; random ones do not.
    EXPECT_GT(flipped, 100);
    EXPECT_LT(flipped, 200);
  }
}

TEST(AugmentTest, ASampleDependsOnlyOnSeedEpochAndIndex) {
  Augmenter aug({FlipMode::kHorizontal, 3});
  at::Tensor x = at::randn({6, 1, 8, 8});
  Batch whole = batch_of(x);
  const std::vector<int64_t> indices{40, 11, 9, 3, 27, 5};
  aug.apply(whole, 5, 4, indices, 0.0f);
  // The same sample alone, in another batch position, gives the same result.
  Batch alone = batch_of(x.narrow(0, 2, 1));
  aug.apply(alone, 5, 4, {9}, 0.0f);
  EXPECT_TRUE(at::equal(alone.inputs[0], whole.inputs[2]));
  // Another epoch, seed or index draws again: over six samples something differs.
  for (auto [seed, epoch, shift] : {std::tuple<uint64_t, int64_t, int64_t>{6, 4, 0}, {5, 5, 0},
                                    {5, 4, 1}}) {
    Batch other = batch_of(x);
    std::vector<int64_t> moved = indices;
    for (auto& i : moved) i += shift;
    aug.apply(other, seed, epoch, moved, 0.0f);
    EXPECT_FALSE(at::equal(other.inputs, whole.inputs)) << seed << " " << epoch << " " << shift;
  }
}

TEST(AugmentTest, ByteImagesArePaddedWithTheValueOfABlackPixel) {
  at::Tensor images = at::full({4, 1, 3, 3}, 200, at::kByte);
  ClassificationDataset ds(images, at::zeros({4}, at::kLong), 2, "bytes", {0.5f, 0.25f});
  const float black = (0.0f - 0.5f) / 0.25f;
  EXPECT_FLOAT_EQ(ds.padding_value(), black);
  Augmenter aug({FlipMode::kNone, 3});
  Batch b = ds.get_batch(iota(4));
  aug.apply(b, 0, 0, iota(4), ds.padding_value());
  // A padding of 3 around 3x3 leaves some sample with a black border pixel.
  EXPECT_TRUE((b.inputs == black).any().item<bool>());
}

TEST(AugmentTest, NonImageSamplesAreAConfigErrorNamingKeyAndDataset) {
  Augmenter flip({FlipMode::kHorizontal, 0});
  std::string msg = dtrain::testing::ThrownMessage<ConfigError>(
      [&] { flip.check_sample_shape({784}, "synthetic_classification"); });
  EXPECT_CONTAINS(msg, "INPUT.RANDOM_FLIP");
  EXPECT_CONTAINS(msg, "synthetic_classification");
  EXPECT_CONTAINS(msg, "[784]");
  Augmenter crop({FlipMode::kNone, 4});
  msg = dtrain::testing::ThrownMessage<ConfigError>([&] { crop.check_sample_shape({64}, "tokens.h5"); });
  EXPECT_CONTAINS(msg, "INPUT.CROP.ENABLED");
  crop.check_sample_shape({1, 28, 28}, "fashion_mnist_train");
  crop.check_sample_shape({28, 28}, "fashion_mnist_train");
  Augmenter({}).check_sample_shape({784}, "synthetic_classification");  // disabled: any shape
}

TEST(AugmentTest, FlipNamesAreDetectronsAndOthersAreRefused) {
  EXPECT_EQ(flip_mode_from_name("none"), FlipMode::kNone);
  EXPECT_EQ(flip_mode_from_name("horizontal"), FlipMode::kHorizontal);
  EXPECT_EQ(flip_mode_from_name("vertical"), FlipMode::kVertical);
  std::string msg = dtrain::testing::ThrownMessage<ConfigError>([] { flip_mode_from_name("Horizontal"); });
  EXPECT_CONTAINS(msg, "none, horizontal, vertical");
  EXPECT_CONTAINS(msg, "'Horizontal'");
}

}  // namespace
}  // namespace dtrain::data
