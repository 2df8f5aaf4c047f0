// Tests of build_optimizer, build_lr_scheduler and clip_gradients driven from a Config:
// hand-computed SGD/AdamW updates, scheduler values, and every configuration error.
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include "runtime/base/config.h"
#include "runtime/base/error.h"
#include "runtime/optim/optim.h"
#include "tests/runtime/optim/test_util.h"

namespace dtrain::optim {
namespace {

using testing::Contains;
using testing::ThrownMessage;
using testing::ToVector;

using NamedParams = torch::OrderedDict<std::string, at::Tensor>;

constexpr double kTol = 1e-13;

// One trainable double parameter "w" = [1, -2].
NamedParams OneParam() {
  NamedParams params;
  params.insert("w", at::tensor({1.0, -2.0}).set_requires_grad(true));
  return params;
}

// Sets the gradient of `p` and takes one optimizer step.
void StepWithGrad(torch::optim::Optimizer& opt, at::Tensor p, std::vector<double> grad) {
  p.mutable_grad() = at::tensor(grad);
  opt.step();
}

void ExpectNear(const at::Tensor& t, const std::vector<double>& expected) {
  const std::vector<double> got = ToVector(t.detach());
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], kTol) << "element " << i;
}

Config SgdConfig(double momentum, bool nesterov) {
  Config cfg = Config::defaults();
  cfg.set("SOLVER.OPTIMIZER", std::string("SGD"));
  cfg.set("SOLVER.BASE_LR", 0.1);
  cfg.set("SOLVER.MOMENTUM", momentum);
  cfg.set("SOLVER.NESTEROV", nesterov);
  cfg.set("SOLVER.WEIGHT_DECAY", 0.01);
  return cfg;
}

// ---- build_optimizer ---------------------------------------------------------------

TEST(BuildOptimizerTest, SgdNesterovMatchesHandComputedSteps) {
  NamedParams params = OneParam();
  auto opt = build_optimizer(SgdConfig(0.9, true), params);
  ASSERT_NE(dynamic_cast<torch::optim::SGD*>(opt.get()), nullptr);
  at::Tensor w = params["w"];

  const double lr = 0.1, m = 0.9, wd = 0.01;
  std::vector<double> p = {1.0, -2.0}, buf(2);
  const std::vector<double> g1 = {0.5, 0.25}, g2 = {-1.0, 2.0};
  for (int i = 0; i < 2; ++i) {
    const double d = g1[i] + wd * p[i];
    buf[i] = d;
    p[i] -= lr * (d + m * buf[i]);
  }
  StepWithGrad(*opt, w, g1);
  ExpectNear(w, p);
  for (int i = 0; i < 2; ++i) {
    const double d = g2[i] + wd * p[i];
    buf[i] = m * buf[i] + d;
    p[i] -= lr * (d + m * buf[i]);
  }
  StepWithGrad(*opt, w, g2);
  ExpectNear(w, p);
}

TEST(BuildOptimizerTest, SgdMomentumMatchesHandComputedSteps) {
  NamedParams params = OneParam();
  auto opt = build_optimizer(SgdConfig(0.5, false), params);
  at::Tensor w = params["w"];

  const double lr = 0.1, m = 0.5, wd = 0.01;
  std::vector<double> p = {1.0, -2.0}, buf(2);
  const std::vector<double> g1 = {0.5, 0.25}, g2 = {-1.0, 2.0};
  for (int i = 0; i < 2; ++i) {
    buf[i] = g1[i] + wd * p[i];
    p[i] -= lr * buf[i];
  }
  StepWithGrad(*opt, w, g1);
  ExpectNear(w, p);
  for (int i = 0; i < 2; ++i) {
    buf[i] = m * buf[i] + (g2[i] + wd * p[i]);
    p[i] -= lr * buf[i];
  }
  StepWithGrad(*opt, w, g2);
  ExpectNear(w, p);
}

TEST(BuildOptimizerTest, AdamWMatchesHandComputedSteps) {
  Config cfg = Config::defaults();
  cfg.set("SOLVER.OPTIMIZER", std::string("adamw"));  // case-insensitive
  cfg.set("SOLVER.BASE_LR", 0.01);
  cfg.set("SOLVER.BETAS", std::vector<double>{0.8, 0.95});
  cfg.set("SOLVER.EPS", 1e-6);
  cfg.set("SOLVER.WEIGHT_DECAY", 0.1);
  NamedParams params = OneParam();
  auto opt = build_optimizer(cfg, params);
  ASSERT_NE(dynamic_cast<torch::optim::AdamW*>(opt.get()), nullptr);
  at::Tensor w = params["w"];

  const double lr = 0.01, b1 = 0.8, b2 = 0.95, eps = 1e-6, wd = 0.1;
  std::vector<double> p = {1.0, -2.0}, m1(2, 0.0), m2(2, 0.0);
  const std::vector<std::vector<double>> grads = {{0.5, -0.25}, {-1.0, 3.0}};
  for (int t = 1; t <= 2; ++t) {
    const std::vector<double>& g = grads[t - 1];
    for (int i = 0; i < 2; ++i) {
      p[i] *= 1 - lr * wd;
      m1[i] = b1 * m1[i] + (1 - b1) * g[i];
      m2[i] = b2 * m2[i] + (1 - b2) * g[i] * g[i];
      const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
      const double denom = std::sqrt(m2[i]) / std::sqrt(bc2) + eps;
      p[i] -= lr / bc1 * m1[i] / denom;
    }
    StepWithGrad(*opt, w, g);
    ExpectNear(w, p);
  }
}

TEST(BuildOptimizerTest, OneGroupOfTrainableParamsEachOnce) {
  at::Tensor shared = at::tensor({1.0}).set_requires_grad(true);
  NamedParams params;
  params.insert("a", shared);
  params.insert("frozen", at::tensor({2.0}));
  params.insert("b", at::tensor({3.0}).set_requires_grad(true));
  params.insert("a_tied", shared);
  auto opt = build_optimizer(SgdConfig(0.9, false), params);
  ASSERT_EQ(opt->param_groups().size(), 1u);
  const auto& group = opt->param_groups()[0];
  ASSERT_EQ(group.params().size(), 2u);
  EXPECT_TRUE(group.params()[0].is_same(shared));
  EXPECT_TRUE(group.params()[1].is_same(params["b"]));
  EXPECT_DOUBLE_EQ(group.options().get_lr(), 0.1);
  const auto& sgd = static_cast<const torch::optim::SGDOptions&>(group.options());
  EXPECT_DOUBLE_EQ(sgd.momentum(), 0.9);
  EXPECT_DOUBLE_EQ(sgd.weight_decay(), 0.01);
  EXPECT_FALSE(sgd.nesterov());
}

TEST(BuildOptimizerTest, UnknownOptimizerNamesKeyAndChoices) {
  Config cfg = Config::defaults();
  cfg.set("SOLVER.OPTIMIZER", std::string("Adam"));
  NamedParams params = OneParam();
  const std::string msg = ThrownMessage<ConfigError>([&] { build_optimizer(cfg, params); });
  EXPECT_TRUE(Contains(msg, "SOLVER.OPTIMIZER")) << msg;
  EXPECT_TRUE(Contains(msg, "SGD, AdamW")) << msg;
  EXPECT_TRUE(Contains(msg, "'Adam'")) << msg;
}

TEST(BuildOptimizerTest, NesterovWithoutMomentumIsConfigError) {
  NamedParams params = OneParam();
  const std::string msg =
      ThrownMessage<ConfigError>([&] { build_optimizer(SgdConfig(0.0, true), params); });
  EXPECT_TRUE(Contains(msg, "SOLVER.NESTEROV")) << msg;
  EXPECT_TRUE(Contains(msg, "SOLVER.MOMENTUM")) << msg;
}

TEST(BuildOptimizerTest, BetasNeedTwoEntries) {
  Config cfg = Config::defaults();
  cfg.set("SOLVER.OPTIMIZER", std::string("AdamW"));
  cfg.set("SOLVER.BETAS", std::vector<double>{0.9, 0.99, 0.999});
  NamedParams params = OneParam();
  std::string msg = ThrownMessage<ConfigError>([&] { build_optimizer(cfg, params); });
  EXPECT_TRUE(Contains(msg, "SOLVER.BETAS")) << msg;
  EXPECT_TRUE(Contains(msg, "2 entries")) << msg;
  EXPECT_TRUE(Contains(msg, "got 3")) << msg;

  cfg.set("SOLVER.BETAS", std::vector<double>{0.9, 1.0});
  msg = ThrownMessage<ConfigError>([&] { build_optimizer(cfg, params); });
  EXPECT_TRUE(Contains(msg, "SOLVER.BETAS")) << msg;
  EXPECT_TRUE(Contains(msg, "[0, 1)")) << msg;
}

TEST(BuildOptimizerTest, NegativeHyperParametersNameTheirKey) {
  NamedParams params = OneParam();
  for (const char* key : {"SOLVER.BASE_LR", "SOLVER.WEIGHT_DECAY", "SOLVER.MOMENTUM"}) {
    Config cfg = SgdConfig(0.9, false);
    cfg.set(key, -0.5);
    const std::string msg = ThrownMessage<ConfigError>([&] { build_optimizer(cfg, params); });
    EXPECT_TRUE(Contains(msg, key)) << key << ": " << msg;
  }
  Config cfg = Config::defaults();
  cfg.set("SOLVER.OPTIMIZER", std::string("AdamW"));
  cfg.set("SOLVER.EPS", -1e-8);
  const std::string msg = ThrownMessage<ConfigError>([&] { build_optimizer(cfg, params); });
  EXPECT_TRUE(Contains(msg, "SOLVER.EPS")) << msg;
}

TEST(BuildOptimizerTest, NoTrainableParameterIsError) {
  NamedParams params;
  params.insert("frozen", at::tensor({2.0}));
  const std::string msg =
      ThrownMessage<Error>([&] { build_optimizer(Config::defaults(), params); });
  EXPECT_TRUE(Contains(msg, "requires grad")) << msg;
}

// ---- build_lr_scheduler --------------------------------------------------------------

Config SchedulerConfig(const std::string& name) {
  Config cfg = Config::defaults();
  cfg.set("SOLVER.LR_SCHEDULER_NAME", name);
  cfg.set("SOLVER.BASE_LR", 0.2);
  cfg.set("SOLVER.MAX_ITER", int64_t{100});
  cfg.set("SOLVER.STEPS", std::vector<int64_t>{30, 80});
  cfg.set("SOLVER.GAMMA", 0.5);
  cfg.set("SOLVER.WARMUP_ITERS", int64_t{20});
  cfg.set("SOLVER.WARMUP_FACTOR", 0.01);
  cfg.set("SOLVER.WARMUP_METHOD", std::string("linear"));
  cfg.set("SOLVER.BASE_LR_END", 0.02);
  return cfg;
}

TEST(BuildLRSchedulerTest, MultiStepFromConfig) {
  NamedParams params = OneParam();
  Config cfg = SchedulerConfig("WarmupMultiStepLR");
  auto opt = build_optimizer(cfg, params);
  auto sched = build_lr_scheduler(cfg, *opt);
  EXPECT_EQ(sched->name(), "WarmupMultiStepLR");
  EXPECT_DOUBLE_EQ(opt->param_groups()[0].options().get_lr(), 0.2 * 0.01);
  EXPECT_DOUBLE_EQ(sched->lr_at(10), 0.2 * (0.01 * 0.5 + 0.5));
  EXPECT_DOUBLE_EQ(sched->lr_at(29), 0.2);
  EXPECT_DOUBLE_EQ(sched->lr_at(30), 0.2 * 0.5);
  EXPECT_DOUBLE_EQ(sched->lr_at(80), 0.2 * 0.25);
  EXPECT_DOUBLE_EQ(sched->lr_at(100), 0.2 * 0.25);
  for (int i = 0; i < 30; ++i) sched->step();
  EXPECT_DOUBLE_EQ(opt->param_groups()[0].options().get_lr(), 0.1);
}

TEST(BuildLRSchedulerTest, CosineFromConfigIsCaseInsensitive) {
  NamedParams params = OneParam();
  Config cfg = SchedulerConfig("warmupcosinelr");
  auto opt = build_optimizer(cfg, params);
  auto sched = build_lr_scheduler(cfg, *opt);
  EXPECT_EQ(sched->name(), "WarmupCosineLR");
  const double pi = std::acos(-1.0);
  EXPECT_DOUBLE_EQ(sched->lr_at(0), 0.01 * 0.2);
  EXPECT_DOUBLE_EQ(sched->lr_at(40), 0.02 + 0.18 * 0.5 * (1 + std::cos(pi * 40 / 100)));
  EXPECT_DOUBLE_EQ(sched->lr_at(100), 0.02);
}

TEST(BuildLRSchedulerTest, StepsPastMaxIterAreIgnoredAsInDetectron2) {
  // detectron2 warns and ignores milestones beyond MAX_ITER (a run shortened on the
  // command line keeps its config's STEPS); the schedule up to MAX_ITER is unchanged.
  NamedParams params = OneParam();
  Config cfg = SchedulerConfig("WarmupMultiStepLR");
  cfg.set("SOLVER.STEPS", std::vector<int64_t>{30, 101});
  auto opt = build_optimizer(cfg, params);
  auto sched = build_lr_scheduler(cfg, *opt);
  const double base = cfg.get_float("SOLVER.BASE_LR"), gamma = cfg.get_float("SOLVER.GAMMA");
  EXPECT_DOUBLE_EQ(sched->lr_at(29), base);
  EXPECT_DOUBLE_EQ(sched->lr_at(30), base * gamma);
  EXPECT_DOUBLE_EQ(sched->lr_at(100), base * gamma);
}

TEST(BuildLRSchedulerTest, StepsNotIncreasing) {
  NamedParams params = OneParam();
  Config cfg = SchedulerConfig("WarmupMultiStepLR");
  cfg.set("SOLVER.STEPS", std::vector<int64_t>{50, 30});
  auto opt = build_optimizer(cfg, params);
  const std::string msg = ThrownMessage<ConfigError>([&] { build_lr_scheduler(cfg, *opt); });
  EXPECT_TRUE(Contains(msg, "SOLVER.STEPS")) << msg;
  EXPECT_TRUE(Contains(msg, "increasing")) << msg;
}

TEST(BuildLRSchedulerTest, UnknownNamesNameTheirKey) {
  NamedParams params = OneParam();
  Config cfg = SchedulerConfig("StepLR");
  auto opt = build_optimizer(cfg, params);
  std::string msg = ThrownMessage<ConfigError>([&] { build_lr_scheduler(cfg, *opt); });
  EXPECT_TRUE(Contains(msg, "SOLVER.LR_SCHEDULER_NAME")) << msg;
  EXPECT_TRUE(Contains(msg, "WarmupMultiStepLR, WarmupCosineLR")) << msg;
  EXPECT_TRUE(Contains(msg, "'StepLR'")) << msg;

  cfg = SchedulerConfig("WarmupCosineLR");
  cfg.set("SOLVER.WARMUP_METHOD", std::string("exponential"));
  msg = ThrownMessage<ConfigError>([&] { build_lr_scheduler(cfg, *opt); });
  EXPECT_TRUE(Contains(msg, "SOLVER.WARMUP_METHOD")) << msg;
  EXPECT_TRUE(Contains(msg, "'exponential'")) << msg;

  cfg = SchedulerConfig("WarmupCosineLR");
  cfg.set("SOLVER.MAX_ITER", int64_t{0});
  msg = ThrownMessage<ConfigError>([&] { build_lr_scheduler(cfg, *opt); });
  EXPECT_TRUE(Contains(msg, "SOLVER.MAX_ITER")) << msg;
}

// ---- clip_gradients(cfg) -------------------------------------------------------------

TEST(ClipGradientsConfigTest, DisabledIsNoOp) {
  Config cfg = Config::defaults();
  cfg.set("SOLVER.CLIP_GRADIENTS.ENABLED", false);
  cfg.set("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", std::string("bogus"));  // not even read
  at::Tensor p = at::zeros({2}, at::kDouble);
  p.mutable_grad() = at::tensor({30.0, -40.0});
  clip_gradients(cfg, {p});
  ExpectNear(p.grad(), {30.0, -40.0});
}

TEST(ClipGradientsConfigTest, EnabledAppliesTypeValueAndNorm) {
  Config cfg = Config::defaults();
  cfg.set("SOLVER.CLIP_GRADIENTS.ENABLED", true);
  cfg.set("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", std::string("full_model"));
  cfg.set("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 1.0);
  cfg.set("SOLVER.CLIP_GRADIENTS.NORM_TYPE", 1.0);
  at::Tensor p = at::zeros({2}, at::kDouble);
  p.mutable_grad() = at::tensor({3.0, -4.0});  // L1 norm 7
  clip_gradients(cfg, {p});
  ExpectNear(p.grad(), {3.0 / (7.0 + 1e-6), -4.0 / (7.0 + 1e-6)});

  cfg.set("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", std::string("value"));
  cfg.set("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 0.1);
  clip_gradients(cfg, {p});
  ExpectNear(p.grad(), {0.1, -0.1});
}

TEST(ClipGradientsConfigTest, UnknownTypeIsConfigError) {
  Config cfg = Config::defaults();
  cfg.set("SOLVER.CLIP_GRADIENTS.ENABLED", true);
  cfg.set("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", std::string("agc"));
  at::Tensor p = at::zeros({1}, at::kDouble);
  p.mutable_grad() = at::tensor({1.0});
  const std::string msg = ThrownMessage<ConfigError>([&] { clip_gradients(cfg, {p}); });
  EXPECT_TRUE(Contains(msg, "SOLVER.CLIP_GRADIENTS.CLIP_TYPE")) << msg;
  EXPECT_TRUE(Contains(msg, "'agc'")) << msg;
}

// ---- shipped configs ------------------------------------------------------------------

TEST(ShippedConfigsTest, EveryConfigBuildsOptimizerAndScheduler) {
  const std::filesystem::path dir = std::filesystem::path(DTRAIN_SOURCE_DIR) / "configs";
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    const Config cfg = Config::from_file(entry.path().string());
    NamedParams params = OneParam();
    auto opt = build_optimizer(cfg, params);
    auto sched = build_lr_scheduler(cfg, *opt);
    const double base_lr = cfg.get_float("SOLVER.BASE_LR");
    const double expected0 = cfg.get_int("SOLVER.WARMUP_ITERS") > 0
                                 ? base_lr * cfg.get_float("SOLVER.WARMUP_FACTOR")
                                 : base_lr;
    EXPECT_DOUBLE_EQ(opt->param_groups()[0].options().get_lr(), expected0);
    ++count;
  }
  EXPECT_GT(count, 0) << "no YAML config under " << dir;
}

}  // namespace
}  // namespace dtrain::optim
