// PeriodicCheckpointer: detectron2's names (model_0000009, model_final at max_iter - 1),
// the iteration stored with each, retention with max_to_keep rebuilt from disk after a
// restart, and what retention never deletes (model_final, the checkpoint resumed from,
// what last_checkpoint names).
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "checkpoint/checkpointer.h"
#include "runtime/base/error.h"
#include "runtime/dist/local_communicator.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint {
namespace {

using namespace testing;  // NOLINT: test helpers
namespace stdfs = std::filesystem;
using Names = std::vector<std::string>;

class PeriodicTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = make_temp_dir("periodic"); }
  void TearDown() override {
    if (!HasFailure()) stdfs::remove_all(dir_);
  }
  // Iteration stored in dir_/name.
  int64_t IterationOf(const std::string& name) {
    auto model = make_tiny_net(1);
    StateDict extra = Checkpointer(model, dir_, comm_).load(dir_ + "/" + name);
    EXPECT_EQ(std::get<int64_t>(extra.at("iteration")), std::get<int64_t>(extra.at("step")));
    return std::get<int64_t>(extra.at("iteration"));
  }
  std::string dir_;
  dist::LocalCommunicator comm_;
};

TEST_F(PeriodicTest, NamesAndFinal) {
  TrainingState s(OptKind::kSGD, 1, 0, 1);
  Checkpointer ckpt(s.model, dir_, comm_, s.checkpointables());
  PeriodicCheckpointer periodic(ckpt, /*period=*/5, /*max_iter=*/23);
  for (int64_t it = 0; it < 23; ++it) {
    s.train(1);
    periodic.step(it, {{"step", it}});
  }
  EXPECT_EQ(visible_dirs(dir_), (Names{"model_0000004", "model_0000009", "model_0000014",
                                       "model_0000019", "model_final"}));
  EXPECT_EQ(last_checkpoint_name(dir_), "model_final");
  EXPECT_EQ(IterationOf("model_0000009"), 9);
  EXPECT_EQ(IterationOf("model_final"), 22);
  // Checkpointer's listing agrees (sorted, full paths).
  const auto all = ckpt.get_all_checkpoint_files();
  ASSERT_EQ(all.size(), 5u);
  EXPECT_EQ(all.front(), dir_ + "/model_0000004");
  EXPECT_EQ(all.back(), dir_ + "/model_final");
  EXPECT_TRUE(ckpt.has_checkpoint());
  EXPECT_EQ(ckpt.get_checkpoint_file(), dir_ + "/model_final");
}

TEST_F(PeriodicTest, FinalOnAPeriodBoundaryAndCustomPrefix) {
  TrainingState s(OptKind::kSGD, 1, 0, 1);
  Checkpointer ckpt(s.model, dir_, comm_, s.checkpointables());
  PeriodicCheckpointer periodic(ckpt, 10, 20, 0, "net");
  for (int64_t it = 0; it < 20; ++it) periodic.step(it, {{"step", it}});
  EXPECT_EQ(visible_dirs(dir_), (Names{"net_0000009", "net_0000019", "net_final"}));
  EXPECT_EQ(IterationOf("net_final"), 19);
  periodic.save("net_manual", {{"step", int64_t{7}}, {"iteration", int64_t{7}}});
  EXPECT_EQ(IterationOf("net_manual"), 7);
  EXPECT_EQ(last_checkpoint_name(dir_), "net_manual");
}

// An OUTPUT_DIR that is a symbolic link (to scratch space): its checkpoints are listed,
// and retention deletes the old ones.
TEST_F(PeriodicTest, ASymlinkedOutputDirIsListedAndPruned) {
  const std::string real = dir_ + "/scratch";
  const std::string link = dir_ + "/out";
  stdfs::create_directories(real);
  stdfs::create_directory_symlink(real, link);
  TrainingState s(OptKind::kSGD, 1, 0, 1);
  Checkpointer ckpt(s.model, link, comm_, s.checkpointables());
  PeriodicCheckpointer periodic(ckpt, 2, std::nullopt, /*max_to_keep=*/1);
  for (int64_t it = 0; it < 6; ++it) periodic.step(it);
  EXPECT_EQ(visible_dirs(real), (Names{"model_0000005"}));
  EXPECT_EQ(ckpt.get_all_checkpoint_files(), (Names{link + "/model_0000005"}));
}

TEST_F(PeriodicTest, WithoutMaxIterThereIsNoFinal) {
  TrainingState s(OptKind::kSGD, 1, 0, 1);
  Checkpointer ckpt(s.model, dir_, comm_, s.checkpointables());
  PeriodicCheckpointer periodic(ckpt, 3);
  for (int64_t it = 0; it < 7; ++it) periodic.step(it, {{"step", it}});
  EXPECT_EQ(visible_dirs(dir_), (Names{"model_0000002", "model_0000005"}));
  try {
    PeriodicCheckpointer bad(ckpt, 0);
    ADD_FAILURE() << "period 0 accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("period must be positive, got 0"), std::string::npos);
  }
}

TEST_F(PeriodicTest, MaxToKeep) {
  TrainingState s(OptKind::kAdamW, 1, 0, 1);
  Checkpointer ckpt(s.model, dir_, comm_, s.checkpointables());
  PeriodicCheckpointer periodic(ckpt, 5, 23, /*max_to_keep=*/2);
  std::vector<Names> seen;
  for (int64_t it = 0; it < 23; ++it) {
    periodic.step(it, {{"step", it}});
    if ((it + 1) % 5 == 0 || it == 22) seen.push_back(visible_dirs(dir_));
  }
  EXPECT_EQ(seen[0], (Names{"model_0000004"}));
  EXPECT_EQ(seen[1], (Names{"model_0000004", "model_0000009"}));
  EXPECT_EQ(seen[2], (Names{"model_0000009", "model_0000014"}));
  EXPECT_EQ(seen[3], (Names{"model_0000014", "model_0000019"}));
  EXPECT_EQ(seen[4], (Names{"model_0000014", "model_0000019", "model_final"}));
  // Deletion leaves nothing half-deleted or hidden behind.
  for (const auto& e : stdfs::directory_iterator(dir_)) {
    EXPECT_NE(e.path().filename().string()[0], '.') << e.path();
  }
}

TEST_F(PeriodicTest, RetentionAfterARestart) {
  {
    // First run: saves 4 and 9, then "dies" at iteration 12.
    TrainingState s(OptKind::kAdamW, 1, 0, 1);
    Checkpointer ckpt(s.model, dir_, comm_, s.checkpointables());
    PeriodicCheckpointer periodic(ckpt, 5, 23, 0);
    for (int64_t it = 0; it <= 12; ++it) {
      s.train(1);
      periodic.step(it, {{"step", it}});
    }
    EXPECT_EQ(visible_dirs(dir_), (Names{"model_0000004", "model_0000009"}));
  }
  // Second run over the same directory: resumes from model_0000009 and keeps only 1.
  TrainingState s(OptKind::kAdamW, 2, 0, 1);
  Checkpointer ckpt(s.model, dir_, comm_, s.checkpointables());
  const StateDict extra = ckpt.resume_or_load("", true);
  ASSERT_EQ(ckpt.loaded_from(), dir_ + "/model_0000009");
  const int64_t start = std::get<int64_t>(extra.at("iteration")) + 1;
  EXPECT_EQ(start, 10);
  PeriodicCheckpointer periodic(ckpt, 5, 23, /*max_to_keep=*/1);
  for (int64_t it = start; it < 23; ++it) {
    s.train(1);
    periodic.step(it, {{"step", it}});
    if (it == 14) {
      // The kept list comes from disk: model_0000004 of the first run goes; the
      // checkpoint resumed from stays.
      EXPECT_EQ(visible_dirs(dir_), (Names{"model_0000009", "model_0000014"}));
    }
  }
  EXPECT_EQ(visible_dirs(dir_), (Names{"model_0000009", "model_0000019", "model_final"}));

  // A third run (not resumed) that keeps 1: older periodic checkpoints go, model_final
  // and the newest one (what last_checkpoint names) stay.
  TrainingState t(OptKind::kAdamW, 3, 0, 1);
  Checkpointer ckpt3(t.model, dir_, comm_, t.checkpointables());
  PeriodicCheckpointer p3(ckpt3, 5, 100, 1);
  p3.step(24, {{"step", int64_t{24}}});
  EXPECT_EQ(visible_dirs(dir_), (Names{"model_0000024", "model_final"}));
  EXPECT_EQ(last_checkpoint_name(dir_), "model_0000024");
}

TEST_F(PeriodicTest, RemoveCheckpointRefusesLastCheckpoint) {
  TrainingState s(OptKind::kSGD, 1, 0, 1);
  Checkpointer ckpt(s.model, dir_, comm_, s.checkpointables());
  ckpt.save("a");
  ckpt.save("b");
  ckpt.tag_last_checkpoint("a");
  EXPECT_EQ(last_checkpoint_name(dir_), "a");
  try {
    ckpt.remove_checkpoint("a");
    ADD_FAILURE() << "removed what last_checkpoint names";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("refusing to delete 'a': last_checkpoint names it"),
              std::string::npos)
        << e.what();
  }
  ckpt.remove_checkpoint("b");
  EXPECT_EQ(visible_dirs(dir_), Names{"a"});
  try {
    ckpt.tag_last_checkpoint("../x");
    ADD_FAILURE() << "tagged an invalid name";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("invalid checkpoint name '../x'"), std::string::npos);
  }
}

TEST(OnSaveErrorTest, ParsesStopAndWarnAndNamesTheKeyOtherwise) {
  EXPECT_EQ(parse_on_save_error("stop"), OnSaveError::kStop);
  EXPECT_EQ(parse_on_save_error("warn"), OnSaveError::kWarn);
  try {
    parse_on_save_error("ignore");
    ADD_FAILURE() << "accepted 'ignore'";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "CHECKPOINT.ON_SAVE_ERROR: expected 'stop' or 'warn', got 'ignore'");
  }
}

// A periodic save that fails (here: OUTPUT_DIR/model_0000004 is a regular file the save
// refuses to replace) stops training by default, with an error agreed on every rank.
TEST_F(PeriodicTest, OnSaveErrorStopThrowsTheAgreedError) {
  TrainingState s(OptKind::kSGD, 1, 0, 1);
  Checkpointer ckpt(s.model, dir_, comm_, s.checkpointables());
  PeriodicCheckpointer periodic(ckpt, 5, 23);
  std::ofstream(dir_ + "/model_0000004") << "not a checkpoint";
  for (int64_t it = 0; it < 4; ++it) periodic.step(it, {{"step", it}});
  try {
    periodic.step(4, {{"step", int64_t{4}}});
    ADD_FAILURE() << "a failed periodic save did not stop training";
  } catch (const CheckpointError& e) {
    EXPECT_TRUE(agreed_on_every_rank(e)) << e.what();
    EXPECT_NE(std::string(e.what()).find("model_0000004"), std::string::npos) << e.what();
  }
  EXPECT_EQ(periodic.failed_saves(), 0);
}

// With OnSaveError::kWarn the failed save is skipped and counted; the next period saves,
// retention goes on, and model_final is saved.
TEST_F(PeriodicTest, OnSaveErrorWarnSkipsTheFailedSaveAndGoesOn) {
  TrainingState s(OptKind::kSGD, 1, 0, 1);
  Checkpointer ckpt(s.model, dir_, comm_, s.checkpointables());
  PeriodicCheckpointer periodic(ckpt, 5, 23, /*max_to_keep=*/2, "model", /*async=*/false,
                                OnSaveError::kWarn);
  std::ofstream(dir_ + "/model_0000009") << "not a checkpoint";
  for (int64_t it = 0; it < 23; ++it) periodic.step(it, {{"step", it}});
  EXPECT_EQ(periodic.failed_saves(), 1);
  EXPECT_EQ(visible_dirs(dir_), (Names{"model_0000014", "model_0000019", "model_final"}));
  EXPECT_TRUE(stdfs::is_regular_file(dir_ + "/model_0000009"));
  EXPECT_EQ(last_checkpoint_name(dir_), "model_final");
  EXPECT_EQ(IterationOf("model_0000014"), 14);
}

// Asynchronous periodic saves under kWarn: a failed one is skipped too, the next one is
// committed before model_final, and model_final still fails loudly.
TEST_F(PeriodicTest, OnSaveErrorWarnCoversAsyncSavesButNotTheFinalOne) {
  TrainingState s(OptKind::kSGD, 1, 0, 1);
  Checkpointer ckpt(s.model, dir_, comm_, s.checkpointables());
  PeriodicCheckpointer periodic(ckpt, 5, 12, 0, "model", /*async=*/true, OnSaveError::kWarn);
  std::ofstream(dir_ + "/model_0000004") << "not a checkpoint";
  std::ofstream(dir_ + "/model_final") << "not a checkpoint";
  for (int64_t it = 0; it < 11; ++it) periodic.step(it, {{"step", it}});
  EXPECT_EQ(periodic.failed_saves(), 1);
  EXPECT_THROW(periodic.step(11, {{"step", int64_t{11}}}), CheckpointError);
  EXPECT_EQ(visible_dirs(dir_), (Names{"model_0000009"}));
}

}  // namespace
}  // namespace dtrain::checkpoint
