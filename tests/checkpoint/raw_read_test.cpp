// Pieces read at the byte offsets the writer recorded (PieceRecord::offset,
// ShardReader::read_piece_raw) count only when HDF5 agrees: the index records where HDF5
// put each piece, a load is exact, and an index whose offsets are stale (a shard
// rewritten by another HDF5 tool) or forged (another tensor's bytes, past the end of the
// file) still loads exactly what HDF5 stores, through HDF5.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "checkpoint/checkpointer.h"
#include "checkpoint/format.h"
#include "checkpoint/shard_reader.h"
#include "runtime/dist/local_communicator.h"
#include "tests/checkpoint/expect.h"
#include "tests/checkpoint/test_support.h"
#include "tests/test_util.h"

namespace dtrain::checkpoint {
namespace {

using namespace testing;  // NOLINT: test helpers
namespace stdfs = std::filesystem;

constexpr const char* kStale = "are not where its index records them";

class RawReadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = make_temp_dir("raw_read");
    TrainingState s(OptKind::kAdamW, 1, 0, 1, /*hidden=*/64);
    s.train(2);
    saved_ = s.snapshot();
    Checkpointer(s.model, dir_ + "/out", comm_, s.checkpointables()).save("model_a");
    ckpt_ = dir_ + "/out/model_a";
    shard_ = ckpt_ + "/shard-00000-of-00001.h5";
  }
  void TearDown() override {
    if (!HasFailure()) stdfs::remove_all(dir_);
  }
  CheckpointIndex Index() const { return CheckpointIndex::from_json(read_index_text(ckpt_), ckpt_); }
  // Rewrites checkpoint.h5 with `index` (the shards stay as they are).
  void WriteIndex(const CheckpointIndex& index) {
    stdfs::remove(ckpt_ + "/checkpoint.h5");
    write_index_file(ckpt_, index, "");
  }
  // Loads the checkpoint into a differently seeded state; returns the log.
  std::string LoadAndCompare() {
    TrainingState fresh(OptKind::kAdamW, 9, 0, 1, /*hidden=*/64);
    LogCapture log;
    Checkpointer(fresh.model, dir_ + "/out2", comm_, fresh.checkpointables()).load(ckpt_);
    EXPECT_TRUE(state_diff(saved_, fresh.snapshot()).empty())
        << fmt::format("{}", fmt::join(state_diff(saved_, fresh.snapshot()), "\n"));
    return log.text();
  }
  std::string dir_, ckpt_, shard_;
  StateDict saved_;
  dist::LocalCommunicator comm_;
};

TEST_F(RawReadTest, TheIndexRecordsWhereHdf5StoredEachPiece) {
  int checked = 0;
  for (const TensorRecord& t : Index().tensors) {
    for (const PieceRecord& p : t.pieces) {
      if (p.bytes == 0) continue;
      SCOPED_TRACE(t.name);
      EXPECT_EQ(p.offset, dataset_offset(shard_, "/" + t.name));
      ++checked;
    }
  }
  EXPECT_GT(checked, 5);
}

TEST_F(RawReadTest, ALoadReadsAtTheRecordedOffsetsExactly) {
  const CheckpointIndex index = Index();
  ShardReader reader(ckpt_, 1);
  int raw = 0;
  for (const TensorRecord& t : index.tensors) {
    for (const PieceRecord& p : t.pieces) {
      at::Tensor via_raw = empty_tensor_for(t, p.shape, ckpt_);
      at::Tensor via_hdf5 = empty_tensor_for(t, p.shape, ckpt_);
      if (!reader.read_piece_raw(t, p, via_raw)) continue;
      ++raw;
      reader.check_raw_layout(t, p, via_raw.scalar_type());
      verify_piece(reader.path_of(p), t, p, via_raw);
      reader.read_piece(t, p, via_hdf5);
      EXPECT_TRUE(bitwise_equal(via_raw, via_hdf5)) << t.name;
    }
  }
  EXPECT_GT(raw, 5);
  EXPECT_EQ(LoadAndCompare().find(kStale), std::string::npos);
}

TEST_F(RawReadTest, AShardRewrittenByAnotherHdf5ToolLoadsThroughHdf5) {
  const int64_t before = dataset_offset(shard_, "/model/fc1.weight");
  const std::string cmd = fmt::format("'{}' '{}' '{}' > '{}/move.log' 2>&1", DTRAIN_PYTHON,
                                      DTRAIN_MOVE_SCRIPT, shard_, dir_);
  const int st = std::system(cmd.c_str());
  if (WIFEXITED(st) && WEXITSTATUS(st) == 77) GTEST_SKIP() << "h5py is missing";
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << testutil::read_file(dir_ + "/move.log");
  ASSERT_NE(dataset_offset(shard_, "/model/fc1.weight"), before);
  EXPECT_CONTAINS(LoadAndCompare(), kStale);
  EXPECT_EQ(verify_text(ckpt_), "");
}

TEST_F(RawReadTest, AnOffsetOfAnotherTensorsBytesIsCaught) {
  CheckpointIndex index = Index();
  PieceRecord* a = nullptr;
  const PieceRecord* b = nullptr;
  for (TensorRecord& t : index.tensors) {
    for (PieceRecord& p : t.pieces) {
      if (p.bytes == 0) continue;
      if (!a) {
        a = &p;
      } else if (!b && p.bytes <= a->bytes && p.offset != a->offset) {
        b = &p;
      }
    }
  }
  ASSERT_TRUE(a && b);
  // `a`'s recorded bytes start where `b`'s do: the data there is not `a`'s.
  a->offset = b->offset;
  WriteIndex(index);
  const std::string log = LoadAndCompare();
  EXPECT_CONTAINS(log, kStale);
  EXPECT_CONTAINS(log, "is not stored as the index records it");
}

TEST_F(RawReadTest, AnOffsetPastTheEndOfTheFileIsReadThroughHdf5) {
  CheckpointIndex index = Index();
  const int64_t size = static_cast<int64_t>(stdfs::file_size(shard_));
  for (TensorRecord& t : index.tensors) {
    for (PieceRecord& p : t.pieces) p.offset = size - p.bytes / 2;
  }
  WriteIndex(index);
  EXPECT_EQ(LoadAndCompare().find(kStale), std::string::npos);  // never read raw
}

TEST_F(RawReadTest, DamagedBytesAreStillReportedByHdf5) {
  flip_byte(shard_, dataset_offset(shard_, "/model/fc1.weight") + 5);
  TrainingState fresh(OptKind::kAdamW, 9, 0, 1, /*hidden=*/64);
  Checkpointer loader(fresh.model, dir_ + "/out2", comm_, fresh.checkpointables());
  const std::string error = ThrownMessage([&] { loader.load(ckpt_); });
  EXPECT_CONTAINS(error, "checksum mismatch for tensor 'model/fc1.weight'");
  EXPECT_CONTAINS(error, shard_);
}

}  // namespace
}  // namespace dtrain::checkpoint
