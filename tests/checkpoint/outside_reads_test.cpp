// A checkpoint only ever reads the files of its own directory: shards and checkpoint.h5
// crafted with h5py (craft_outside_reads.py) to point at other files -- external raw
// storage, external, soft and virtual datasets, an external /dtrain/index, a shard that
// is a symbolic link -- are refused by verify and by Checkpointer::load, naming the file
// and the object. A virtual dataset of checkpoint.h5 remapped to another file (what h5py
// would read) is reported by verify; loads read the shards and get the saved values. A
// scalar's dataset with a null dataspace (shape [], no element) is refused too.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "checkpoint/checkpointer.h"
#include "checkpoint/inspect.h"
#include "runtime/base/error.h"
#include "runtime/dist/local_communicator.h"
#include "tests/checkpoint/expect.h"
#include "tests/checkpoint/test_support.h"
#include "tests/test_util.h"

namespace dtrain::checkpoint {
namespace {

using namespace testing;  // NOLINT: test helpers

TEST(OutsideReadsTest, CraftedLinksAndExternalStorageAreRefused) {
  const std::string dir = make_temp_dir("outside");
  dist::LocalCommunicator comm;
  TrainingState s(OptKind::kSGD, 1, 0, 1);
  s.train(1);
  Checkpointer(s.model, dir + "/out", comm, s.checkpointables()).save("model_a");
  const std::string cmd = fmt::format("'{}' '{}' '{}/out/model_a' '{}/crafted' > '{}/craft.log' 2>&1",
                                      DTRAIN_PYTHON, DTRAIN_CRAFT_SCRIPT, dir, dir, dir);
  const int st = std::system(cmd.c_str());
  if (WIFEXITED(st) && WEXITSTATUS(st) == 77) GTEST_SKIP() << "h5py is missing";
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << testutil::read_file(dir + "/craft.log");
  const std::pair<const char*, const char*> cases[] = {
      {"external_raw", "stores its data in the external file"},
      {"external_link", "is an external link; a checkpoint reads only data stored in its own files"},
      {"virtual", "is a virtual dataset"},
      {"soft_link", "'/model' is a soft link"},
      {"index_link", "'/dtrain/index' is an external link"},
      {"shard_symlink", "is a symbolic link, not a regular file of checkpoint"},
  };
  for (const auto& [attack, expected] : cases) {
    SCOPED_TRACE(attack);
    const std::string ckpt = dir + "/crafted/" + attack;
    EXPECT_CONTAINS(verify_text(ckpt), expected);
    TrainingState fresh(OptKind::kSGD, 2, 0, 1);
    Checkpointer ckpt_loader(fresh.model, dir + "/out2", comm, fresh.checkpointables());
    EXPECT_CONTAINS(ThrownMessage([&] { ckpt_loader.load(ckpt); }), expected);
  }
  {
    SCOPED_TRACE("vds_remap");
    const std::string ckpt = dir + "/crafted/vds_remap";
    const std::vector<std::string> problems = verify_checkpoint(ckpt);
    ASSERT_EQ(problems.size(), 1u) << fmt::format("{}", fmt::join(problems, "\n"));
    EXPECT_CONTAINS(problems[0], "/crafted/outside.h5:whole -> [0]+[");
    EXPECT_CONTAINS(problems[0], "but the index names shard-00000-of-00001.h5:/model/");
    TrainingState fresh(OptKind::kSGD, 2, 0, 1);
    Checkpointer(fresh.model, dir + "/out3", comm, fresh.checkpointables()).load(ckpt);
    const std::vector<std::string> diff = state_diff(s.snapshot(), fresh.snapshot());
    EXPECT_TRUE(diff.empty()) << fmt::format("{}", fmt::join(diff, "\n"));
  }
  {
    // CHECKPOINT.ALLOW_SYMLINKED_SHARDS: the same symlinked shard is read, with a warning
    // naming the link and its target, and gives the saved state.
    SCOPED_TRACE("shard_symlink allowed");
    TrainingState fresh(OptKind::kSGD, 2, 0, 1);
    CheckpointerOptions allow;
    allow.allow_symlinked_shards = true;
    LogCapture log;
    Checkpointer(fresh.model, dir + "/out4", comm, fresh.checkpointables(), allow)
        .load(dir + "/crafted/shard_symlink");
    EXPECT_CONTAINS(log.text(), "/crafted/shard_symlink/shard-00000-of-00001.h5' is a symbolic "
                                "link to '");
    EXPECT_CONTAINS(log.text(), "CHECKPOINT.ALLOW_SYMLINKED_SHARDS is on");
    const std::vector<std::string> diff = state_diff(s.snapshot(), fresh.snapshot());
    EXPECT_TRUE(diff.empty()) << fmt::format("{}", fmt::join(diff, "\n"));
  }
  if (!HasFailure()) std::filesystem::remove_all(dir);
}

// A 0-d dataset re-created by h5py with a null dataspace (h5py.Empty) has the shape []
// that the index records for a scalar, but no element to read.
TEST(OutsideReadsTest, AScalarWithANullDataspaceIsRefused) {
  const std::string dir = make_temp_dir("nullscalar");
  dist::LocalCommunicator comm;
  TrainingState s(OptKind::kSGD, 1, 0, 1);  // its BatchNorm's num_batches_tracked is 0-d
  s.train(1);
  Checkpointer(s.model, dir + "/out", comm, s.checkpointables()).save("model_a");
  const std::string cmd =
      fmt::format("'{}' '{}' '{}/out/model_a' '{}/crafted' null_scalar > '{}/craft.log' 2>&1", DTRAIN_PYTHON,
                  DTRAIN_CRAFT_SCRIPT, dir, dir, dir);
  const int st = std::system(cmd.c_str());
  if (WIFEXITED(st) && WEXITSTATUS(st) == 77) GTEST_SKIP() << "h5py is missing";
  const std::string log = testutil::read_file(dir + "/craft.log");
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << log;
  const size_t at = log.find("crafted null_scalar ");
  ASSERT_NE(at, std::string::npos) << log;
  const std::string name = log.substr(at + 20, log.find('\n', at) - at - 20);
  const std::string expected =
      fmt::format("tensor '{}' has a null dataspace (no element) in the shard but the index says shape []", name);
  const std::string ckpt = dir + "/crafted/null_scalar";
  EXPECT_CONTAINS(verify_text(ckpt), expected);
  TrainingState fresh(OptKind::kSGD, 2, 0, 1);
  Checkpointer loader(fresh.model, dir + "/out2", comm, fresh.checkpointables());
  EXPECT_CONTAINS(ThrownMessage([&] { loader.load(ckpt); }), expected);
  if (!HasFailure()) std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace dtrain::checkpoint
