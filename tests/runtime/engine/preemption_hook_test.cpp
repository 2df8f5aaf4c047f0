// Tests of PreemptionWatcher + PreemptionHook in one process (world of one): a signal
// mid-run saves model_<iter> and throws Preempted; right after a periodic save it saves
// nothing more; during the last iteration the run finishes normally; a repeat of the
// signal within kRepeatWindowS is ignored.
#include "runtime/engine/preemption.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/linear.h>

#include "checkpoint/checkpointer.h"
#include "runtime/base/fs.h"
#include "runtime/dist/local_communicator.h"
#include "tests/test_util.h"

namespace dtrain::engine {
namespace {

namespace stdfs = std::filesystem;

// A loop whose step raises `sig` at iteration `signal_at` (and waits until the watcher
// thread has seen it) and saves a periodic checkpoint at `periodic_at`.
class SignallingTrainer : public TrainerBase {
 public:
  SignallingTrainer(PreemptionWatcher& watcher, checkpoint::Checkpointer& ckpt, int64_t signal_at,
                    int64_t periodic_at = -1)
      : watcher_(watcher), ckpt_(ckpt), signal_at_(signal_at), periodic_at_(periodic_at) {}
  void run_step() override {
    ++steps;
    if (iter_ == signal_at_) {
      ::kill(::getpid(), SIGUSR1);
      for (int i = 0; i < 5000 && !watcher_.requested(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    if (iter_ == periodic_at_) ckpt_.save(fmt::format("model_{:07d}", iter_), {{"iteration", iter_}});
  }
  int64_t steps = 0;

 private:
  PreemptionWatcher& watcher_;
  checkpoint::Checkpointer& ckpt_;
  int64_t signal_at_, periodic_at_;
};

class PreemptionHookTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = std::make_shared<torch::nn::LinearImpl>(3, 2);
    ckpt_ = std::make_unique<checkpoint::Checkpointer>(model_, dir_.string(), comm_);
  }

  // Runs [0, max_iter) with the hook; returns the Preempted message ("" if none).
  std::string run(int64_t max_iter, int64_t signal_at, int64_t periodic_at = -1) {
    PreemptionWatcher watcher({SIGTERM, SIGUSR1}, /*deadline_s=*/0);
    trainer_ = std::make_unique<SignallingTrainer>(watcher, *ckpt_, signal_at, periodic_at);
    trainer_->register_hooks({std::make_shared<PreemptionHook>(watcher, *ckpt_, comm_)});
    try {
      trainer_->train(0, max_iter);
    } catch (const Preempted& e) {
      return e.what();
    }
    return "";
  }

  std::vector<std::string> committed() const {
    std::vector<std::string> names;
    for (const auto& e : stdfs::directory_iterator(dir_)) {
      const std::string n = e.path().filename().string();
      if (e.is_directory() && n[0] != '.') names.push_back(n);
    }
    std::sort(names.begin(), names.end());
    return names;
  }
  std::string last_checkpoint() const { return fs::read_file((dir_ / "last_checkpoint").string()); }

  testutil::TempDir tmp_{"dtrain_ops_preempt_"};
  const stdfs::path dir_{tmp_.path()};
  dist::LocalCommunicator comm_;
  std::shared_ptr<torch::nn::LinearImpl> model_;
  std::unique_ptr<checkpoint::Checkpointer> ckpt_;
  std::unique_ptr<SignallingTrainer> trainer_;
};

TEST_F(PreemptionHookTest, SignalMidRunSavesThatIterationAndThrows) {
  EXPECT_EQ(run(/*max_iter=*/10, /*signal_at=*/4),
            "preempted after iteration 4 (checkpoint model_0000004)");
  EXPECT_EQ(trainer_->steps, 5);
  EXPECT_EQ(committed(), std::vector<std::string>{"model_0000004"});
  EXPECT_EQ(last_checkpoint(), "model_0000004");
  const StateDict extra = ckpt_->load((dir_ / "model_0000004").string());
  EXPECT_EQ(std::get<int64_t>(extra.at("iteration")), 4);
}

TEST_F(PreemptionHookTest, RightAfterAPeriodicSaveNothingMoreIsSaved) {
  EXPECT_EQ(run(10, /*signal_at=*/6, /*periodic_at=*/6),
            "preempted after iteration 6 (checkpoint model_0000006)");
  EXPECT_EQ(committed(), std::vector<std::string>{"model_0000006"});
  EXPECT_EQ(last_checkpoint(), "model_0000006");
}

TEST_F(PreemptionHookTest, SignalDuringTheLastIterationFinishesNormally) {
  EXPECT_EQ(run(/*max_iter=*/5, /*signal_at=*/4), "");
  EXPECT_EQ(trainer_->steps, 5);
  EXPECT_TRUE(committed().empty());
}

TEST_F(PreemptionHookTest, NoSignalNoSave) {
  EXPECT_EQ(run(5, /*signal_at=*/-1), "");
  EXPECT_TRUE(committed().empty());
}

TEST(PreemptionWatcher, QuickRepeatIsIgnoredAndTheWatcherRestoresDefaults) {
  {
    PreemptionWatcher watcher({SIGUSR1}, /*deadline_s=*/0);
    EXPECT_FALSE(watcher.requested());
    ::kill(::getpid(), SIGUSR1);
    for (int i = 0; i < 5000 && !watcher.requested(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_TRUE(watcher.requested());
    EXPECT_EQ(watcher.signal(), SIGUSR1);
    // Within the repeat window: one event delivered twice, so the process lives on.
    ::kill(::getpid(), SIGUSR1);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(watcher.signal(), SIGUSR1);
  }
  struct sigaction sa {};
  ASSERT_EQ(::sigaction(SIGUSR1, nullptr, &sa), 0);
  EXPECT_EQ(sa.sa_handler, SIG_DFL);
}

TEST(PreemptionWatcher, SecondSignalAfterTheWindowExitsWith75) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        PreemptionWatcher watcher({SIGUSR1}, /*deadline_s=*/0);
        ::kill(::getpid(), SIGUSR1);
        std::this_thread::sleep_for(
            std::chrono::duration<double>(kRepeatWindowS + 0.2));
        ::kill(::getpid(), SIGUSR1);
        std::this_thread::sleep_for(std::chrono::seconds(30));
      },
      ::testing::ExitedWithCode(kExitPreempted), "second signal 10 received");
}

TEST(PreemptionWatcher, DeadlineExitsWith75) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        PreemptionWatcher watcher({SIGUSR1}, /*deadline_s=*/0.05);
        ::kill(::getpid(), SIGUSR1);
        std::this_thread::sleep_for(std::chrono::seconds(30));
      },
      ::testing::ExitedWithCode(kExitPreempted), "preemption deadline of 0.05 s passed");
}

}  // namespace
}  // namespace dtrain::engine
