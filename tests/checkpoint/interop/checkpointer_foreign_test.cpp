// Checkpointer::load of foreign files (docs/INTEROP.md): detectron2-style checkpoints made
// by python3-torch load the model, and the SGD/AdamW optimizer and scheduler state where
// they map (bit for bit against torch's own tensors), say why where they do not; DDP's
// "module." prefix is stripped; the gpt model finds "transformer.h.0..." from "h.0..."
// keys with the matching heuristics (config key or "?matching_heuristics=True").
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include "checkpoint/checkpointer.h"
#include "checkpoint/interop/torch_file.h"
#include "checkpoint/module_state.h"
#include "checkpoint/torch_io.h"
#include "models/gpt.h"
#include "models/mlp.h"
#include "runtime/base/config.h"
#include "runtime/base/error.h"
#include "runtime/dist/local_communicator.h"
#include "runtime/optim/optim.h"
#include "runtime/optim/optimizer_state.h"
#include "tests/checkpoint/interop/interop_test_util.h"
#include "tests/gtest_util.h"
#include "tests/test_util.h"

namespace dtrain::interop {
namespace {

using checkpoint::Checkpointer;
using testing::expect_matches_reference;
using testing::torch_files;

std::vector<std::pair<std::string, at::Tensor>> Tensors(const StateDict& s,
                                                        const std::string& prefix = "") {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& [k, v] : s) {
    if (auto t = std::get_if<at::Tensor>(&v)) out.emplace_back(prefix + k, *t);
  }
  return out;
}

// dtrain's mlp 4 -> 8 -> 6 -> 3 with an optimizer and scheduler as a trainer builds them.
struct MlpSetup {
  explicit MlpSetup(const std::string& optimizer) {
    cfg.set("SOLVER.OPTIMIZER", optimizer);
    cfg.set("SOLVER.BASE_LR", 0.1);
    cfg.set("SOLVER.MOMENTUM", 0.9);
    cfg.set("SOLVER.WEIGHT_DECAY", optimizer == "SGD" ? 1e-4 : 0.01);
    cfg.set("SOLVER.BETAS", std::vector<double>{0.8, 0.99});
    cfg.set("SOLVER.EPS", 1e-7);
    cfg.set("SOLVER.MAX_ITER", int64_t{200});
    cfg.set("SOLVER.STEPS", std::vector<int64_t>{100});
    cfg.set("SOLVER.WARMUP_ITERS", int64_t{0});
    model = models::make_mlp({4, {8, 6}, 3});
    opt = optim::build_optimizer(cfg, model->named_parameters());
    state = std::make_unique<optim::OptimizerState>(*opt, model->named_parameters());
    sched = optim::build_lr_scheduler(cfg, *opt);
    ckpt = std::make_unique<Checkpointer>(
        model, tmp.path(), comm,
        std::map<std::string, checkpoint::Checkpointable>{{"optimizer", {state.get()}},
                                                           {"scheduler", {sched.get()}}});
  }
  // The optimizer's per-parameter state as "<param>/<field>" tensors (step left out).
  std::vector<std::pair<std::string, at::Tensor>> OptState() const {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (auto& [k, t] : Tensors(state->state_dict())) {
      if (k.rfind("state/", 0) == 0) out.emplace_back(k.substr(6), t);
    }
    return out;
  }
  Config cfg = Config::defaults();
  testutil::TempDir tmp;
  dist::LocalCommunicator comm;
  std::shared_ptr<models::Model> model;
  std::unique_ptr<torch::optim::Optimizer> opt;
  std::unique_ptr<optim::OptimizerState> state;
  std::unique_ptr<optim::LRScheduler> sched;
  std::unique_ptr<Checkpointer> ckpt;
};

#define REQUIRE_TORCH_FILES() \
  if (torch_files().empty()) GTEST_SKIP() << "python3-torch could not make the torch files"

TEST(CheckpointerForeignTest, Detectron2CheckpointLoadsModelSgdStateAndScheduler) {
  REQUIRE_TORCH_FILES();
  MlpSetup s("SGD");
  StateDict extra = s.ckpt->load(torch_files() + "/mlp_sgd.pth");
  EXPECT_EQ(std::get<int64_t>(extra.at("iteration")), 3);
  expect_matches_reference(Tensors(checkpoint::ModuleState(s.model).state_dict()), "mlp_sgd");
  expect_matches_reference(s.OptState(), "mlp_sgd_state");
  EXPECT_EQ(s.sched->last_iter(), 3);
  EXPECT_DOUBLE_EQ(std::get<double>(s.state->state_dict().at("param_groups/0/momentum")), 0.9);
}

TEST(CheckpointerForeignTest, AdamWStateWithItsStepLoadsBitForBit) {
  REQUIRE_TORCH_FILES();
  MlpSetup s("AdamW");
  s.ckpt->load(torch_files() + "/mlp_adamw.pth");
  expect_matches_reference(s.OptState(), "mlp_adamw_state");
  EXPECT_EQ(std::get<int64_t>(s.state->state_dict().at("state/fc1.weight/step")), 3);
  EXPECT_DOUBLE_EQ(std::get<double>(s.state->state_dict().at("param_groups/0/beta1")), 0.8);
}

TEST(CheckpointerForeignTest, OptimizerStateThatDoesNotMapIsLeftAloneWithAReason) {
  REQUIRE_TORCH_FILES();
  optim::OptimizerState* state = nullptr;
  {
    MlpSetup s("SGD");  // the file's SGD has two param groups
    state = s.state.get();
    s.ckpt->load(torch_files() + "/mlp_sgd_groups.pth");
    expect_matches_reference(Tensors(checkpoint::ModuleState(s.model).state_dict()), "mlp_sgd_groups");
    EXPECT_TRUE(s.OptState().empty());
    const auto file = read_pickle_file(torch_files() + "/mlp_sgd_groups.pth");
    EXPECT_CONTAINS(state->load_pytorch_state(*file.root->get("optimizer")),
                    "it has 2 parameter groups and this optimizer has 1");
  }
  MlpSetup s("SGD");
  const auto file = read_pickle_file(torch_files() + "/mlp_adamw.pth");
  EXPECT_CONTAINS(s.state->load_pytorch_state(*file.root->get("optimizer")),
                  "the file's optimizer is Adam/AdamW but this one is SGD");
  EXPECT_TRUE(s.OptState().empty());
}

TEST(CheckpointerForeignTest, ModelWeightsOnlyLeaveOptimizerAndSchedulerAlone) {
  REQUIRE_TORCH_FILES();
  MlpSetup s("SGD");
  s.ckpt->load(torch_files() + "/mlp_sgd.pth", std::vector<std::string>{});
  expect_matches_reference(Tensors(checkpoint::ModuleState(s.model).state_dict()), "mlp_sgd");
  EXPECT_TRUE(s.OptState().empty());
  EXPECT_EQ(s.sched->last_iter(), 0);
}

TEST(CheckpointerForeignTest, DdpModulePrefixIsStripped) {
  REQUIRE_TORCH_FILES();
  auto net = std::make_shared<torch::nn::SequentialImpl>(
      torch::nn::Linear(4, 8), torch::nn::BatchNorm1d(8), torch::nn::Linear(8, 2));
  testutil::TempDir tmp;
  dist::LocalCommunicator comm;
  checkpoint::CheckpointerOptions options;
  options.strict = true;
  Checkpointer ckpt(net, tmp.path(), comm, {}, options);
  ckpt.load(torch_files() + "/ddp_prefixed.pth");
  expect_matches_reference(Tensors(checkpoint::ModuleState(net).state_dict()), "d2_model_final");
}

TEST(CheckpointerForeignTest, GptFindsTransformerKeysWithTheMatchingHeuristics) {
  auto source = models::make_gpt({2, 2, 16, 32, 8, 0.0});
  // A file whose keys lack the model's "transformer." prefix (e.g. from another codebase).
  StateDict renamed;
  for (const auto& [k, v] : checkpoint::ModuleState(source).state_dict()) {
    const std::string prefix = "transformer.";
    renamed[k.rfind(prefix, 0) == 0 ? k.substr(prefix.size()) : k] = v;
  }
  ASSERT_TRUE(renamed.count("h.0.attn.c_attn.weight"));
  testutil::TempDir tmp;
  const std::string file = tmp / "gpt.pth";
  checkpoint::write_torch_state_dict(file, renamed);
  dist::LocalCommunicator comm;
  checkpoint::CheckpointerOptions strict;
  strict.strict = true;
  {
    auto model = models::make_gpt({2, 2, 16, 32, 8, 0.0});
    Checkpointer ckpt(model, tmp.path(), comm, {}, strict);
    const std::string msg = dtrain::testing::ThrownMessage<dtrain::CheckpointError>([&] { ckpt.load(file); });
    EXPECT_CONTAINS(msg, "missing    | transformer.h.0.attn.c_attn.weight");
    EXPECT_CONTAINS(msg, "unused     | h.0.attn.c_attn.weight");
  }
  for (const bool by_query : {true, false}) {
    auto model = models::make_gpt({2, 2, 16, 32, 8, 0.0});
    checkpoint::CheckpointerOptions options = strict;
    options.matching_heuristics = !by_query;
    Checkpointer ckpt(model, tmp.path(), comm, {}, options);
    ckpt.load(by_query ? file + "?matching_heuristics=True" : file);
    for (const auto& [k, v] : checkpoint::ModuleState(source).state_dict()) {
      EXPECT_TRUE(at::equal(std::get<at::Tensor>(v),
                            std::get<at::Tensor>(checkpoint::ModuleState(model).state_dict().at(k))))
          << k;
    }
  }
}

}  // namespace
}  // namespace dtrain::interop
