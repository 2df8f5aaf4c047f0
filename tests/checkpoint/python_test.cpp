// Plain h5py (Debian's /usr/bin/python3) reads a dtrain checkpoint: every tensor whole
// through the virtual datasets of checkpoint.h5, from another working directory and
// after the checkpoint directory was moved, equal to what the model held.
// (The multi-shard case is covered by the checkpoint_reshard.N_to_N CTest drivers.)
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "runtime/base/fs.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint {
namespace {

using namespace testing;  // NOLINT: test helpers
namespace stdfs = std::filesystem;

// Runs `args` with checkpoint_tool (a world of one); fails the test unless it exits 0.
void Tool(const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> argv = {DTRAIN_CHECKPOINT_TOOL};
  argv.insert(argv.end(), args.begin(), args.end());
  const int st = run_process(argv, {}, log);
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << fs::read_file(log);
}

// The h5py script's exit status (77: h5py missing), run from `cwd`.
int ReadWithH5py(const std::string& cwd, const std::string& ckpt, const std::string& expected,
                 const std::string& log) {
  const std::string cmd = fmt::format("cd '{}' && '{}' '{}' '{}' '{}' 1 > '{}' 2>&1", cwd,
                                      DTRAIN_PYTHON, DTRAIN_H5PY_SCRIPT, ckpt, expected, log);
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

TEST(PythonInteropTest, H5pyReadsEveryTensorThroughTheVirtualDatasets) {
  const std::string root = make_temp_dir("h5py");
  stdfs::create_directories(root + "/elsewhere");
  ASSERT_NO_FATAL_FAILURE(Tool({"save", root + "/out", "model_final", "9"}, root + "/save.log"));
  ASSERT_NO_FATAL_FAILURE(Tool({"expected", "9", "1", root + "/expected"}, root + "/exp.log"));
  const std::string expected = root + "/expected/expected.json";

  int rc = ReadWithH5py(root + "/elsewhere", root + "/out/model_final", expected, root + "/py.log");
  if (rc == 77) GTEST_SKIP() << DTRAIN_PYTHON << " cannot import h5py/numpy";
  EXPECT_EQ(rc, 0) << fs::read_file(root + "/py.log");

  // The directory is self-contained: moved elsewhere it still reads (relative sources).
  stdfs::create_directories(root + "/moved");
  stdfs::rename(root + "/out/model_final", root + "/moved/model_final");
  rc = ReadWithH5py(root + "/elsewhere", root + "/moved/model_final", expected, root + "/py2.log");
  EXPECT_EQ(rc, 0) << fs::read_file(root + "/py2.log");
  if (!HasFailure()) stdfs::remove_all(root);
}

}  // namespace
}  // namespace dtrain::checkpoint
