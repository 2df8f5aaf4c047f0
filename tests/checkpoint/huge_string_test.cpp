// Strings in checkpoint.h5 are bounded before anything is allocated: a /dtrain/index
// declared as a 1 GiB fixed-length string (no data stored) is refused by load_index,
// verify and Checkpointer::load with a message naming the file, the dataset, the declared
// size and the limit, and the process's peak memory does not grow by the declared size.
#include <sys/resource.h>

#include <filesystem>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <hdf5.h>

#include "checkpoint/checkpointer.h"
#include "checkpoint/index.h"
#include "checkpoint/inspect.h"
#include "runtime/dist/local_communicator.h"
#include "runtime/h5/h5.h"
#include "tests/checkpoint/expect.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint {
namespace {

using namespace testing;  // NOLINT: test helpers

constexpr hsize_t kDeclared = hsize_t{1} << 30;

// Peak resident memory of this process so far, in bytes.
int64_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;
}

// Replaces `name` in `path` by a scalar dataset of a `size`-byte fixed-length string type,
// left unwritten (HDF5 allocates no storage: the file stays small).
void replace_with_declared_string(const std::string& path, const char* name, hsize_t size) {
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  ASSERT_GE(H5Ldelete(file, name, H5P_DEFAULT), 0);
  const hid_t type = H5Tcopy(H5T_C_S1);
  ASSERT_GE(H5Tset_size(type, size), 0);
  const hid_t space = H5Screate(H5S_SCALAR);
  const hid_t dset = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(dset, 0);
  H5Dclose(dset);
  H5Sclose(space);
  H5Tclose(type);
  H5Fclose(file);
}

TEST(HugeStringTest, IndexDeclaredAsOneGiBStringIsRefusedWithoutAllocating) {
  const std::string dir = make_temp_dir("huge-string");
  dist::LocalCommunicator comm;
  TrainingState s(OptKind::kSGD, 1, 0, 1);
  Checkpointer(s.model, dir + "/out", comm, s.checkpointables()).save("model_a");
  const std::string ckpt = dir + "/out/model_a";
  const std::string index_file = ckpt + "/" + kIndexFile;
  replace_with_declared_string(index_file, kIndexDataset, kDeclared);
  const auto file_size = std::filesystem::file_size(index_file);
  ASSERT_LT(file_size, 1u << 20);

  const int64_t peak_before = peak_rss_bytes();
  const std::string expected = fmt::format(
      "dataset '{}' in '{}' declares a string of {} bytes, more than the file's size, {} bytes "
      "(refused before allocating it)",
      kIndexDataset, index_file, kDeclared, file_size);
  EXPECT_CONTAINS(ThrownMessage([&] { load_index(ckpt); }), expected);
  EXPECT_CONTAINS(verify_text(ckpt), expected);
  TrainingState fresh(OptKind::kSGD, 2, 0, 1);
  Checkpointer loader(fresh.model, dir + "/out2", comm, fresh.checkpointables());
  EXPECT_CONTAINS(ThrownMessage([&] { loader.load(ckpt); }), expected);
  const int64_t growth = peak_rss_bytes() - peak_before;
  std::printf("peak RSS %.1f MiB before the reads, grew by %.1f MiB (declared string: 1 GiB)\n",
              peak_before / 1048576.0, growth / 1048576.0);
  EXPECT_LT(growth, int64_t{64} << 20);
  if (!HasFailure()) std::filesystem::remove_all(dir);
}

TEST(HugeStringTest, StringsAboveTheCapAreRefused) {
  const std::string dir = make_temp_dir("string-cap");
  const std::string path = dir + "/f.h5";
  {
    h5::File f = h5::File::create(path);
    f.write_string("text", std::string(5000, 'x'), h5::Group::StringLength::kFixed);
    f.write_string("vtext", std::string(5000, 'y'), h5::Group::StringLength::kVariable);
  }
  h5::File f = h5::File::open(path);
  EXPECT_EQ(f.open_dataset("text").read_string().size(), 5000u);
  EXPECT_EQ(f.open_dataset("vtext").read_string().size(), 5000u);
  EXPECT_CONTAINS(ThrownMessage<h5::H5Error>([&] { f.open_dataset("text").read_string(4096); }),
                  fmt::format("dataset '/text' in '{}' declares a string of 5000 bytes, more "
                              "than the cap of 4096 bytes on strings",
                              path));
  EXPECT_CONTAINS(ThrownMessage<h5::H5Error>([&] { f.open_dataset("vtext").read_string(4096); }),
                  "stores a string of 5000 bytes, more than the cap of 4096 bytes");
  if (!HasFailure()) std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace dtrain::checkpoint
