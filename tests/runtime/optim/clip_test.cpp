// Tests of gradient clipping (value, per-parameter norm, joint norm) against values
// computed by hand, and of its argument checks.
#include <cmath>
#include <limits>
#include <vector>

#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include "runtime/base/error.h"
#include "runtime/optim/optim.h"
#include "tests/runtime/optim/test_util.h"

namespace dtrain::optim {
namespace {

using testing::Contains;
using testing::ThrownMessage;
using testing::ToVector;

constexpr double kEps = 1e-6;  // PyTorch's clip_grad_norm_ epsilon
const double kInf = std::numeric_limits<double>::infinity();

// A double parameter whose gradient is `grad`.
at::Tensor ParamWithGrad(std::vector<double> grad) {
  at::Tensor p = at::zeros({static_cast<int64_t>(grad.size())}, at::kDouble);
  p.mutable_grad() = at::tensor(grad);
  return p;
}

void ExpectGrad(const at::Tensor& p, const std::vector<double>& expected) {
  const std::vector<double> got = ToVector(p.grad());
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_DOUBLE_EQ(got[i], expected[i]) << "element " << i;
}

TEST(ClipGradientsTest, ValueClampsEachElement) {
  at::Tensor p = ParamWithGrad({-3.0, 0.5, 2.0, -0.75});
  at::Tensor no_grad = at::zeros({2}, at::kDouble);
  clip_gradients("value", 1.0, 2.0, {p, no_grad});
  ExpectGrad(p, {-1.0, 0.5, 1.0, -0.75});
  EXPECT_FALSE(no_grad.grad().defined());
}

TEST(ClipGradientsTest, NormClipsEachParameterOnItsOwn) {
  at::Tensor big = ParamWithGrad({3.0, 4.0});    // L2 norm 5
  at::Tensor small = ParamWithGrad({0.3, 0.4});  // L2 norm 0.5
  at::Tensor no_grad = at::zeros({1}, at::kDouble);
  clip_gradients("norm", 1.0, 2.0, {big, no_grad, small});
  const double coef = 1.0 / (5.0 + kEps);
  ExpectGrad(big, {3.0 * coef, 4.0 * coef});
  ExpectGrad(small, {0.3, 0.4});  // coefficient clamped to 1
  EXPECT_FALSE(no_grad.grad().defined());
}

TEST(ClipGradientsTest, NormUsesNormType) {
  at::Tensor p = ParamWithGrad({3.0, -4.0});  // L1 norm 7, inf norm 4
  clip_gradients("norm", 2.0, 1.0, {p});
  const double coef = 2.0 / (7.0 + kEps);
  ExpectGrad(p, {3.0 * coef, -4.0 * coef});

  at::Tensor q = ParamWithGrad({3.0, -4.0});
  clip_gradients("norm", 2.0, kInf, {q});
  const double coef_inf = 2.0 / (4.0 + kEps);
  ExpectGrad(q, {3.0 * coef_inf, -4.0 * coef_inf});
}

TEST(ClipGradientsTest, FullModelUsesJointNorm) {
  at::Tensor a = ParamWithGrad({3.0, 4.0});
  at::Tensor b = ParamWithGrad({12.0});  // joint L2 norm sqrt(9 + 16 + 144) = 13
  at::Tensor no_grad = at::zeros({3}, at::kDouble);
  clip_gradients("full_model", 2.6, 2.0, {a, no_grad, b});
  const double coef = 2.6 / (13.0 + kEps);
  ExpectGrad(a, {3.0 * coef, 4.0 * coef});
  ExpectGrad(b, {12.0 * coef});
}

TEST(ClipGradientsTest, FullModelInfNorm) {
  at::Tensor a = ParamWithGrad({3.0, -4.0});
  at::Tensor b = ParamWithGrad({2.0});  // joint inf norm 4
  at::Tensor total = clip_grad_norm({a, b}, 2.0, kInf);
  EXPECT_DOUBLE_EQ(total.item<double>(), 4.0);
  const double coef = 2.0 / (4.0 + kEps);
  ExpectGrad(a, {3.0 * coef, -4.0 * coef});
  ExpectGrad(b, {2.0 * coef});
}

TEST(ClipGradientsTest, FullModelBelowThresholdIsUnchanged) {
  at::Tensor a = ParamWithGrad({0.3, 0.4});
  at::Tensor b = ParamWithGrad({1.2});  // joint norm 1.3
  at::Tensor total = clip_grad_norm({a, b}, 5.0, 2.0);
  EXPECT_DOUBLE_EQ(total.item<double>(), 1.3);
  ExpectGrad(a, {0.3, 0.4});
  ExpectGrad(b, {1.2});
}

TEST(ClipGradientsTest, FullModelFloatGradients) {
  at::Tensor a = at::zeros({2});
  a.mutable_grad() = at::tensor({3.0f, 4.0f});
  at::Tensor total = clip_grad_norm({a}, 1.0, 2.0);
  EXPECT_FLOAT_EQ(total.item<float>(), 5.0f);
  const at::Tensor g = a.grad().contiguous();
  EXPECT_NEAR(g.data_ptr<float>()[0], 0.6f, 1e-6);
  EXPECT_NEAR(g.data_ptr<float>()[1], 0.8f, 1e-6);
}

TEST(ClipGradientsTest, NoGradientsReturnsZero) {
  at::Tensor p = at::zeros({2}, at::kDouble);
  EXPECT_EQ(clip_grad_norm({p}, 1.0, 2.0).item<double>(), 0.0);
  EXPECT_EQ(clip_grad_norm({}, 1.0, 2.0).item<double>(), 0.0);
}

TEST(ClipGradientsTest, TypeIsCaseInsensitive) {
  at::Tensor p = ParamWithGrad({-3.0, 3.0});
  clip_gradients("VALUE", 2.0, 2.0, {p});
  ExpectGrad(p, {-2.0, 2.0});
  at::Tensor q = ParamWithGrad({3.0, 4.0});
  clip_gradients("Full_Model", 1.0, 2.0, {q});
  ExpectGrad(q, {3.0 / (5.0 + kEps), 4.0 / (5.0 + kEps)});
}

TEST(ClipGradientsTest, UnknownTypeNamesKeyAndChoices) {
  at::Tensor p = ParamWithGrad({1.0});
  const std::string msg =
      ThrownMessage<ConfigError>([&] { clip_gradients("global", 1.0, 2.0, {p}); });
  EXPECT_TRUE(Contains(msg, "SOLVER.CLIP_GRADIENTS.CLIP_TYPE")) << msg;
  EXPECT_TRUE(Contains(msg, "value, norm, full_model")) << msg;
  EXPECT_TRUE(Contains(msg, "'global'")) << msg;
}

TEST(ClipGradientsTest, BadValuesNameTheirKey) {
  at::Tensor p = ParamWithGrad({1.0});
  for (const char* type : {"value", "norm", "full_model"}) {
    const std::string msg =
        ThrownMessage<ConfigError>([&] { clip_gradients(type, 0.0, 2.0, {p}); });
    EXPECT_TRUE(Contains(msg, "SOLVER.CLIP_GRADIENTS.CLIP_VALUE")) << type << ": " << msg;
  }
  for (const char* type : {"norm", "full_model"}) {
    const std::string msg =
        ThrownMessage<ConfigError>([&] { clip_gradients(type, 1.0, -1.0, {p}); });
    EXPECT_TRUE(Contains(msg, "SOLVER.CLIP_GRADIENTS.NORM_TYPE")) << type << ": " << msg;
  }
  ExpectGrad(p, {1.0});
}

}  // namespace
}  // namespace dtrain::optim
