// Unit tests of detectron2's launcher flags on `dtrain train` (plan_train_launch,
// train_args_for_ranks): what is started, ignored with a note, or refused with advice.
#include "launcher/train_flags.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "runtime/base/error.h"

namespace dtrain::launcher {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TrainOptions train(int gpus, int machines = 1, int machine_rank = 0, std::string url = "") {
  TrainOptions o;
  o.config_file = "configs/mlp_synthetic.yaml";
  o.overrides = {"SOLVER.MAX_ITER", "4"};
  o.num_gpus = gpus;
  o.num_machines = machines;
  o.machine_rank = machine_rank;
  o.dist_url = std::move(url);
  return o;
}

std::string refusal(const TrainOptions& o, const std::optional<dist::RankEnv>& env = {}) {
  try {
    plan_train_launch(o, env);
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a ConfigError";
  return "";
}

dist::RankEnv launched(int world, int local) {
  dist::RankEnv env;
  env.world_size = world;
  env.local_size = local;
  env.source = "openmpi";
  return env;
}

TEST(TrainFlagsTest, NumGpusStartsThatManyLocalRanks) {
  EXPECT_EQ(plan_train_launch(train(1), std::nullopt).spawn_ranks, 0);  // this process
  const TrainLaunchPlan plan = plan_train_launch(train(4), std::nullopt);
  EXPECT_EQ(plan.spawn_ranks, 4);
  EXPECT_TRUE(plan.notes.empty());
  // A single-rank "launch" (mpirun -np 1, a batch step) still starts them.
  EXPECT_EQ(plan_train_launch(train(2), launched(1, 1)).spawn_ranks, 2);
}

TEST(TrainFlagsTest, RanksAreStartedWithoutTheLauncherFlags) {
  TrainOptions o = train(2, 1, 0, "tcp://127.0.0.1:50152");
  o.resume = true;
  EXPECT_THAT(train_args_for_ranks(o),
              ElementsAre("train", "--config-file", "configs/mlp_synthetic.yaml", "--resume",
                          "SOLVER.MAX_ITER", "4"));
  o.eval_only = true;
  o.config_file.clear();
  EXPECT_THAT(train_args_for_ranks(o),
              ElementsAre("train", "--resume", "--eval-only", "SOLVER.MAX_ITER", "4"));
}

TEST(TrainFlagsTest, DistUrlIsIgnoredWithANote) {
  const TrainLaunchPlan plan = plan_train_launch(train(1, 1, 0, "auto"), std::nullopt);
  EXPECT_EQ(plan.spawn_ranks, 0);
  ASSERT_EQ(plan.notes.size(), 1u);
  EXPECT_THAT(plan.notes[0], AllOf(HasSubstr("--dist-url auto is ignored"),
                                   HasSubstr("through MPI (mpirun, srun or dtrain launch)")));
}

TEST(TrainFlagsTest, SeveralMachinesAreRefusedWithWhatToRunInstead) {
  EXPECT_THAT(refusal(train(4, 2)),
              AllOf(HasSubstr("--num-machines 2"), HasSubstr("dtrain launch --nnodes M"),
                    HasSubstr("--hostfile"), HasSubstr("srun"), HasSubstr("OPERATIONS.md")));
  EXPECT_THAT(refusal(train(4, 2, 2)), HasSubstr("--machine-rank must be in [0, --num-machines)"));
  EXPECT_THAT(refusal(train(0)), HasSubstr("--num-gpus must be >= 1, got 0"));
  EXPECT_THAT(refusal(train(1, 0)), HasSubstr("--num-machines must be >= 1, got 0"));
}

TEST(TrainFlagsTest, UnderALauncherTheFlagsAreIgnoredWithANote) {
  // e.g. srun ... dtrain train --num-gpus 4 --num-machines 2 --machine-rank $SLURM_NODEID
  const TrainLaunchPlan plan = plan_train_launch(train(4, 2, 1), launched(8, 4));
  EXPECT_EQ(plan.spawn_ranks, 0);  // never launch again from a rank
  ASSERT_EQ(plan.notes.size(), 1u);
  EXPECT_THAT(plan.notes[0], AllOf(HasSubstr("are ignored"), HasSubstr("one of 8 ranks (4 on "
                                                                       "this node) started by "
                                                                       "openmpi")));
  EXPECT_TRUE(plan_train_launch(train(1), launched(8, 4)).notes.empty());
}

}  // namespace
}  // namespace dtrain::launcher
