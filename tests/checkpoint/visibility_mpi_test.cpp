// Network paths: a checkpoint (or .pt file) that only some ranks can see loads on every
// rank, bitwise equal; when no rank can see it, every rank gets the same error. A save
// into an OUTPUT_DIR that only some ranks see (node-local disks) is detected, warned
// about, and written by the ranks that see it, then loads bitwise equal everywhere.
// Visibility is made to differ per rank with relative paths and per-rank working
// directories: rank 0's directory holds the files, the others' are empty.
#include <unistd.h>

#include <filesystem>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "checkpoint/checkpointer.h"
#include "checkpoint/inspect.h"
#include "checkpoint/torch_io.h"
#include "runtime/base/error.h"
#include "runtime/dist/mpi_communicator.h"
#include "runtime/dist/communicator.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint {
namespace {

namespace stdfs = std::filesystem;
using testing::bitwise_equal;
using testing::make_tiny_net;

// Switches the working directory for the scope: to `visible` for rank 0 (or where
// `sees` is true), otherwise to `hidden`.
class PerRankCwd {
 public:
  PerRankCwd(int rank, const std::string& visible, const std::string& hidden)
      : PerRankCwd(rank == 0, visible, hidden) {}
  PerRankCwd(bool sees, const std::string& visible, const std::string& hidden)
      : old_(stdfs::current_path()) {
    stdfs::current_path(sees ? visible : hidden);
  }
  ~PerRankCwd() { stdfs::current_path(old_); }

 private:
  stdfs::path old_;
};

TEST(VisibilityTest, CheckpointVisibleOnlyToRankZeroLoadsEverywhere) {
  dist::MpiCommunicator comm;
  const std::string base = testing::make_shared_temp_dir(comm, "visibility");
  const std::string visible = base + "/rank0", hidden = base + "/rank" + std::to_string(comm.rank());
  if (comm.rank() == 0) stdfs::create_directories(visible);
  if (comm.rank() != 0) stdfs::create_directories(hidden);
  comm.barrier();

  auto saved = make_tiny_net(/*seed=*/7);
  {
    Checkpointer writer(saved, visible + "/out", comm);  // absolute: every rank writes
    writer.save("model_0000009", {{"iteration", int64_t{9}}});
  }
  auto loaded = make_tiny_net(/*seed=*/99);
  StateDict extra;
  {
    PerRankCwd cwd(comm.rank(), visible, hidden);
    ASSERT_EQ(stdfs::exists("out/model_0000009/checkpoint.h5"), comm.rank() == 0);
    Checkpointer reader(loaded, "out", comm);
    extra = reader.load("out/model_0000009");
  }
  EXPECT_EQ(std::get<int64_t>(extra.at("iteration")), 9);
  auto a = saved->named_parameters(), b = loaded->named_parameters();
  for (const auto& item : a) EXPECT_TRUE(bitwise_equal(item.value(), b[item.key()])) << item.key();
  auto ab = saved->named_buffers(), bb = loaded->named_buffers();
  for (const auto& item : ab) EXPECT_TRUE(bitwise_equal(item.value(), bb[item.key()])) << item.key();

  // A .pt file seen by rank 0 only.
  if (comm.rank() == 0) {
    StateDict sd;
    for (const auto& item : a) sd[item.key()] = item.value();
    for (const auto& item : ab) sd[item.key()] = item.value();
    write_torch_state_dict(visible + "/w.pt", sd);
  }
  comm.barrier();
  auto from_pt = make_tiny_net(/*seed=*/123);
  {
    PerRankCwd cwd(comm.rank(), visible, hidden);
    Checkpointer reader(from_pt, "out", comm);
    reader.load("w.pt");
  }
  auto c = from_pt->named_parameters();
  for (const auto& item : a) EXPECT_TRUE(bitwise_equal(item.value(), c[item.key()])) << item.key();
}

// OUTPUT_DIR seen by rank 0 only, or (on 4 ranks) by ranks 0 and 2 (two "nodes" with a
// local disk each... sharing one directory, as far as the test can make it).
TEST(VisibilityTest, SaveToADirectorySomeRanksCannotSee) {
  auto comm_ptr = dist::make_communicator("mpi", "cpu");
  dist::Communicator& comm = *comm_ptr;
  const int rank = comm.rank(), world = comm.size();
  const bool sees = rank == 0 || (world >= 4 && rank == 2);
  const std::string base = testing::make_shared_temp_dir(comm, "visibility-save");
  const std::string visible = base + "/node0", hidden = base + "/rank" + std::to_string(rank);
  stdfs::create_directories(sees ? visible : hidden);
  comm.barrier();

  using testing::OptKind;
  testing::TrainingState saved(OptKind::kAdamW, 5, rank, world);
  saved.train(2);
  const at::Tensor rng = testing::set_rank_rng(5, rank);
  {
    PerRankCwd cwd(sees, visible, hidden);
    testing::LogCapture log;
    Checkpointer writer(saved.model, "out", comm, saved.checkpointables());
    writer.save("model_0000001", {{"iteration", int64_t{1}}});
    // An asynchronous save is written at once (and says so in the warning).
    writer.save_async("model_async", {{"iteration", int64_t{1}}});
    EXPECT_FALSE(writer.async_in_flight());
    if (rank == 0) {
      const std::string blind = world == 2 ? "rank 1" : world == 4 ? "ranks 1, 3" : "";
      if (!blind.empty()) {
        const std::string text = log.text();
        EXPECT_NE(text.find("OUTPUT_DIR 'out' is not visible from " + blind), std::string::npos)
            << text;
        EXPECT_NE(text.find("asynchronous saves run synchronously"), std::string::npos) << text;
      }
      for (const char* name : {"model_0000001", "model_async"}) {
        for (int r = 0; r < world; ++r) {
          EXPECT_TRUE(stdfs::exists(std::string("out/") + name + "/" + shard_file_name(r, world)))
              << name << " shard " << r;
        }
        EXPECT_TRUE(verify_checkpoint(std::string("out/") + name).empty()) << name;
      }
      EXPECT_EQ(testing::last_checkpoint_name("out"), "model_async");
    } else if (!sees) {
      EXPECT_FALSE(stdfs::exists("out"));
    }
  }
  // Every rank loads it back (the ranks that cannot see it receive it): the same state,
  // and each rank's own RNG state, which was written by another rank.
  for (const char* name : {"model_0000001", "model_async"}) {
    SCOPED_TRACE(name);
    testing::TrainingState loaded(OptKind::kAdamW, 77, rank, world);
    testing::set_rank_rng(99, rank);
    {
      PerRankCwd cwd(sees, visible, hidden);
      Checkpointer reader(loaded.model, "out", comm, loaded.checkpointables());
      reader.load(std::string("out/") + name);
    }
    const auto diff = testing::state_diff(saved.snapshot(), loaded.snapshot());
    EXPECT_TRUE(diff.empty()) << ::testing::PrintToString(diff);
    EXPECT_TRUE(bitwise_equal(testing::current_rng_state(), rng)) << "rng of rank " << rank;
  }
}

TEST(VisibilityTest, NoRankCanReadGivesTheSameErrorEverywhere) {
  dist::MpiCommunicator comm;
  auto net = make_tiny_net(/*seed=*/1);
  Checkpointer reader(net, "/nonexistent-dtrain-dir", comm);
  std::string message;
  try {
    reader.load("/nonexistent-dtrain-dir/model_final");
  } catch (const dtrain::CheckpointError& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("no rank can read"), std::string::npos) << message;
  auto all = comm.all_gather_bytes(message);
  for (const auto& m : all) EXPECT_EQ(m, message);
}

}  // namespace
}  // namespace dtrain::checkpoint
