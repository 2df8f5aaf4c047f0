// `dtrain ckpt` through the dtrain executable: exit codes, and checkpoints written by a
// real `dtrain train` run (verify, inspect, export -> import -> MODEL.WEIGHTS).
#include <stdlib.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace {

namespace stdfs = std::filesystem;

struct Result {
  int rc = -1;
  std::string output;  // stdout and stderr
};

// Runs `dtrain ARGS` (a shell-quoted string) and captures its output.
Result dtrain(const std::string& dir, const std::string& args) {
  const std::string log = dir + "/cmd.log";
  const std::string cmd = std::string(DTRAIN_BIN) + " " + args + " >" + log + " 2>&1";
  const int status = std::system(cmd.c_str());
  Result r;
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.output = dtrain::testutil::read_file(log);
  return r;
}

bool contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

class CkptCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* src = std::getenv("DTRAIN_TEST_SOURCE_DIR");
    ASSERT_NE(src, nullptr) << "DTRAIN_TEST_SOURCE_DIR is not set";
    config_ = std::string(src) + "/configs/mlp_synthetic.yaml";
  }
  // A tiny MLP (8 -> 16 -> 4) run; extra KEY VALUE overrides appended.
  std::string train_args(const std::string& output_dir, const std::string& extra = "") const {
    return "train --config-file " + config_ +
           " MODEL.MLP.INPUT_DIM 8 MODEL.MLP.HIDDEN_DIMS '[16]' MODEL.MLP.NUM_CLASSES 4"
           " DATASETS.SYNTHETIC.INPUT_SHAPE '[8]' DATASETS.SYNTHETIC.NUM_CLASSES 4"
           " DATASETS.SYNTHETIC.NUM_TRAIN 64 DATASETS.SYNTHETIC.NUM_TEST 16"
           " SOLVER.IMS_PER_BATCH 8 SOLVER.MAX_ITER 4 SOLVER.CHECKPOINT_PERIOD 2"
           " OUTPUT_DIR " + output_dir + " " + extra;
  }

  dtrain::testutil::TempDir tmp_{"dtrain_ckpt_cli_"};
  const std::string dir_ = tmp_.path();
  std::string config_;
};

TEST_F(CkptCliTest, UsageErrorsExit2AndHelpListsCkpt) {
  auto r = dtrain(dir_, "--help");
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "ckpt")) << r.output;
  EXPECT_EQ(dtrain(dir_, "ckpt export " + dir_).rc, 2);  // no --to
  r = dtrain(dir_, "ckpt verify " + dir_ + "/nothing_here");
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "does not exist")) << r.output;
}

TEST_F(CkptCliTest, ToolsWorkOnCheckpointsOfARealTrainingRun) {
  const std::string out = dir_ + "/out";
  auto r = dtrain(dir_, train_args(out));
  ASSERT_EQ(r.rc, 0) << r.output;

  r = dtrain(dir_, "ckpt verify " + out);
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "OK: " + out + "/model_final is valid (iteration 3")) << r.output;

  r = dtrain(dir_, "ckpt inspect " + out);
  EXPECT_EQ(r.rc, 0) << r.output;
  for (const char* s : {"MODEL.NAME            mlp", "SOLVER.MAX_ITER       4", "model (",
                        "optimizer (", "rng (", "total: "}) {
    EXPECT_TRUE(contains(r.output, s)) << s << "\n" << r.output;
  }

  // export -> import -> MODEL.WEIGHTS with CHECKPOINT.STRICT: every key loads.
  const std::string pt = dir_ + "/w.pt", imported = dir_ + "/imported";
  r = dtrain(dir_, "ckpt export " + out + " --to " + pt);
  ASSERT_EQ(r.rc, 0) << r.output;
  r = dtrain(dir_, "ckpt import " + pt + " --to " + imported);
  ASSERT_EQ(r.rc, 0) << r.output;
  r = dtrain(dir_, train_args(dir_ + "/eval", "--eval-only MODEL.WEIGHTS " + imported +
                                                  " CHECKPOINT.STRICT True"));
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "Loaded checkpoint " + imported)) << r.output;

  // A truncated shard: verify fails with exit 1.
  const std::string shard = out + "/model_final/shard-00000-of-00001.h5";
  stdfs::resize_file(shard, stdfs::file_size(shard) - 100);
  r = dtrain(dir_, "ckpt verify " + out + "/model_final");
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "shard-00000-of-00001.h5' cannot be opened")) << r.output;
}

}  // namespace
