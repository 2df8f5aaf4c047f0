// Tests of dtrain::fs: whole-file reads, atomic replacement, durable rename, fsync and
// parent_dir, and that every error names the path it is about.
#include "runtime/base/fs.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/base/error.h"

namespace dtrain {
namespace {

namespace stdfs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

// A fresh directory under the system temp directory, removed with its contents.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (stdfs::temp_directory_path() / "dtrain-fs-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    stdfs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Full path of `name` inside the directory.
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const stdfs::path& path() const { return path_; }

  // Names of the directory's entries, sorted.
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& entry : stdfs::directory_iterator(path_)) {
      names.push_back(entry.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  stdfs::path path_;
};

void write_plain(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::binary) << content;
}

std::string read_plain(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
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
  const std::string path = dir.file("data.bin");
  const std::string content = binary_content(200 * 1024 + 13);  // more than one read() buffer
  write_plain(path, content);
  EXPECT_EQ(fs::read_file(path), content);
}

TEST(FsTest, ReadFileOfEmptyFile) {
  TempDir dir;
  const std::string path = dir.file("empty");
  write_plain(path, "");
  EXPECT_EQ(fs::read_file(path), "");
}

TEST(FsTest, ReadFileErrorsNameThePath) {
  TempDir dir;
  const std::string missing = dir.file("missing.txt");
  EXPECT_THAT(error_of([&] { fs::read_file(missing); }),
              AllOf(HasSubstr("'" + missing + "'"), HasSubstr("No such file or directory")));
  // A directory opens but cannot be read.
  EXPECT_THAT(error_of([&] { fs::read_file(dir.path().string()); }),
              AllOf(HasSubstr("'" + dir.path().string() + "'"), HasSubstr("Is a directory")));
}

TEST(FsTest, WriteFileAtomicCreatesAndReplacesLeavingNoTempFile) {
  TempDir dir;
  const std::string path = dir.file("last_checkpoint");
  fs::write_file_atomic(path, "model_0000099");
  EXPECT_EQ(read_plain(path), "model_0000099");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"last_checkpoint"});

  fs::write_file_atomic(path, "model_final");  // shorter: no stale tail may remain
  EXPECT_EQ(read_plain(path), "model_final");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"last_checkpoint"});

  fs::write_file_atomic(path, "");
  EXPECT_EQ(read_plain(path), "");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"last_checkpoint"});
}

TEST(FsTest, WriteFileAtomicLargeBinaryContent) {
  TempDir dir;
  const std::string path = dir.file("big.bin");
  const std::string content = binary_content(3 * 1024 * 1024 + 1);
  fs::write_file_atomic(path, content);
  EXPECT_EQ(fs::read_file(path), content);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"big.bin"});
}

TEST(FsTest, WriteFileAtomicErrorNamesThePath) {
  TempDir dir;
  const std::string path = dir.file("no/such/dir/file.txt");
  EXPECT_THAT(error_of([&] { fs::write_file_atomic(path, "x"); }),
              AllOf(HasSubstr(path), HasSubstr("No such file or directory")));
  EXPECT_TRUE(dir.entries().empty());
}

TEST(FsTest, RenameDurableMovesAndReplaces) {
  TempDir dir;
  const std::string from = dir.file("a.tmp");
  const std::string to = dir.file("a");
  write_plain(from, "new");
  write_plain(to, "old");
  fs::rename_durable(from, to);
  EXPECT_EQ(read_plain(to), "new");
  EXPECT_FALSE(stdfs::exists(from));
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"a"});
}

TEST(FsTest, RenameDurableMovesDirectories) {
  TempDir dir;
  stdfs::create_directory(dir.path() / ".model_final.tmp-1");
  write_plain(dir.file(".model_final.tmp-1/shard"), "s");
  fs::rename_durable(dir.file(".model_final.tmp-1"), dir.file("model_final"));
  EXPECT_EQ(read_plain(dir.file("model_final/shard")), "s");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"model_final"});
}

TEST(FsTest, RenameDurableErrorNamesBothPaths) {
  TempDir dir;
  const std::string from = dir.file("absent");
  const std::string to = dir.file("target");
  EXPECT_THAT(error_of([&] { fs::rename_durable(from, to); }),
              AllOf(HasSubstr("'" + from + "'"), HasSubstr("'" + to + "'"),
                    HasSubstr("No such file or directory")));
}

TEST(FsTest, FsyncPathFilesAndDirectories) {
  TempDir dir;
  const std::string path = dir.file("f");
  write_plain(path, "x");
  EXPECT_NO_THROW(fs::fsync_path(path));
  EXPECT_NO_THROW(fs::fsync_path(dir.path().string()));
  const std::string missing = dir.file("gone");
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
