// How Checkpointer::load fills the state, single process: pieces go straight into the
// model's parameters and buffers and into an optimizer's existing state (same storage
// before and after), a fresh optimizer takes over the loaded buffers, a model of another
// dtype gets a converted copy, OptimizerState::load_state_dict still copies what it is
// given, and a weights-only load reads only what it uses.
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "checkpoint/checkpointer.h"
#include "checkpoint/format.h"
#include "runtime/base/error.h"
#include "runtime/dist/local_communicator.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint {
namespace {

using namespace testing;  // NOLINT: test helpers
namespace stdfs = std::filesystem;

// name -> data pointer of every tensor in `state`.
std::map<std::string, const void*> DataPointers(const StateDict& state) {
  std::map<std::string, const void*> out;
  for (const auto& [k, v] : state) {
    if (auto t = std::get_if<at::Tensor>(&v)) out[k] = t->data_ptr();
  }
  return out;
}

class LoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = make_temp_dir("load");
    TrainingState s(OptKind::kAdamW, 1, 0, 1);
    s.train(3);
    Checkpointer(s.model, dir_, comm_, s.checkpointables()).save("model_a");
    ckpt_ = dir_ + "/model_a";
  }
  void TearDown() override {
    if (!HasFailure()) stdfs::remove_all(dir_);
  }
  // The state saved in SetUp, recomputed.
  static StateDict Saved() {
    TrainingState s(OptKind::kAdamW, 1, 0, 1);
    s.train(3);
    return s.snapshot();
  }
  std::string dir_, ckpt_;
  dist::LocalCommunicator comm_;
};

TEST_F(LoadTest, ReadsIntoTheLiveModelAndOptimizerState) {
  TrainingState b(OptKind::kAdamW, 2, 0, 1);
  b.train(1);  // the optimizer has state of the same shapes
  const auto model_ptrs = DataPointers(ModuleState(b.model).state_dict());
  const StateDict opt_before = b.optimizer_state->load_targets();
  ASSERT_FALSE(opt_before.empty());
  Checkpointer(b.model, dir_, comm_, b.checkpointables()).load(ckpt_);

  const auto diff = state_diff(Saved(), b.snapshot());
  EXPECT_TRUE(diff.empty()) << ::testing::PrintToString(diff);
  EXPECT_EQ(DataPointers(ModuleState(b.model).state_dict()), model_ptrs);
  const StateDict opt_after = b.optimizer_state->load_targets();
  ASSERT_EQ(opt_after.size(), opt_before.size());
  for (const auto& [k, v] : opt_before) {
    EXPECT_TRUE(std::get<at::Tensor>(v).is_same(std::get<at::Tensor>(opt_after.at(k)))) << k;
  }
}

TEST_F(LoadTest, FreshOptimizerTakesTheLoadedStateAndTrainsOnIdentically) {
  TrainingState a(OptKind::kAdamW, 1, 0, 1);
  a.train(3);
  TrainingState b(OptKind::kAdamW, 2, 0, 1);  // never stepped: no optimizer state yet
  ASSERT_TRUE(b.optimizer_state->load_targets().empty());
  Checkpointer(b.model, dir_, comm_, b.checkpointables()).load(ckpt_);
  auto diff = state_diff(a.snapshot(), b.snapshot());
  EXPECT_TRUE(diff.empty()) << ::testing::PrintToString(diff);
  for (const auto& [k, v] : b.optimizer_state->load_targets()) {
    const at::Tensor& t = std::get<at::Tensor>(v);
    EXPECT_TRUE(t.is_contiguous() && !t.requires_grad()) << k;
  }
  a.train(2);
  b.train(2);
  diff = state_diff(a.snapshot(), b.snapshot());
  EXPECT_TRUE(diff.empty()) << "after 2 more steps: " << ::testing::PrintToString(diff);
}

TEST_F(LoadTest, ModelOfAnotherDtypeGetsAConvertedCopy) {
  auto model = make_tiny_net(5);
  model->to(at::kDouble);
  Checkpointer(model, dir_, comm_).load(ckpt_);
  const StateDict want = Saved();
  int converted = 0;
  for (const auto& [k, v] : ModuleState(model).state_dict()) {
    const at::Tensor& got = std::get<at::Tensor>(v);
    const at::Tensor& saved = std::get<at::Tensor>(want.at("model/" + k));
    converted += got.scalar_type() != saved.scalar_type() ? 1 : 0;
    EXPECT_TRUE(at::equal(got, saved.to(got.scalar_type()))) << k;
  }
  EXPECT_GT(converted, 0);
}

TEST_F(LoadTest, LoadStateDictCopiesWhatItIsGiven) {
  // Only the loader hands its buffers over (adopt_state_dict); a state dict taken from
  // another optimizer is copied, never shared.
  TrainingState a(OptKind::kAdamW, 1, 0, 1);
  a.train(3);
  TrainingState b(OptKind::kAdamW, 2, 0, 1);
  const StateDict from_a = a.optimizer_state->state_dict();
  b.optimizer_state->load_state_dict(from_a);
  const StateDict in_b = b.optimizer_state->state_dict();
  int tensors = 0;
  for (const auto& [k, v] : from_a) {
    if (!std::holds_alternative<at::Tensor>(v)) continue;
    ++tensors;
    const at::Tensor& mine = std::get<at::Tensor>(in_b.at(k));
    EXPECT_TRUE(bitwise_equal(mine, std::get<at::Tensor>(v))) << k;
    EXPECT_NE(mine.data_ptr(), std::get<at::Tensor>(v).data_ptr()) << k << " is shared";
  }
  EXPECT_GT(tensors, 0);
}

TEST_F(LoadTest, WeightsOnlyLoadReadsOnlyTheModel) {
  // Damage optimizer state: a load of the model alone neither reads nor needs it, a full
  // load reports it.
  const std::string shard = ckpt_ + "/" + shard_file_name(0, 1);
  flip_byte(shard, dataset_offset(shard, "/optimizer/state/fc1.weight/exp_avg") + 1);
  TrainingState b(OptKind::kAdamW, 2, 0, 1);
  const StateDict before = b.snapshot();
  Checkpointer c(b.model, dir_, comm_, b.checkpointables());
  c.load(ckpt_, std::vector<std::string>{});
  const StateDict want = Saved(), now = b.snapshot();
  for (const auto& [k, v] : now) {
    const StateDict& expected = k.rfind("model/", 0) == 0 ? want : before;
    EXPECT_TRUE(state_diff({{k, expected.at(k)}}, {{k, v}}).empty()) << k;
  }
  std::string msg;
  try {
    c.load(ckpt_);
  } catch (const CheckpointError& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("checksum mismatch for tensor 'optimizer/state/fc1.weight/exp_avg'"),
            std::string::npos)
      << msg;
}

}  // namespace
}  // namespace dtrain::checkpoint
