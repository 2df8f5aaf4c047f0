// The load's read order and its locator, on checkpoints Checkpointer wrote (1 and 2
// ranks): follow_layout_order predicts each shard's file order without opening a dataset
// (so the reads of a dtrain shard go front to back while PieceLocator opens the datasets
// on its own thread), the locator finds what ShardReader::locate finds, reports what it
// cannot locate as no location (read_piece then says why), and stops when dropped early;
// a load reads a piece it could not locate at the end of its run.
#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "checkpoint/checkpointer.h"
#include "checkpoint/format.h"
#include "checkpoint/load_plan.h"
#include "checkpoint/messages.h"
#include "checkpoint/piece_locator.h"
#include "runtime/base/error.h"
#include "runtime/dist/local_communicator.h"
#include "runtime/dist/thread_communicator.h"
#include "tests/checkpoint/test_support.h"
#include "tests/gtest_util.h"

namespace dtrain::checkpoint {
namespace {

using namespace testing;  // NOLINT: test helpers
namespace stdfs = std::filesystem;

class PieceLocatorTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    dir_ = make_temp_dir("piece-locator");
    // fc1.weight (100 x 200) and fc2.weight (200 x 100), 80 kB each, are above the
    // alignment threshold (64 KiB) on one rank; the biases and BatchNorm's buffers below.
    const int world = GetParam();
    const auto errors = dist::run_ranks(world, [&](dist::Communicator& comm) {
      Checkpointer(make_tiny_net(7, 200, 100, 200), dir_, comm).save("model_a");
    });
    for (const auto& e : errors) {
      if (e) std::rethrow_exception(e);
    }
    ckpt_ = dir_ + "/model_a";
    index_ = CheckpointIndex::from_json(read_index_text(ckpt_), ckpt_);
  }
  void TearDown() override {
    if (!HasFailure()) stdfs::remove_all(dir_);
  }
  // Every replicated piece, shard by shard (one run each), each shard's in index order.
  std::vector<PieceRead> ReadsByShard() const {
    std::vector<PieceRead> reads;
    for (int s = 0; s < index_.world_size; ++s) {
      for (size_t ti = 0; ti < index_.tensors.size(); ++ti) {
        const TensorRecord& t = index_.tensors[ti];
        for (size_t pi = 0; !t.per_rank && pi < t.pieces.size(); ++pi) {
          if (t.pieces[pi].shard == s) reads.push_back({ti, pi, 0, true});
        }
      }
    }
    return reads;
  }
  at::ScalarType Dtype(const TensorRecord& t) const { return dtype_from_name(t.dtype, ckpt_); }
  // The CheckpointError of one rank loading the checkpoint into a fresh model (a
  // failure is recorded when it loads).
  std::string LoadError() const {
    dist::LocalCommunicator comm;
    return dtrain::testing::ThrownMessage<CheckpointError>(
        [&] { Checkpointer(make_tiny_net(8, 200, 100, 200), dir_, comm).load(ckpt_); });
  }

  std::string dir_, ckpt_;
  CheckpointIndex index_;
};

TEST_P(PieceLocatorTest, LayoutOrderIsEachShardsFileOrder) {
  std::vector<PieceRead> reads = ReadsByShard();
  follow_layout_order(index_, reads);
  ShardReader reader(ckpt_, index_.world_size);
  int64_t large = 0;
  for (size_t i = 0; i < reads.size(); ++i) {
    const TensorRecord& t = index_.tensors[reads[i].tensor];
    const PieceRecord& p = t.pieces[reads[i].piece];
    large += p.bytes >= 64 << 10 ? 1 : 0;
    if (i == 0 || p.shard != index_.tensors[reads[i - 1].tensor].pieces[reads[i - 1].piece].shard) continue;
    const TensorRecord& prev = index_.tensors[reads[i - 1].tensor];
    EXPECT_LT(reader.locate(prev, prev.pieces[reads[i - 1].piece], Dtype(prev)), reader.locate(t, p, Dtype(t)))
        << prev.name << " then " << t.name << " in shard " << p.shard;
  }
  EXPECT_GE(large, 2) << "the test needs pieces on both sides of the threshold";
  EXPECT_GT(static_cast<int64_t>(reads.size()), large);
}

TEST_P(PieceLocatorTest, FindsWhatLocateFindsAndReadsItBack) {
  std::vector<PieceRead> reads = ReadsByShard();
  follow_layout_order(index_, reads);
  ShardReader reader(ckpt_, index_.world_size);
  std::vector<ShardReader::Location> found;
  {
    PieceLocator locator(reader, index_, reads, [&](const TensorRecord& t) { return Dtype(t); });
    for (size_t i = 0; i < reads.size(); ++i) {
      found.push_back(locator.wait(i));
      // Read while the locator may still be locating the next ones.
      const TensorRecord& t = index_.tensors[reads[i].tensor];
      const PieceRecord& p = t.pieces[reads[i].piece];
      ASSERT_GE(found.back().offset, 0) << t.name;
      at::Tensor dst = at::empty(p.shape, at::TensorOptions().dtype(Dtype(t)));
      reader.read_located(t, p, found.back(), dst);
      EXPECT_NO_THROW(verify_piece(reader.path_of(p), t, p, dst)) << t.name;
    }
    locator.finish();
  }
  ShardReader fresh(ckpt_, index_.world_size);
  for (size_t i = 0; i < reads.size(); ++i) {
    const TensorRecord& t = index_.tensors[reads[i].tensor];
    EXPECT_EQ(found[i].offset, fresh.locate(t, t.pieces[reads[i].piece], Dtype(t))) << t.name;
  }
}

TEST_P(PieceLocatorTest, APieceItCannotLocateHasNoLocationAndReadPieceSaysWhy) {
  std::vector<PieceRead> reads = ReadsByShard();
  const std::string victim = index_.tensors[reads.back().tensor].name;
  const int shard = index_.tensors[reads.back().tensor].pieces[reads.back().piece].shard;
  const std::string shard_path = ckpt_ + "/" + shard_file_name(shard, index_.world_size);
  remove_dataset(shard_path, "/" + victim);
  ShardReader reader(ckpt_, index_.world_size);
  PieceLocator locator(reader, index_, reads, [&](const TensorRecord& t) { return Dtype(t); });
  for (size_t i = 0; i + 1 < reads.size(); ++i) EXPECT_GE(locator.wait(i).offset, 0);
  EXPECT_EQ(locator.wait(reads.size() - 1).offset, -1);
  locator.finish();
  const TensorRecord& t = index_.tensors[reads.back().tensor];
  at::Tensor dst = at::empty(t.pieces[reads.back().piece].shape, at::TensorOptions().dtype(Dtype(t)));
  const std::string what = dtrain::testing::ThrownMessage<CheckpointError>(
      [&] { reader.read_piece(t, t.pieces[reads.back().piece], dst); });
  EXPECT_NE(what.find(shard_path), std::string::npos) << what;
  EXPECT_NE(what.find(victim), std::string::npos) << what;
}

TEST_P(PieceLocatorTest, DroppedBeforeItEndsItStops) {
  std::vector<PieceRead> many;
  for (int k = 0; k < 200; ++k) {
    for (const auto& r : ReadsByShard()) many.push_back(r);
  }
  ShardReader reader(ckpt_, index_.world_size);
  std::atomic<int> located{0};
  {
    // 2 ms per piece: all of them would take over 2 s.
    PieceLocator locator(reader, index_, many, [&](const TensorRecord& t) {
      ++located;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      return Dtype(t);
    });
    EXPECT_GE(locator.wait(0).offset, 0);
  }  // joins after the piece being located, not after all of them
  EXPECT_LT(located.load(), 20) << "of " << many.size();
  // The reader is the caller's again.
  const TensorRecord& t = index_.tensors[many[0].tensor];
  EXPECT_GE(reader.locate(t, t.pieces[many[0].piece], Dtype(t)), 0);
}

// A load where one small piece cannot be located (its dataset is gone) and a large piece
// of the same shard is damaged: the unlocated piece is read at the end of its run, so the
// checksum mismatch of the large one, read before it, is the error reported, as when
// every piece was located before the first read.
TEST_P(PieceLocatorTest, ALoadReportsTheDamageReadBeforeAPieceItCouldNotLocate) {
  const TensorRecord* large = nullptr;
  const TensorRecord* small = nullptr;
  for (const auto& t : index_.tensors) {
    if (t.per_rank || t.pieces.size() != 1) continue;
    if (t.pieces[0].bytes >= 64 << 10 && large == nullptr) large = &t;
  }
  ASSERT_NE(large, nullptr);
  for (const auto& t : index_.tensors) {
    if (!t.per_rank && t.pieces.size() == 1 && t.pieces[0].bytes < 64 << 10 && t.pieces[0].bytes > 0 &&
        t.pieces[0].shard == large->pieces[0].shard) {
      small = &t;
      break;
    }
  }
  ASSERT_NE(small, nullptr);
  const std::string shard_path = ckpt_ + "/" + shard_file_name(large->pieces[0].shard, index_.world_size);
  flip_byte(shard_path, dataset_offset(shard_path, "/" + large->name) + 5);
  remove_dataset(shard_path, "/" + small->name);
  const std::string what = LoadError();
  EXPECT_NE(what.find("checksum mismatch for tensor '" + large->name + "'"), std::string::npos) << what;
  EXPECT_NE(what.find(shard_path), std::string::npos) << what;
}

// One rank loading a 2-rank checkpoint reads one run per shard. A piece of the first run
// that cannot be located fails at that run's end, before the next shard is read: its
// error is reported, not the damage of a piece in the later run.
TEST_P(PieceLocatorTest, APieceItCouldNotLocateFailsAtTheEndOfItsRun) {
  if (GetParam() != 2) GTEST_SKIP() << "needs two shards";
  LoadPlan plan = plan_load(index_, find_readers({Visibility{true, ""}}, 0, ckpt_), 0,
                            [](const std::string&) { return true; });
  follow_layout_order(index_, plan.reads);
  ASSERT_FALSE(plan.reads.empty());
  const int first = index_.tensors[plan.reads[0].tensor].pieces[plan.reads[0].piece].shard;
  const TensorRecord* gone = nullptr;  // in the first run
  const TensorRecord* damaged = nullptr;  // in the other shard
  for (const auto& r : plan.reads) {
    const TensorRecord& t = index_.tensors[r.tensor];
    const PieceRecord& p = t.pieces[r.piece];
    if (t.pieces.size() != 1 || p.bytes == 0) continue;
    if (p.shard == first && gone == nullptr) gone = &t;
    if (p.shard != first && damaged == nullptr) damaged = &t;
  }
  ASSERT_TRUE(gone != nullptr && damaged != nullptr);
  const std::string first_path = ckpt_ + "/" + shard_file_name(first, index_.world_size);
  const std::string other_path = ckpt_ + "/" + shard_file_name(damaged->pieces[0].shard, index_.world_size);
  flip_byte(other_path, dataset_offset(other_path, "/" + damaged->name));
  remove_dataset(first_path, "/" + gone->name);
  const std::string what = LoadError();
  EXPECT_NE(what.find(first_path), std::string::npos) << what;
  EXPECT_NE(what.find(gone->name), std::string::npos) << what;
  EXPECT_EQ(what.find("checksum mismatch"), std::string::npos) << what;
}

INSTANTIATE_TEST_SUITE_P(Ranks, PieceLocatorTest, ::testing::Values(1, 2),
                         [](const auto& info) { return std::to_string(info.param) + "rank"; });

}  // namespace
}  // namespace dtrain::checkpoint
