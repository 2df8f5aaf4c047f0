// Network paths, part 1: a checkpoint (or .pt file) that only some ranks can see loads on
// every rank, bitwise equal; when no rank can see it, every rank gets the same error.
// Visibility is made to differ per rank with relative paths and per-rank working
// directories: rank 0's directory holds the files, the others' are empty.
#include <mpi.h>
#include <unistd.h>

#include <filesystem>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "checkpoint/checkpointer.h"
#include "checkpoint/torch_io.h"
#include "runtime/base/error.h"
#include "runtime/dist/mpi_communicator.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint {
namespace {

namespace stdfs = std::filesystem;
using testing::bitwise_equal;
using testing::make_tiny_net;

// Switches the working directory for the scope: rank 0 to `visible`, others to `hidden`.
class PerRankCwd {
 public:
  PerRankCwd(int rank, const std::string& visible, const std::string& hidden)
      : old_(stdfs::current_path()) {
    stdfs::current_path(rank == 0 ? visible : hidden);
  }
  ~PerRankCwd() { stdfs::current_path(old_); }

 private:
  stdfs::path old_;
};

// A directory name shared by all ranks (rank 0 creates it and broadcasts it).
std::string shared_temp_dir(dist::Communicator& comm, const std::string& tag) {
  std::string dir = comm.rank() == 0 ? testing::make_temp_dir(tag) : std::string();
  comm.broadcast_bytes(dir, 0);
  return dir;
}

TEST(VisibilityTest, CheckpointVisibleOnlyToRankZeroLoadsEverywhere) {
  dist::MpiCommunicator comm;
  const std::string base = shared_temp_dir(comm, "visibility");
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
