// Tests of dtrain::fs: whole-file reads, atomic replacement, durable rename, fsync and
// parent_dir, and that every error names the path it is about.
#include "runtime/base/fs.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "tests/test_util.h"

namespace dtrain {
namespace {

namespace stdfs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using testutil::read_file;
using testutil::TempDir;
using testutil::write_file;

// Names of the entries of `dir`, sorted.
std::vector<std::string> entries(const TempDir& dir) {
  std::vector<std::string> names;
  for (const auto& entry : stdfs::directory_iterator(dir.path())) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Bytes 0..255 repeated up to `size`, NULs included.
std::string binary_content(size_t size) {
  std::string out(size, '\0');
  for (size_t i = 0; i < size; ++i) out[i] = static_cast<char>(i * 7 % 256);
  return out;
}

// The message of the dtrain::Error that `fn` throws ("" and a test failure if none).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected dtrain::Error, nothing was thrown";
  return "";
}

TEST(FsTest, ReadFileReturnsExactBytes) {
  TempDir dir;
  const std::string path = dir / "data.bin";
  const std::string content = binary_content(200 * 1024 + 13);  // more than one read() buffer
  write_file(path, content);
  EXPECT_EQ(fs::read_file(path), content);
}

TEST(FsTest, ReadFileOfEmptyFile) {
  TempDir dir;
  const std::string path = dir / "empty";
  write_file(path, "");
  EXPECT_EQ(fs::read_file(path), "");
}

TEST(FsTest, ReadFileErrorsNameThePath) {
  TempDir dir;
  const std::string missing = dir / "missing.txt";
  EXPECT_THAT(error_of([&] { fs::read_file(missing); }),
              AllOf(HasSubstr("'" + missing + "'"), HasSubstr("No such file or directory")));
  // A directory opens but cannot be read.
  EXPECT_THAT(error_of([&] { fs::read_file(dir.path()); }),
              AllOf(HasSubstr("'" + dir.path() + "'"), HasSubstr("Is a directory")));
}

TEST(FsTest, WriteFileAtomicCreatesAndReplacesLeavingNoTempFile) {
  TempDir dir;
  const std::string path = dir / "last_checkpoint";
  fs::write_file_atomic(path, "model_0000099");
  EXPECT_EQ(read_file(path), "model_0000099");
  EXPECT_EQ(entries(dir), std::vector<std::string>{"last_checkpoint"});

  fs::write_file_atomic(path, "model_final");  // shorter: no stale tail may remain
  EXPECT_EQ(read_file(path), "model_final");
  EXPECT_EQ(entries(dir), std::vector<std::string>{"last_checkpoint"});

  fs::write_file_atomic(path, "");
  EXPECT_EQ(read_file(path), "");
  EXPECT_EQ(entries(dir), std::vector<std::string>{"last_checkpoint"});
}

TEST(FsTest, WriteFileAtomicLargeBinaryContent) {
  TempDir dir;
  const std::string path = dir / "big.bin";
  const std::string content = binary_content(3 * 1024 * 1024 + 1);
  fs::write_file_atomic(path, content);
  EXPECT_EQ(fs::read_file(path), content);
  EXPECT_EQ(entries(dir), std::vector<std::string>{"big.bin"});
}

TEST(FsTest, WriteFileAtomicErrorNamesThePath) {
  TempDir dir;
  const std::string path = dir / "no/such/dir/file.txt";
  EXPECT_THAT(error_of([&] { fs::write_file_atomic(path, "x"); }),
              AllOf(HasSubstr(path), HasSubstr("No such file or directory")));
  EXPECT_TRUE(entries(dir).empty());
}

TEST(FsTest, RenameDurableMovesAndReplaces) {
  TempDir dir;
  const std::string from = dir / "a.tmp";
  const std::string to = dir / "a";
  write_file(from, "new");
  write_file(to, "old");
  fs::rename_durable(from, to);
  EXPECT_EQ(read_file(to), "new");
  EXPECT_FALSE(stdfs::exists(from));
  EXPECT_EQ(entries(dir), std::vector<std::string>{"a"});
}

TEST(FsTest, RenameDurableMovesDirectories) {
  TempDir dir;
  stdfs::create_directory(dir / ".model_final.tmp-1");
  write_file(dir / ".model_final.tmp-1/shard", "s");
  fs::rename_durable(dir / ".model_final.tmp-1", dir / "model_final");
  EXPECT_EQ(read_file(dir / "model_final/shard"), "s");
  EXPECT_EQ(entries(dir), std::vector<std::string>{"model_final"});
}

TEST(FsTest, RenameDurableErrorNamesBothPaths) {
  TempDir dir;
  const std::string from = dir / "absent";
  const std::string to = dir / "target";
  EXPECT_THAT(error_of([&] { fs::rename_durable(from, to); }),
              AllOf(HasSubstr("'" + from + "'"), HasSubstr("'" + to + "'"),
                    HasSubstr("No such file or directory")));
}

TEST(FsTest, FsyncPathFilesAndDirectories) {
  TempDir dir;
  const std::string path = dir / "f";
  write_file(path, "x");
  EXPECT_NO_THROW(fs::fsync_path(path));
  EXPECT_NO_THROW(fs::fsync_path(dir.path()));
  const std::string missing = dir / "gone";
  EXPECT_THAT(error_of([&] { fs::fsync_path(missing); }),
              AllOf(HasSubstr("'" + missing + "'"), HasSubstr("No such file or directory")));
}

TEST(FsTest, ParentDir) {
  EXPECT_EQ(fs::parent_dir("out/model_final/checkpoint.h5"), "out/model_final");
  EXPECT_EQ(fs::parent_dir("/abs/file"), "/abs");
  EXPECT_EQ(fs::parent_dir("/file"), "/");
  EXPECT_EQ(fs::parent_dir("file"), ".");
  EXPECT_EQ(fs::parent_dir(""), ".");
}

}  // namespace
}  // namespace dtrain
