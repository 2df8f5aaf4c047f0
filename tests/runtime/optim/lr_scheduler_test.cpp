// Tests of the warmup LR schedulers against detectron2's closed forms, computed here
// independently, and of their state round trip and argument checks.
#include <cmath>
#include <functional>
#include <memory>
#include <vector>

#include <ATen/ops/tensor.h>
#include <gtest/gtest.h>
#include <torch/optim/sgd.h>

#include "runtime/base/error.h"
#include "runtime/optim/optim.h"
#include "tests/runtime/optim/test_util.h"

namespace dtrain::optim {
namespace {

using testing::Contains;
using testing::ThrownMessage;

constexpr double kBaseLr = 0.1;
constexpr double kWarmupFactor = 0.001;
constexpr int64_t kWarmupIters = 10;
constexpr int64_t kMaxIter = 50;
constexpr double kGamma = 0.1;
constexpr double kEndLr = 0.002;
const std::vector<int64_t> kSteps = {20, 40};
const double kPi = std::acos(-1.0);

// Iterations worth checking: start, mid-warmup, end of warmup, each side of every
// step, the last iteration.
const std::vector<int64_t> kCheckIters = {0, 1, 5, 9, 10, 11, 19, 20, 21, 39, 40, 41, 49, 50};

// An SGD optimizer over two param groups with an lr the scheduler must overwrite.
std::unique_ptr<torch::optim::SGD> MakeOptimizer() {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<at::Tensor>{at::tensor({1.0, 2.0}).set_requires_grad(true)});
  groups.emplace_back(std::vector<at::Tensor>{at::tensor({3.0}).set_requires_grad(true)},
                      std::make_unique<torch::optim::SGDOptions>(7.0));
  return std::make_unique<torch::optim::SGD>(std::move(groups), torch::optim::SGDOptions(5.0));
}

double Warmup(bool linear, int64_t iter) {
  if (iter >= kWarmupIters) return 1.0;
  if (!linear) return kWarmupFactor;
  const double alpha = static_cast<double>(iter) / kWarmupIters;
  return kWarmupFactor * (1 - alpha) + alpha;
}

double ExpectedMultiStep(bool linear, int64_t iter) {
  double decay = 1.0;
  for (int64_t s : kSteps) {
    if (s <= iter) decay *= kGamma;
  }
  return kBaseLr * Warmup(linear, iter) * decay;
}

double ExpectedCosine(bool linear, int64_t iter) {
  const double c = 0.5 * (1 + std::cos(kPi * static_cast<double>(iter) / kMaxIter));
  return Warmup(linear, iter) * (kEndLr + (kBaseLr - kEndLr) * c);
}

// Every param group's lr equals `lr`.
void ExpectGroupsAt(const torch::optim::Optimizer& opt, double lr, int64_t iter) {
  ASSERT_EQ(opt.param_groups().size(), 2u);
  for (const auto& group : opt.param_groups()) {
    EXPECT_DOUBLE_EQ(group.options().get_lr(), lr) << "iteration " << iter;
  }
}

// Steps `sched` through kMaxIter and checks lr_at, current_lr and the optimizer.
void CheckSequence(LRScheduler& sched, const torch::optim::Optimizer& opt,
                   double (*expected)(bool, int64_t), bool linear) {
  for (int64_t iter : kCheckIters) {
    EXPECT_DOUBLE_EQ(sched.lr_at(iter), expected(linear, iter)) << "iteration " << iter;
  }
  size_t next = 0;
  for (int64_t iter = 0; iter <= kMaxIter; ++iter) {
    ASSERT_EQ(sched.last_iter(), iter);
    if (next < kCheckIters.size() && kCheckIters[next] == iter) {
      EXPECT_DOUBLE_EQ(sched.current_lr(), expected(linear, iter)) << "iteration " << iter;
      ExpectGroupsAt(opt, expected(linear, iter), iter);
      ++next;
    }
    sched.step();
  }
  EXPECT_EQ(next, kCheckIters.size());
}

TEST(WarmupFactorTest, LinearAndConstant) {
  EXPECT_DOUBLE_EQ(warmup_factor_at("linear", 0, 10, 0.001), 0.001);
  EXPECT_DOUBLE_EQ(warmup_factor_at("linear", 5, 10, 0.001), 0.001 * 0.5 + 0.5);
  EXPECT_DOUBLE_EQ(warmup_factor_at("linear", 9, 10, 0.001), 0.001 * 0.1 + 0.9);
  EXPECT_EQ(warmup_factor_at("linear", 10, 10, 0.001), 1.0);
  EXPECT_EQ(warmup_factor_at("constant", 0, 10, 0.25), 0.25);
  EXPECT_EQ(warmup_factor_at("constant", 9, 10, 0.25), 0.25);
  EXPECT_EQ(warmup_factor_at("constant", 10, 10, 0.25), 1.0);
  EXPECT_EQ(warmup_factor_at("Linear", 0, 0, 0.5), 1.0);  // no warmup; case-insensitive
}

TEST(WarmupFactorTest, UnknownMethodNamesKey) {
  const std::string msg = ThrownMessage<ConfigError>([] { warmup_factor_at("cubic", 0, 10, 0.1); });
  EXPECT_TRUE(Contains(msg, "SOLVER.WARMUP_METHOD")) << msg;
  EXPECT_TRUE(Contains(msg, "linear, constant")) << msg;
  EXPECT_TRUE(Contains(msg, "'cubic'")) << msg;
}

TEST(WarmupMultiStepLRTest, LinearWarmupFollowsClosedForm) {
  auto opt = MakeOptimizer();
  WarmupMultiStepLR sched(*opt, kBaseLr, kSteps, kGamma, kWarmupFactor, kWarmupIters, "linear");
  EXPECT_EQ(sched.name(), "WarmupMultiStepLR");
  CheckSequence(sched, *opt, ExpectedMultiStep, /*linear=*/true);
}

TEST(WarmupMultiStepLRTest, ConstantWarmupFollowsClosedForm) {
  auto opt = MakeOptimizer();
  WarmupMultiStepLR sched(*opt, kBaseLr, kSteps, kGamma, kWarmupFactor, kWarmupIters, "constant");
  CheckSequence(sched, *opt, ExpectedMultiStep, /*linear=*/false);
}

TEST(WarmupMultiStepLRTest, ConstructionSetsLrAtZero) {
  auto opt = MakeOptimizer();
  WarmupMultiStepLR sched(*opt, kBaseLr, kSteps, kGamma, kWarmupFactor, kWarmupIters, "linear");
  ExpectGroupsAt(*opt, kBaseLr * kWarmupFactor, 0);
}

TEST(WarmupMultiStepLRTest, NoStepsNoWarmupIsConstant) {
  auto opt = MakeOptimizer();
  WarmupMultiStepLR sched(*opt, kBaseLr, {}, kGamma, kWarmupFactor, 0, "linear");
  for (int64_t iter : {0, 1, 1000}) EXPECT_EQ(sched.lr_at(iter), kBaseLr);
}

TEST(WarmupCosineLRTest, LinearWarmupFollowsClosedForm) {
  auto opt = MakeOptimizer();
  WarmupCosineLR sched(*opt, kBaseLr, kEndLr, kMaxIter, kWarmupFactor, kWarmupIters, "linear");
  EXPECT_EQ(sched.name(), "WarmupCosineLR");
  CheckSequence(sched, *opt, ExpectedCosine, /*linear=*/true);
}

TEST(WarmupCosineLRTest, ConstantWarmupFollowsClosedForm) {
  auto opt = MakeOptimizer();
  WarmupCosineLR sched(*opt, kBaseLr, kEndLr, kMaxIter, kWarmupFactor, kWarmupIters, "constant");
  CheckSequence(sched, *opt, ExpectedCosine, /*linear=*/false);
}

TEST(WarmupCosineLRTest, EndsAtEndLrAndStaysThere) {
  auto opt = MakeOptimizer();
  WarmupCosineLR sched(*opt, kBaseLr, kEndLr, kMaxIter, kWarmupFactor, kWarmupIters, "linear");
  EXPECT_DOUBLE_EQ(sched.lr_at(kMaxIter), kEndLr);
  EXPECT_DOUBLE_EQ(sched.lr_at(kMaxIter + 1), kEndLr);
  EXPECT_DOUBLE_EQ(sched.lr_at(3 * kMaxIter), kEndLr);
  EXPECT_DOUBLE_EQ(sched.lr_at(kMaxIter / 2), kEndLr + (kBaseLr - kEndLr) * 0.5);
}

TEST(LRSchedulerStateTest, RoundTripGivesSameSequence) {
  auto opt = MakeOptimizer();
  WarmupMultiStepLR sched(*opt, kBaseLr, kSteps, kGamma, kWarmupFactor, kWarmupIters, "linear");
  for (int i = 0; i < 17; ++i) sched.step();
  const StateDict state = sched.state_dict();
  EXPECT_EQ(state_int(state, "last_iter", "test"), 17);
  EXPECT_EQ(state_double(state, "base_lr", "test"), kBaseLr);
  EXPECT_EQ(state_string(state, "name", "test"), "WarmupMultiStepLR");

  auto opt2 = MakeOptimizer();
  WarmupMultiStepLR fresh(*opt2, kBaseLr, kSteps, kGamma, kWarmupFactor, kWarmupIters, "linear");
  fresh.load_state_dict(state);
  EXPECT_EQ(fresh.last_iter(), 17);
  ExpectGroupsAt(*opt2, ExpectedMultiStep(true, 17), 17);
  for (int64_t iter = 17; iter <= kMaxIter + 5; ++iter) {
    ASSERT_EQ(fresh.current_lr(), sched.current_lr()) << "iteration " << iter;
    ASSERT_EQ(opt2->param_groups()[0].options().get_lr(), opt->param_groups()[0].options().get_lr())
        << "iteration " << iter;
    sched.step();
    fresh.step();
  }
}

TEST(LRSchedulerStateTest, CosineRoundTrip) {
  auto opt = MakeOptimizer();
  WarmupCosineLR sched(*opt, kBaseLr, kEndLr, kMaxIter, kWarmupFactor, kWarmupIters, "linear");
  for (int i = 0; i < 5; ++i) sched.step();
  auto opt2 = MakeOptimizer();
  WarmupCosineLR fresh(*opt2, kBaseLr, kEndLr, kMaxIter, kWarmupFactor, kWarmupIters, "linear");
  fresh.load_state_dict(sched.state_dict());
  EXPECT_EQ(fresh.last_iter(), 5);
  ExpectGroupsAt(*opt2, ExpectedCosine(true, 5), 5);
}

TEST(LRSchedulerStateTest, NameMismatchNamesBoth) {
  auto opt = MakeOptimizer();
  WarmupMultiStepLR multi(*opt, kBaseLr, kSteps, kGamma, kWarmupFactor, kWarmupIters, "linear");
  WarmupCosineLR cosine(*opt, kBaseLr, kEndLr, kMaxIter, kWarmupFactor, kWarmupIters, "linear");
  const std::string msg =
      ThrownMessage<ConfigError>([&] { cosine.load_state_dict(multi.state_dict()); });
  EXPECT_TRUE(Contains(msg, "WarmupMultiStepLR")) << msg;
  EXPECT_TRUE(Contains(msg, "WarmupCosineLR")) << msg;
  EXPECT_TRUE(Contains(msg, "SOLVER.LR_SCHEDULER_NAME")) << msg;
  EXPECT_EQ(cosine.last_iter(), 0);
}

// As detectron2's LRMultiplier: the saved base lr wins over SOLVER.BASE_LR, so a resumed
// run continues the schedule it was on (the trainer warns about the changed key).
TEST(LRSchedulerStateTest, TheSavedBaseLrWins) {
  auto opt_a = MakeOptimizer();
  auto opt_b = MakeOptimizer();
  WarmupMultiStepLR a(*opt_a, 0.1, kSteps, kGamma, kWarmupFactor, kWarmupIters, "linear");
  WarmupMultiStepLR b(*opt_b, 0.25, kSteps, kGamma, kWarmupFactor, kWarmupIters, "linear");
  for (int i = 0; i < 7; ++i) a.step();
  b.load_state_dict(a.state_dict());
  EXPECT_EQ(b.base_lr(), 0.1);
  EXPECT_EQ(b.last_iter(), 7);
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(b.current_lr(), a.current_lr()) << "step " << i;
    ASSERT_EQ(opt_b->param_groups()[0].options().get_lr(),
              opt_a->param_groups()[0].options().get_lr()) << "step " << i;
    a.step();
    b.step();
  }
}

TEST(LRSchedulerStateTest, MissingOrBadEntries) {
  auto opt = MakeOptimizer();
  WarmupMultiStepLR sched(*opt, kBaseLr, kSteps, kGamma, kWarmupFactor, kWarmupIters, "linear");
  StateDict state = sched.state_dict();
  state.erase("last_iter");
  std::string msg = ThrownMessage<Error>([&] { sched.load_state_dict(state); });
  EXPECT_TRUE(Contains(msg, "last_iter")) << msg;

  state = sched.state_dict();
  state["last_iter"] = int64_t{-3};
  msg = ThrownMessage<Error>([&] { sched.load_state_dict(state); });
  EXPECT_TRUE(Contains(msg, "last_iter")) << msg;
  EXPECT_TRUE(Contains(msg, "-3")) << msg;
}

TEST(LRSchedulerArgsTest, StepsMustBeIncreasingAndPositive) {
  auto opt = MakeOptimizer();
  std::string msg = ThrownMessage<ConfigError>([&] {
    WarmupMultiStepLR(*opt, kBaseLr, {20, 20}, kGamma, kWarmupFactor, kWarmupIters, "linear");
  });
  EXPECT_TRUE(Contains(msg, "SOLVER.STEPS")) << msg;
  EXPECT_TRUE(Contains(msg, "increasing")) << msg;
  msg = ThrownMessage<ConfigError>([&] {
    WarmupMultiStepLR(*opt, kBaseLr, {30, 20}, kGamma, kWarmupFactor, kWarmupIters, "linear");
  });
  EXPECT_TRUE(Contains(msg, "SOLVER.STEPS")) << msg;
  msg = ThrownMessage<ConfigError>([&] {
    WarmupMultiStepLR(*opt, kBaseLr, {0, 20}, kGamma, kWarmupFactor, kWarmupIters, "linear");
  });
  EXPECT_TRUE(Contains(msg, "SOLVER.STEPS")) << msg;
  EXPECT_TRUE(Contains(msg, "positive")) << msg;
}

TEST(LRSchedulerArgsTest, BadValuesNameTheirKey) {
  auto opt = MakeOptimizer();
  struct Case {
    const char* key;
    std::function<void()> build;
  };
  const std::vector<Case> cases = {
      {"SOLVER.GAMMA",
       [&] { WarmupMultiStepLR(*opt, kBaseLr, kSteps, 0.0, kWarmupFactor, 10, "linear"); }},
      {"SOLVER.BASE_LR",
       [&] { WarmupMultiStepLR(*opt, -1.0, kSteps, kGamma, kWarmupFactor, 10, "linear"); }},
      {"SOLVER.WARMUP_ITERS",
       [&] { WarmupMultiStepLR(*opt, kBaseLr, kSteps, kGamma, kWarmupFactor, -1, "linear"); }},
      {"SOLVER.WARMUP_FACTOR",
       [&] { WarmupCosineLR(*opt, kBaseLr, kEndLr, kMaxIter, std::nan(""), 10, "linear"); }},
      {"SOLVER.WARMUP_METHOD",
       [&] { WarmupCosineLR(*opt, kBaseLr, kEndLr, kMaxIter, kWarmupFactor, 10, "warm"); }},
      {"SOLVER.MAX_ITER",
       [&] { WarmupCosineLR(*opt, kBaseLr, kEndLr, 0, kWarmupFactor, 10, "linear"); }},
      {"SOLVER.BASE_LR_END",
       [&] { WarmupCosineLR(*opt, kBaseLr, -0.5, kMaxIter, kWarmupFactor, 10, "linear"); }},
  };
  for (const Case& c : cases) {
    const std::string msg = ThrownMessage<ConfigError>(c.build);
    EXPECT_TRUE(Contains(msg, c.key)) << c.key << ": " << msg;
  }
}

}  // namespace
}  // namespace dtrain::optim
