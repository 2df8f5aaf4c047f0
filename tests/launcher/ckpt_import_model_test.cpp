// `dtrain ckpt import --config-file`: a detectron2-style checkpoint made by python3-torch
// (SGD with momentum, a MultiStepLR, iteration 3) becomes a dtrain checkpoint whose
// model, optimizer and scheduler state a trainer built from the same config loads bit
// for bit; without the config the optimizer is said not to be imported.
#include <sstream>

#include <gtest/gtest.h>

#include "checkpoint/checkpointer.h"
#include "checkpoint/module_state.h"
#include "launcher/ckpt_command.h"
#include "models/model.h"
#include "runtime/base/config.h"
#include "runtime/dist/local_communicator.h"
#include "runtime/optim/optim.h"
#include "runtime/optim/optimizer_state.h"
#include "tests/checkpoint/interop/interop_test_util.h"
#include "tests/gtest_util.h"
#include "tests/test_util.h"

namespace dtrain::launcher {
namespace {

const char* kConfig = R"(MODEL:
  NAME: mlp
  MLP: {INPUT_DIM: 4, HIDDEN_DIMS: [8, 6], NUM_CLASSES: 3}
SOLVER:
  OPTIMIZER: SGD
  BASE_LR: 0.1
  MOMENTUM: 0.9
  WEIGHT_DECAY: 0.0001
  MAX_ITER: 200
  STEPS: [100]
  WARMUP_ITERS: 0
)";

struct CkptRun {
  int rc;
  std::string out, err;
};

CkptRun Ckpt(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  const int rc = run_ckpt(args, out, err);
  return {rc, out.str(), err.str()};
}

TEST(CkptImportModelTest, OptimizerAndSchedulerStateAreImportedThroughTheConfig) {
  const std::string& files = interop::testing::torch_files();
  if (files.empty()) GTEST_SKIP() << "python3-torch could not make the torch files";
  testutil::TempDir tmp;
  const std::string cfg_file = tmp.write("mlp.yaml", kConfig);

  CkptRun plain = Ckpt({"import", files + "/mlp_sgd.pth", "--to", tmp / "plain"});
  ASSERT_EQ(plain.rc, kCkptOk) << plain.err;
  EXPECT_CONTAINS(plain.out, "optimizer: not imported: without --config-file");

  CkptRun r = Ckpt({"import", files + "/mlp_sgd.pth", "--to", tmp / "ckpt", "--config-file", cfg_file});
  ASSERT_EQ(r.rc, kCkptOk) << r.err;
  EXPECT_CONTAINS(r.out, "6 keys matched by name");
  EXPECT_CONTAINS(r.out, "optimizer: imported");
  EXPECT_CONTAINS(r.out, "scheduler: imported");

  // A trainer's objects from the same config load the checkpoint like any other.
  const Config cfg = Config::from_file(cfg_file);
  auto model = models::build_model(cfg);
  auto opt = optim::build_optimizer(cfg, model->named_parameters());
  optim::OptimizerState state(*opt, model->named_parameters());
  auto sched = optim::build_lr_scheduler(cfg, *opt);
  dist::LocalCommunicator comm;
  checkpoint::Checkpointer ckpt(model, tmp / "out", comm,
                                {{"optimizer", {&state}}, {"scheduler", {sched.get()}}});
  StateDict extra = ckpt.load(tmp / "ckpt");
  EXPECT_EQ(std::get<int64_t>(extra.at("iteration")), 3);
  EXPECT_EQ(sched->last_iter(), 3);
  std::vector<std::pair<std::string, at::Tensor>> model_tensors, momentum;
  for (const auto& [k, v] : checkpoint::ModuleState(model).state_dict()) {
    model_tensors.emplace_back(k, std::get<at::Tensor>(v));
  }
  for (const auto& [k, v] : state.state_dict()) {
    if (k.rfind("state/", 0) == 0) momentum.emplace_back(k.substr(6), std::get<at::Tensor>(v));
  }
  interop::testing::expect_matches_reference(model_tensors, "mlp_sgd");
  interop::testing::expect_matches_reference(momentum, "mlp_sgd_state");
}

TEST(CkptImportModelTest, AnOptimizerThatDoesNotMapIsSaidAndLeftOut) {
  const std::string& files = interop::testing::torch_files();
  if (files.empty()) GTEST_SKIP() << "python3-torch could not make the torch files";
  testutil::TempDir tmp;
  const std::string cfg_file = tmp.write("mlp.yaml", kConfig);
  CkptRun r = Ckpt({"import", files + "/mlp_adamw.pth", "--to", tmp / "ckpt", "--config-file", cfg_file});
  ASSERT_EQ(r.rc, kCkptOk) << r.err;
  EXPECT_CONTAINS(r.out, "optimizer: not imported: the file's optimizer is Adam/AdamW but this one is SGD");
  const auto index = checkpoint::load_index(tmp / "ckpt");
  EXPECT_EQ(index.find_tensor("optimizer/state/fc1.weight/momentum_buffer"), nullptr);
  EXPECT_NE(index.find_tensor("model/fc1.weight"), nullptr);
  EXPECT_EQ(index.iteration, 3);
}

}  // namespace
}  // namespace dtrain::launcher
