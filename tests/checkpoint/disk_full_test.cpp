// A full disk: HDF5's failure message starts with the operating system's error and the
// file ("No space left on device (writing '...')"), not after ~900 characters of HDF5
// stack. Checked on /dev/full (every write fails with ENOSPC) and, where this process may
// mount a small tmpfs (root), on a real save that runs out of space: the message leads
// with the cause, and the previous checkpoint stays the one last_checkpoint names.
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "checkpoint/checkpointer.h"
#include "runtime/dist/local_communicator.h"
#include "runtime/h5/h5.h"
#include "tests/checkpoint/expect.h"
#include "tests/checkpoint/test_support.h"

// These tests make H5Fclose fail (flushing onto a full disk). HDF5 1.10 then keeps a file
// id whose object it freed, and its exit handler reports "infinite loop closing library"
// and leaks that object (HDFGroup/hdf5#2257, fixed in 1.14; dtrain train ends such a
// process without HDF5's shutdown, engine::Runtime::end). LeakSanitizer is told to ignore
// leaks from inside libhdf5 in this test binary only.
extern "C" const char* __lsan_default_suppressions() { return "leak:libhdf5"; }

namespace dtrain::checkpoint {
namespace {

using namespace testing;  // NOLINT: test helpers

TEST(DiskFullTest, OsErrorAndFileLeadTheMessage) {
  if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  const std::string msg = ThrownMessage<h5::H5Error>([] { h5::File::create("/dev/full"); });
  EXPECT_EQ(msg.rfind("No space left on device (writing '/dev/full'): ", 0), 0u) << msg;
  EXPECT_CONTAINS(msg, ": HDF5: ");  // the detail is still there, after
}

TEST(DiskFullTest, LongStacksAreCappedOnlyBehindAnOsError) {
  const std::string driver =
      "H5FD_sec2_write(): file write failed: time = Fri Dec  4 07:18:36 2026, filename = "
      "'/x/shard.h5', file descriptor = 3, errno = 122, error message = 'Disk quota exceeded', "
      "buf = 0x1, total write size = 96, bytes this sub-write = 96, bytes actually written = "
      "18446744073709551615, offset = 0";
  std::vector<std::string> stack(20, std::string(60, 'h'));
  stack.push_back(driver);
  const std::string msg = h5::error_message("closing file '/x/shard.h5'", stack);
  EXPECT_EQ(msg.rfind("Disk quota exceeded (writing '/x/shard.h5'): closing file "
                      "'/x/shard.h5': HDF5: hhh",
                      0),
            0u)
      << msg;
  EXPECT_LT(msg.size(), 800u) << msg;
  EXPECT_CONTAINS(msg, "characters in all)");
  // Without an OS error, nothing moves and nothing is cut.
  stack.pop_back();
  const std::string plain = h5::error_message("reading x", stack);
  EXPECT_EQ(plain.rfind("reading x: HDF5: hhh", 0), 0u);
  EXPECT_GT(plain.size(), 1200u);
}

// A tmpfs of `kib` KiB mounted at the empty directory `dir` for its lifetime; then
// unmounted and `dir` removed.
class SmallDisk {
 public:
  SmallDisk(const std::string& dir, int kib) : dir_(dir) {
    const std::string opts = "size=" + std::to_string(kib) + "k";
    mounted_ = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, opts.c_str()) == 0;
    if (!mounted_) error_ = std::strerror(errno);
  }
  ~SmallDisk() {
    if (mounted_ && ::umount2(dir_.c_str(), MNT_DETACH) == 0) ::rmdir(dir_.c_str());
  }
  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }

 private:
  std::string dir_;
  bool mounted_ = false;
  std::string error_;
};

// Writes zeros into `path` until the file system is full.
void fill(const std::string& path) {
  std::ofstream f(path, std::ios::binary);
  const std::string block(4096, '\0');
  while (f.write(block.data(), block.size()) && f.flush()) {
  }
}

TEST(DiskFullTest, SaveOnAFullDiskSaysSoFirstAndKeepsThePreviousCheckpoint) {
  const std::string dir = make_temp_dir("disk-full");
  SmallDisk disk(dir, 4096);
  if (!disk.mounted()) {
    std::filesystem::remove_all(dir);
    GTEST_SKIP() << "cannot mount a tmpfs here: " << disk.error();
  }
  dist::LocalCommunicator comm;
  TrainingState s(OptKind::kSGD, 1, 0, 1);
  s.train(1);
  Checkpointer c(s.model, dir + "/out", comm, s.checkpointables());
  c.save("model_a");
  fill(dir + "/filler");
  s.train(1);
  const std::string msg = ThrownMessage([&] { c.save("model_b"); });
  const size_t at = msg.find("No space left on device");
  ASSERT_NE(at, std::string::npos) << msg;
  EXPECT_LT(at, 200u) << msg;
  EXPECT_LT(at, msg.find("HDF5")) << msg;
  EXPECT_LT(msg.size(), 1500u) << msg;
  std::printf("message (%zu characters): %s\n", msg.size(), msg.c_str());
  EXPECT_EQ(last_checkpoint_name(dir + "/out"), "model_a");
  EXPECT_EQ(visible_dirs(dir + "/out"), std::vector<std::string>{"model_a"});
}

}  // namespace
}  // namespace dtrain::checkpoint
