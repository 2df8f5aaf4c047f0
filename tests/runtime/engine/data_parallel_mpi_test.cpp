// DataParallel and SimpleTrainer under mpirun (-np 2 and 4): parameters and buffers stay
// bitwise identical across ranks after steps on different per-rank data; reduced
// gradients are the average of the ranks' gradients; one step with global batch B on W
// ranks matches one step on one rank with the whole batch; a NaN loss on one rank stops
// every rank with the same FloatingPointError; distributed evaluation matches the
// single-rank result.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/nn/module.h>

#include "models/model.h"
#include "runtime/base/config.h"
#include "runtime/base/error.h"
#include "runtime/data/dataset.h"
#include "runtime/data/in_memory.h"
#include "runtime/data/sampler.h"
#include "runtime/dist/communicator.h"
#include "runtime/dist/local_communicator.h"
#include "runtime/engine/data_parallel.h"
#include "runtime/engine/evaluator.h"
#include "runtime/engine/simple_trainer.h"
#include "runtime/optim/optim.h"
#include "tests/gtest_util.h"
#include "tests/runtime/engine/engine_test_util.h"

namespace dtrain::engine {
namespace {

// The MPI communicator shared by every test of this binary.
dist::Communicator& world() {
  static std::shared_ptr<dist::Communicator> comm = dist::make_communicator("mpi", "cpu");
  return *comm;
}

Config make_config(const std::vector<std::string>& overrides) {
  Config cfg = Config::defaults();
  cfg.merge_overrides(overrides);
  cfg.freeze();
  return cfg;
}

// Small configs of the three reference models with their synthetic data.
Config mlp_config(const std::string& optimizer = "SGD") {
  return make_config({"MODEL.NAME", "mlp", "MODEL.MLP.INPUT_DIM", "24", "MODEL.MLP.HIDDEN_DIMS",
                      "[32, 16]", "MODEL.MLP.NUM_CLASSES", "5", "DATASETS.SYNTHETIC.INPUT_SHAPE",
                      "[24]", "DATASETS.SYNTHETIC.NUM_CLASSES", "5", "DATASETS.SYNTHETIC.NUM_TRAIN",
                      "256", "DATASETS.SYNTHETIC.NOISE", "2.0", "SOLVER.OPTIMIZER", optimizer,
                      "SOLVER.BASE_LR", "0.05"});
}

Config gpt_config(double dropout, const std::string& optimizer = "AdamW") {
  return make_config({"MODEL.NAME", "gpt", "MODEL.GPT.N_LAYER", "1", "MODEL.GPT.N_HEAD", "2",
                      "MODEL.GPT.N_EMBD", "16", "MODEL.GPT.VOCAB_SIZE", "32",
                      "MODEL.GPT.CONTEXT_LENGTH", "8", "MODEL.GPT.DROPOUT",
                      std::to_string(dropout), "DATASETS.TRAIN", "[synthetic_tokens]",
                      "DATASETS.SYNTHETIC.NUM_TRAIN", "128", "SOLVER.OPTIMIZER", optimizer,
                      "SOLVER.BASE_LR", "0.01"});
}

Config resnet_config() {
  return make_config({"MODEL.NAME", "resnet", "MODEL.RESNET.WIDTH", "4",
                      "MODEL.RESNET.NUM_CLASSES", "3", "DATASETS.SYNTHETIC.INPUT_SHAPE",
                      "[3, 8, 8]", "DATASETS.SYNTHETIC.NUM_CLASSES", "3",
                      "DATASETS.SYNTHETIC.NUM_TRAIN", "64", "SOLVER.BASE_LR", "0.05"});
}

// The raw bytes of a contiguous copy of `t`.
std::string tensor_bytes(const at::Tensor& t) {
  at::Tensor c = t.detach().contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

// Names (relative to the model) of the parameters and buffers whose bytes differ
// between this rank and any other. Collective.
std::vector<std::string> names_differing_across_ranks(torch::nn::Module& module) {
  std::vector<std::string> differing;
  auto check = [&](const std::string& name, const at::Tensor& t) {
    auto all = world().all_gather_bytes(tensor_bytes(t));
    for (const auto& other : all) {
      if (other != all[0]) {
        differing.push_back(name);
        break;
      }
    }
  };
  for (const auto& item : module.named_parameters()) check(item.key(), item.value());
  for (const auto& item : module.named_buffers()) check(item.key(), item.value());
  return differing;
}

// max |a - b| / max |b| (0 when both are zero).
double relative_inf_error(const at::Tensor& a, const at::Tensor& b) {
  const double scale = b.abs().max().item<double>();
  const double diff = (a - b).abs().max().item<double>();
  return scale == 0.0 ? diff : diff / scale;
}

// Everything one SimpleTrainer needs, built from a config for `comm`.
struct TrainerSetup {
  std::shared_ptr<models::Model> model;
  std::shared_ptr<data::Dataset> dataset;
  std::shared_ptr<data::DistributedSampler> sampler;
  std::shared_ptr<DataParallel> dp;
  std::unique_ptr<SimpleTrainer> trainer;
};

// Builds the model with `init_seed`, the training set, a sampler over `comm`'s ranks
// with global batch `global_batch`, the optimizer, DataParallel and a SimpleTrainer.
TrainerSetup make_trainer(const Config& cfg, dist::Communicator& comm, uint64_t init_seed,
                          int64_t global_batch, DataParallelOptions dp_options) {
  TrainerSetup s;
  at::manual_seed(init_seed);
  s.model = models::build_model(cfg);
  s.dataset = data::build_dataset(cfg.get_string_list("DATASETS.TRAIN").front(), cfg, true);
  s.sampler = std::make_shared<data::DistributedSampler>(s.dataset->size(), global_batch,
                                                         comm.rank(), comm.size(), /*seed=*/3);
  std::shared_ptr<torch::optim::Optimizer> opt =
      optim::build_optimizer(cfg, s.model->named_parameters());
  s.dp = std::make_shared<DataParallel>(s.model, comm, dp_options);
  s.trainer = std::make_unique<SimpleTrainer>(
      s.model, std::make_shared<DataLoader>(s.dataset, s.sampler), opt, s.dp);
  return s;
}

// Trains `steps` steps from a per-rank initialization (so that the constructor's
// broadcast matters) with a per-rank RNG stream (dropout differs between ranks), and
// checks that every parameter and buffer is bitwise identical on all ranks afterwards
// and that training changed the parameters. Small buckets (1 KiB): many of them.
void expect_identical_after_steps(const Config& cfg, int steps, bool overlap) {
  const int rank = world().rank();
  auto s = make_trainer(cfg, world(), /*init_seed=*/100 + static_cast<uint64_t>(rank),
                        /*global_batch=*/8, {/*bucket_cap_mb=*/0.001, true, overlap});
  EXPECT_TRUE(names_differing_across_ranks(*s.model).empty()) << "after the constructor";
  std::vector<at::Tensor> initial;
  for (const auto& p : s.model->parameters()) initial.push_back(p.detach().clone());
  at::manual_seed(7 + static_cast<uint64_t>(rank));
  s.trainer->train(0, steps);
  const auto differing = names_differing_across_ranks(*s.model);
  EXPECT_TRUE(differing.empty()) << "differ across ranks: " << differing.front();
  // The ranks saw different samples, and the parameters moved.
  auto batches = world().all_gather_bytes(
      std::to_string(s.sampler->next().front()));  // next batch's first index
  EXPECT_NE(batches[0], batches[1]);
  int64_t changed = 0;
  auto params = s.model->parameters();
  for (size_t i = 0; i < params.size(); ++i) changed += !params[i].equal(initial[i]);
  EXPECT_GT(changed, static_cast<int64_t>(params.size()) / 2);
  // The loss every rank recorded is the same (averaged over ranks).
  const double loss = s.trainer->storage().history("total_loss").latest();
  auto losses = world().all_gather_bytes(std::string(reinterpret_cast<const char*>(&loss),
                                                     sizeof(loss)));
  for (const auto& l : losses) EXPECT_EQ(l, losses[0]);
  EXPECT_EQ(s.trainer->storage().history("total_loss").values().size(),
            static_cast<size_t>(steps));
  // With overlap, every bucket's all-reduce started during backward (all parameters
  // are used), the last one at the end of backward.
  if (overlap && world().size() > 1) {
    EXPECT_EQ(s.dp->last_overlapped_buckets(), static_cast<int>(s.dp->buckets().size()));
  } else {
    EXPECT_EQ(s.dp->last_overlapped_buckets(), 0);
  }
}

class DataParallelModeTest : public ::testing::TestWithParam<bool> {};

TEST_P(DataParallelModeTest, MlpParametersBitwiseIdenticalAcrossRanks) {
  expect_identical_after_steps(mlp_config(), 6, GetParam());
}

TEST_P(DataParallelModeTest, GptWithDropoutParametersBitwiseIdenticalAcrossRanks) {
  expect_identical_after_steps(gpt_config(/*dropout=*/0.2), 4, GetParam());
}

TEST_P(DataParallelModeTest, ResnetParametersAndBatchNormBuffersBitwiseIdenticalAcrossRanks) {
  expect_identical_after_steps(resnet_config(), 3, GetParam());
}

// A module with a parameter that only some ranks use (its gradient is undefined on the
// others) and one that no rank uses.
class PartlyUsed : public torch::nn::Module {
 public:
  PartlyUsed() {
    a_ = register_parameter("a", at::randn({5, 3}));
    b_ = register_parameter("b", at::randn({3}));
    odd_only_ = register_parameter("odd_only", at::randn({3}));
    unused_ = register_parameter("unused", at::randn({2}));
  }
  at::Tensor loss(const at::Tensor& x, bool use_odd) {
    at::Tensor y = at::matmul(x, a_) + b_;
    if (use_odd) y = y * odd_only_;
    return (y * y).mean();
  }
  at::Tensor a_, b_, odd_only_, unused_;
};

// The reduced gradients of PartlyUsed after one backward on per-rank data, with
// DataParallel in the given mode; checks them against the average of every rank's local
// gradients and across ranks.
std::vector<at::Tensor> reduced_gradients(bool overlap, bool as_bucket_view) {
  const int rank = world().rank();
  const int n = world().size();
  at::manual_seed(11);
  auto module = std::make_shared<PartlyUsed>();
  // A tiny cap: several buckets.
  DataParallel dp(module, world(),
                  {/*bucket_cap_mb=*/40.0 / (1024 * 1024), true, overlap, as_bucket_view});
  EXPECT_GE(dp.buckets().size(), 2u);
  std::vector<int> bucket_of(dp.parameters().size(), 0);
  for (const auto& b : dp.buckets()) {
    for (size_t i : b.params) ++bucket_of[i];
  }
  EXPECT_EQ(bucket_of, std::vector<int>(dp.parameters().size(), 1)) << "one bucket each";

  at::manual_seed(1000 + static_cast<uint64_t>(rank));  // different data per rank
  at::Tensor x = at::randn({4, 5});
  // Local gradients (zeros where undefined) of every rank, as float64, computed apart
  // (autograd::grad does not accumulate into .grad, so no hook fires).
  const auto local_grads = torch::autograd::grad(
      {module->loss(x, rank % 2 == 1)}, dp.parameters(), {}, false, false, /*allow_unused=*/true);
  std::vector<std::vector<at::Tensor>> local(dp.parameters().size());
  for (size_t i = 0; i < dp.parameters().size(); ++i) {
    const at::Tensor& p = dp.parameters()[i];
    at::Tensor g = local_grads[i].defined() ? local_grads[i] : at::zeros_like(p);
    for (const auto& bytes : world().all_gather_bytes(tensor_bytes(g))) {
      at::Tensor t = at::empty_like(p);
      std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
      local[i].push_back(t.to(at::kDouble));
    }
  }
  dp.prepare_for_backward();
  torch::autograd::backward({module->loss(x, rank % 2 == 1)});
  EXPECT_FALSE(module->unused_.grad().defined());
  dp.reduce_gradients();
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < dp.parameters().size(); ++i) {
    const at::Tensor& p = dp.parameters()[i];
    SCOPED_TRACE(i);
    EXPECT_TRUE(p.grad().defined());
    if (!p.grad().defined()) continue;
    at::Tensor expected = at::zeros_like(local[i][0]);
    for (const auto& g : local[i]) expected += g;
    expected /= n;
    EXPECT_LE(relative_inf_error(p.grad().to(at::kDouble), expected), 1e-6);
    out.push_back(p.grad().clone());
  }
  EXPECT_TRUE(module->unused_.grad().equal(at::zeros({2})));
  if (n > 1) {
    // odd_only has a gradient from the odd ranks only: averaged with zeros.
    EXPECT_FALSE(module->odd_only_.grad().equal(at::zeros({3})));
  }
  // Every rank holds the same bits.
  for (const auto& p : dp.parameters()) {
    auto all = world().all_gather_bytes(tensor_bytes(p.grad()));
    for (const auto& g : all) EXPECT_EQ(g, all[0]);
  }
  EXPECT_EQ(dp.bytes_per_reduce(), (15 + 3 + 3 + 2) * 4);
  // With gradient_as_bucket_view (on more than one rank) every gradient is its slot of
  // its bucket; without, none shares the bucket's memory.
  for (const auto& b : dp.buckets()) {
    for (size_t k = 0; k < b.params.size(); ++k) {
      const at::Tensor& g = dp.parameters()[b.params[k]].grad();
      const bool aliases = g.data_ptr() == b.flat.data_ptr<float>() + b.offsets[k];
      EXPECT_EQ(aliases, as_bucket_view && n > 1) << "parameter " << b.params[k];
    }
  }
  return out;
}

TEST_P(DataParallelModeTest, ReducedGradientsAreTheAverageOfTheRanksGradients) {
  reduced_gradients(GetParam(), /*as_bucket_view=*/true);
  reduced_gradients(GetParam(), /*as_bucket_view=*/false);
}

TEST(DataParallelMpiTest, OverlapAndNoOverlapAndBucketViewsOrCopiesGiveBitwiseEqualGradients) {
  const auto reference = reduced_gradients(false, false);
  for (bool overlap : {false, true}) {
    for (bool view : {false, true}) {
      if (!overlap && !view) continue;
      SCOPED_TRACE(::testing::Message() << "overlap " << overlap << ", bucket view " << view);
      const auto got = reduced_gradients(overlap, view);
      ASSERT_EQ(got.size(), reference.size());
      for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(got[i].equal(reference[i])) << i;
    }
  }
}

// Steps of a hand-written loop over PartlyUsed with DataParallel in the given mode,
// zeroing the gradients in place (1.x zero_grad) or resetting them to undefined (2.x
// zero_grad(set_to_none)) before each backward; returns the parameters after SGD.
std::vector<at::Tensor> params_after_steps(bool overlap, bool as_bucket_view, bool set_to_none) {
  at::manual_seed(17);
  auto module = std::make_shared<PartlyUsed>();
  DataParallel dp(module, world(),
                  {/*bucket_cap_mb=*/40.0 / (1024 * 1024), true, overlap, as_bucket_view});
  const int rank = world().rank();
  at::manual_seed(2000 + static_cast<uint64_t>(rank));
  at::NoGradGuard no_grad_outside;
  for (int step = 0; step < 4; ++step) {
    for (auto& p : dp.parameters()) {
      if (!p.grad().defined()) continue;
      if (set_to_none) {
        p.mutable_grad().reset();
      } else {
        p.mutable_grad().detach_();  // throws on an autograd view
        p.mutable_grad().zero_();
      }
    }
    at::Tensor x = at::randn({4, 5});
    dp.prepare_for_backward();
    {
      at::AutoGradMode grad_on(true);
      torch::autograd::backward({module->loss(x, (rank + step) % 2 == 1)});
    }
    dp.reduce_gradients();
    for (auto& p : dp.parameters()) p.sub_(p.grad() * 0.1);
  }
  std::vector<at::Tensor> out;
  for (const auto& p : dp.parameters()) out.push_back(p.detach().clone());
  return out;
}

TEST(DataParallelMpiTest, BucketViewsSurviveZeroingInPlaceAndSetToNone) {
  const auto reference = params_after_steps(false, /*as_bucket_view=*/false, false);
  for (bool overlap : {false, true}) {
    for (bool set_to_none : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "overlap " << overlap << ", set_to_none "
                                        << set_to_none);
      const auto got = params_after_steps(overlap, /*as_bucket_view=*/true, set_to_none);
      ASSERT_EQ(got.size(), reference.size());
      for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(got[i].equal(reference[i])) << i;
      for (const auto& p : got) {
        auto all = world().all_gather_bytes(tensor_bytes(p));
        for (const auto& other : all) EXPECT_EQ(other, all[0]);
      }
    }
  }
}

TEST(DataParallelMpiTest, ASecondGradientInOneStepIsAnErrorNamingTheParameter) {
  if (world().size() == 1) GTEST_SKIP() << "no hooks on one rank";
  at::manual_seed(23);
  auto module = std::make_shared<PartlyUsed>();
  DataParallel dp(module, world(), {25.0, true, /*overlap=*/true});
  dp.prepare_for_backward();
  at::Tensor x = at::ones({2, 5});
  torch::autograd::backward({module->loss(x, false)});
  std::string message;
  try {
    torch::autograd::backward({module->loss(x, false)});
  } catch (const std::exception& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("received a second gradient in one step"), std::string::npos)
      << message;
  EXPECT_NE(message.find("DataParallel: parameter "), std::string::npos) << message;
  EXPECT_NE(message.find("(shape ["), std::string::npos) << message;
  dp.reduce_gradients();  // the buckets launched during the first backward complete
}

TEST(DataParallelMpiTest, BackwardAfterTheDataParallelIsGoneLeavesGradientsAlone) {
  // The accumulator hooks outlive the DataParallel when a graph built under it is
  // backwarded later: they must not call into the destroyed object.
  at::manual_seed(5);
  auto module = std::make_shared<PartlyUsed>();
  at::Tensor loss;
  {
    DataParallel dp(module, world(), {25.0, true, /*overlap=*/true});
    dp.prepare_for_backward();
    loss = module->loss(at::ones({2, 5}) * (world().rank() + 1), false);
  }
  torch::autograd::backward({loss});
  // Local gradients, not averaged: they differ between ranks.
  auto all = world().all_gather_bytes(tensor_bytes(module->a_.grad()));
  if (world().size() > 1) {
    EXPECT_NE(all[0], all[1]);
  }
}

INSTANTIATE_TEST_SUITE_P(Overlap, DataParallelModeTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Overlap" : "NoOverlap";
                         });

// One step on W ranks with global batch B against one step on one rank with all of B,
// computed in this process from a copy of the model (same initialization). Returns the
// relative error of the parameters as one vector: max |p_W - p_1| / max |p_1| over all
// elements of all parameters, which must be <= 1e-6. Each tensor on its own must be
// within 1e-5: zero-initialized biases after one step are -lr * grad, so their own
// relative error is the gradient's float32 summation noise (seen up to ~6e-7), while a
// real bug (a bucket not reduced, a wrong divisor) is off by O(1).
double one_step_equivalence_error(const Config& cfg, int64_t global_batch) {
  auto dist_setup = make_trainer(cfg, world(), /*init_seed=*/21, global_batch, {});
  dist::LocalCommunicator local;
  auto ref_setup = make_trainer(cfg, local, /*init_seed=*/21, global_batch, {});
  // Same initialization, and this rank's batch is its slice of the whole batch.
  auto dp = dist_setup.model->named_parameters();
  auto ref = ref_setup.model->named_parameters();
  for (const auto& item : ref) EXPECT_TRUE(item.value().equal(dp[item.key()])) << item.key();
  {
    data::DistributedSampler probe_w(dist_setup.dataset->size(), global_batch, world().rank(),
                                     world().size(), 3);
    data::DistributedSampler probe_1(dist_setup.dataset->size(), global_batch, 0, 1, 3);
    auto mine = probe_w.next();
    auto all = probe_1.next();
    const int64_t per_rank = global_batch / world().size();
    EXPECT_EQ(mine, std::vector<int64_t>(all.begin() + world().rank() * per_rank,
                                         all.begin() + (world().rank() + 1) * per_rank));
  }
  dist_setup.trainer->train(0, 1);
  ref_setup.trainer->train(0, 1);
  // The averaged loss is the whole batch's loss.
  const double loss_w = dist_setup.trainer->storage().history("total_loss").latest();
  const double loss_1 = ref_setup.trainer->storage().history("total_loss").latest();
  EXPECT_NEAR(loss_w, loss_1, 1e-6 * std::abs(loss_1));
  double max_diff = 0.0, max_scale = 0.0;
  for (const auto& item : ref) {
    const at::Tensor& p_w = dp[item.key()];
    EXPECT_LE(relative_inf_error(p_w, item.value()), 1e-5) << item.key();
    EXPECT_LE(relative_inf_error(p_w.grad(), item.value().grad()), 1e-5) << item.key() << " grad";
    max_diff = std::max(max_diff, (p_w - item.value()).abs().max().item<double>());
    max_scale = std::max(max_scale, item.value().abs().max().item<double>());
  }
  const double err = max_diff / max_scale;
  EXPECT_LE(err, 1e-6);
  return err;
}

TEST(DataParallelMpiTest, OneStepOnWRanksEqualsOneStepOnOneRankMlpSgd) {
  const double err = one_step_equivalence_error(mlp_config("SGD"), 16);
  if (world().rank() == 0) std::printf("mlp SGD: max relative parameter error %.3g\n", err);
}

TEST(DataParallelMpiTest, OneStepOnWRanksEqualsOneStepOnOneRankMlpAdamW) {
  const double err = one_step_equivalence_error(mlp_config("AdamW"), 16);
  if (world().rank() == 0) std::printf("mlp AdamW: max relative parameter error %.3g\n", err);
}

TEST(DataParallelMpiTest, OneStepOnWRanksEqualsOneStepOnOneRankGpt) {
  const double err = one_step_equivalence_error(gpt_config(/*dropout=*/0.0, "SGD"), 8);
  if (world().rank() == 0) std::printf("gpt SGD: max relative parameter error %.3g\n", err);
}

// A NaN loss on the last rank only (fault point train.loss in its 3rd step): every rank
// throws the same FloatingPointError out of train() at iteration 2, naming that rank.
TEST(DataParallelMpiTest, ANonFiniteLossOnOneRankStopsEveryRankAtTheSameIteration) {
  const int n = world().size();
  auto s = make_trainer(mlp_config(), world(), /*init_seed=*/5, /*global_batch=*/8, {});
  ::setenv("DTRAIN_FAULT", "train.loss", 1);
  ::setenv("DTRAIN_FAULT_RANK", std::to_string(n - 1).c_str(), 1);
  ::setenv("DTRAIN_FAULT_AFTER", "3", 1);
  const std::string what =
      dtrain::testing::ThrownMessage<FloatingPointError>([&] { s.trainer->train(0, 10); });
  ::unsetenv("DTRAIN_FAULT");
  ::unsetenv("DTRAIN_FAULT_RANK");
  ::unsetenv("DTRAIN_FAULT_AFTER");
  EXPECT_EQ(s.trainer->iter(), 2);
  EXPECT_EQ(what, "Loss became infinite or NaN at iteration=2!\nloss_dict = {'total_loss': nan}" +
                      (n > 1 ? " on rank " + std::to_string(n - 1) + " (of " + std::to_string(n) +
                                   " ranks)"
                             : std::string()));
  for (const auto& other : world().all_gather_bytes(what)) EXPECT_EQ(other, what);
}

TEST(EvaluatorMpiTest, DistributedMetricsEqualTheSingleRankOnes) {
  testing::TinyClassificationSet set;
  data::ClassificationDataset ds(testing::float_matrix(set.inputs),
                                 at::tensor(set.labels, at::kLong), 3, "tiny");
  testing::InputLogitsClassifier model(1.0);
  dist::LocalCommunicator local;
  const auto ref = evaluate(model, ds, local, 4);
  for (int64_t batch : {1, 4, 64}) {
    SCOPED_TRACE(batch);
    const auto m = evaluate(model, ds, world(), batch);
    EXPECT_EQ(m.at("accuracy"), 6.0 / 9.0);
    // Per-batch float32 losses summed in float64: the batching changes the rounding only.
    EXPECT_NEAR(m.at("loss"), ref.at("loss"), 1e-6);
    EXPECT_NEAR(m.at("loss"), set.mean_loss(), 1e-6);
  }
}

}  // namespace
}  // namespace dtrain::engine
