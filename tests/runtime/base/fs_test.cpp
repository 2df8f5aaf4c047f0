// Tests of dtrain::fs: bounded whole-file reads of regular files only, atomic replacement
// through exclusive temporaries, durable rename, fsync, parent_dir, directories other
// users cannot change (private and trusted ones), and error messages.
#include "runtime/base/env.h"
#include "runtime/base/fs.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "tests/gtest_util.h"
#include "tests/test_util.h"

namespace dtrain {
namespace {

namespace stdfs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
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

using dtrain::testing::error_of;  // the dtrain::Error message; a failure if none

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
  // A directory is refused before any read.
  EXPECT_THAT(error_of([&] { fs::read_file(dir.path()); }),
              HasSubstr("'" + dir.path() + "' is not a regular file (it is a directory)"));
}

TEST(FsTest, ReadFileRefusesAFifoWithoutBlocking) {
  TempDir dir;
  const std::string fifo = dir / "pipe";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // No writer: a blocking open would hang for ever.
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THAT(error_of([&] { fs::read_file(fifo); }),
              HasSubstr("'" + fifo + "' is not a regular file (it is a FIFO)"));
  EXPECT_THAT(error_of([&] { fs::read_file_head(fifo, 16); }), HasSubstr("(it is a FIFO)"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST(FsTest, ReadFileRefusesDevices) {
  // /dev/zero is endless: it used to end in an uncaught bad_alloc (SIGABRT).
  EXPECT_THAT(error_of([] { fs::read_file("/dev/zero"); }),
              HasSubstr("'/dev/zero' is not a regular file (it is a character device)"));
  EXPECT_THAT(error_of([] { fs::read_file("/dev/null"); }), HasSubstr("character device"));
}

TEST(FsTest, ReadFileSizeLimit) {
  TempDir dir;
  const std::string path = dir.write("f", std::string(1000, 'x'));
  EXPECT_EQ(fs::read_file(path, {1000}).size(), 1000u);
  const std::string msg = error_of([&] { fs::read_file(path, {999}); });
  EXPECT_THAT(msg, AllOf(HasSubstr("'" + path + "' is too large: 1000 bytes"),
                         HasSubstr("the limit is 999 bytes")));
  EXPECT_THAT(msg, Not(HasSubstr("xxx")));  // never the content
  EXPECT_NO_THROW(fs::read_file(path, {size_t{1} << 20}));
  // The size is checked again while reading: /proc files say 0 bytes and have more.
  EXPECT_THAT(error_of([] { fs::read_file("/proc/self/status", {10}); }),
              AllOf(HasSubstr("'/proc/self/status' is too large: it grew past the limit of 10 "
                              "bytes while being read (0 bytes when opened)")));
  EXPECT_THAT(fs::read_file("/proc/self/status"), HasSubstr("Name:"));
  // read_file_head is not an error past its limit: it returns the head.
  EXPECT_EQ(fs::read_file_head(path, 10), std::string(10, 'x'));
}

TEST(FsTest, ReadFileNoFollowRefusesASymlink) {
  TempDir dir;
  const std::string target = dir.write("target", "model_0000009");
  const std::string link = dir / "last_checkpoint";
  stdfs::create_symlink(target, link);
  EXPECT_EQ(fs::read_file(link), "model_0000009");  // followed by default
  fs::ReadOptions own;
  own.no_follow = true;
  EXPECT_EQ(fs::read_file(target, own), "model_0000009");
  EXPECT_THAT(error_of([&] { fs::read_file(link, own); }),
              AllOf(HasSubstr("'" + link + "'"), HasSubstr("is a symbolic link")));
}

TEST(FsTest, TempNamesAreHiddenUnpredictableAndBesideThePath) {
  const std::string a = fs::temp_name_for("/out/last_checkpoint");
  const std::string b = fs::temp_name_for("/out/last_checkpoint");
  EXPECT_NE(a, b);
  EXPECT_EQ(a.rfind("/out/.last_checkpoint.tmp-", 0), 0u) << a;
  EXPECT_EQ(a.size(), std::string("/out/.last_checkpoint.tmp-").size() + 16) << a;
  EXPECT_EQ(fs::temp_name_for("cfg.yaml").rfind(".cfg.yaml.tmp-", 0), 0u);
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

TEST(FsTest, WriteFileAtomicNeverWritesThroughALinkOrAnOldTemporary) {
  TempDir dir;
  const std::string victim = dir.write("victim", "precious");
  const std::string path = dir / "config.yaml";
  // The old predictable temporary name, planted as a link: no longer used at all.
  stdfs::create_symlink(victim, path + ".tmp-" + std::to_string(::getpid()));
  fs::write_file_atomic(path, "SEED: 1\n");
  EXPECT_EQ(read_file(path), "SEED: 1\n");
  EXPECT_EQ(read_file(victim), "precious");
  // Only the file, the victim and the planted link remain: no temporary left behind.
  EXPECT_EQ(entries(dir).size(), 3u);
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


mode_t mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

// A directory of another user (uid 65534, "nobody"): only root can make one.
bool make_foreign_dir(const std::string& path) {
  stdfs::create_directory(path);
  return ::geteuid() == 0 && ::chown(path.c_str(), 65534, 65534) == 0;
}

TEST(FsPrivateDirTest, CreatesPrivateDirectoriesAndMakesThisUsersOnesPrivate) {
  TempDir dir;
  const std::string d = dir / "tier", sub = d + "/node/job";
  const mode_t old_mask = ::umask(0);  // even so: created 700, never open to others
  EXPECT_TRUE(fs::create_directories_durable(sub, Env::posix(), DirAccess::kPrivate));
  EXPECT_TRUE(fs::create_directories_durable(dir / "shared", Env::posix(), DirAccess::kShared));
  ::umask(old_mask);
  for (const auto& p : {d, d + "/node", sub}) EXPECT_EQ(mode_of(p), 0700U) << p;
  EXPECT_EQ(mode_of(dir / "shared"), 0777U);
  EXPECT_NO_THROW(fs::check_private_dir(sub));
  EXPECT_EQ(mode_of(sub), 0700U);              // checked, unchanged
  ASSERT_EQ(::chmod(d.c_str(), 0755), 0);      // an older run's: only readable by others
  EXPECT_FALSE(fs::create_directories_durable(d, Env::posix(), DirAccess::kPrivate));
  EXPECT_EQ(mode_of(d), 0755U) << "one there already is left to check_private_dir";
  fs::check_private_dir(d);
  EXPECT_EQ(mode_of(d), 0700U);
}

TEST(FsPrivateDirTest, RefusesALinkAFileAWritableDirectoryAndAnotherUsersDirectory) {
  TempDir dir;
  const std::string real = dir / "real", link = dir / "link", file = dir.write("file", "x");
  stdfs::create_directory(real);
  stdfs::create_directory_symlink(real, link);
  EXPECT_THAT(error_of([&] { fs::check_private_dir(link); }),
              HasSubstr("'" + link + "' is a symbolic link, expected a directory of this user"));
  EXPECT_THAT(error_of([&] { fs::check_private_dir(file); }),
              HasSubstr("'" + file + "' is a regular file, expected a directory"));
  EXPECT_THAT(error_of([&] { fs::check_private_dir(dir / "absent"); }),
              AllOf(HasSubstr("cannot stat '" + dir / "absent" + "'"), HasSubstr("No such file or directory")));
  // Others could have put anything in it: refused, left as it is.
  ASSERT_EQ(::chmod(real.c_str(), 0775), 0);
  EXPECT_THAT(error_of([&] { fs::check_private_dir(real); }),
              HasSubstr("'" + real + "' (mode 775) could be written by other users"));
  EXPECT_EQ(mode_of(real), 0775U);
  const std::string foreign = dir / "foreign";
  if (!make_foreign_dir(foreign)) GTEST_SKIP() << "not root: cannot make another user's directory";
  ASSERT_EQ(::chmod(foreign.c_str(), 0700), 0);
  EXPECT_THAT(error_of([&] { fs::check_private_dir(foreign); }),
              HasSubstr(fmt::format("'{}' belongs to uid 65534, not to this user (uid {})", foreign, ::geteuid())));
  EXPECT_EQ(mode_of(foreign), 0700U) << "another user's directory is left as it is";
}

TEST(FsTrustedDirTest, AcceptsOwnDirectoriesAndStickyOnesAndReturnsTheRealPath) {
  TempDir dir;
  const std::string own = dir / "own", sticky = dir / "sticky";
  stdfs::create_directory(own);
  stdfs::create_directory(sticky);
  ASSERT_EQ(::chmod(own.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(sticky.c_str(), 01777), 0);
  const std::string real_dir = stdfs::canonical(dir.path()).string();
  EXPECT_EQ(fs::trusted_dir(own).path, real_dir + "/own");
  EXPECT_EQ(fs::trusted_dir(sticky + "/").path, real_dir + "/sticky");  // like /tmp and /dev/shm
  EXPECT_EQ(fs::trusted_dir("/").path, "/");
  // A link this user made is followed, also in a directory every user can write to
  // (sticky), and also named with a trailing separator: the real path is what to use.
  stdfs::create_directory_symlink(own, sticky + "/link");
  EXPECT_EQ(fs::trusted_dir(sticky + "/link").path, real_dir + "/own");
  EXPECT_EQ(fs::trusted_dir(sticky + "/link/").path, real_dir + "/own");
}

TEST(FsTrustedDirTest, ADirectoryAboveOthersCanWriteToIsAWarning) {
  TempDir dir;
  const std::string open = dir / "open";
  stdfs::create_directory(open);
  stdfs::create_directory(open + "/mine");
  ASSERT_EQ(::chmod(open.c_str(), 0777), 0);  // Kubernetes' emptyDir
  const fs::TrustedDir t = fs::trusted_dir(open + "/mine");
  EXPECT_EQ(t.path, stdfs::canonical(open).string() + "/mine");
  EXPECT_THAT(t.warning, HasSubstr("'" + stdfs::canonical(open).string() +
                                   "' (mode 777) is writable by other users and not sticky: another user of this node "
                                   "could replace '" + t.path + "'"));
  ASSERT_EQ(::chmod(open.c_str(), 01777), 0);
  EXPECT_EQ(fs::trusted_dir(open + "/mine").warning, "");
}

TEST(FsTrustedDirTest, RefusesWhatOtherUsersCouldChange) {
  TempDir dir;
  const std::string open = dir / "open";
  stdfs::create_directory(open);
  ASSERT_EQ(::chmod(open.c_str(), 0777), 0);
  EXPECT_THAT(error_of([&] { fs::trusted_dir(open); }),
              HasSubstr("(mode 777) is writable by other users and not sticky"));
  ASSERT_EQ(::chmod(open.c_str(), 0775), 0);
  EXPECT_THAT(error_of([&] { fs::trusted_dir(open + "/"); }), HasSubstr("(mode 775) is writable by other users"));
  // A link in a directory others can write to could be replaced by another one.
  ASSERT_EQ(::chmod(open.c_str(), 0777), 0);
  stdfs::create_directory(dir / "target");
  stdfs::create_directory_symlink(dir / "target", open + "/link");
  EXPECT_THAT(error_of([&] { fs::trusted_dir(open + "/link/"); }),
              HasSubstr("'" + open + "/link' is a symbolic link (made by uid " + std::to_string(::geteuid()) +
                        ") in '" + open + "' (mode 777), where another user could replace it"));
  EXPECT_THAT(error_of([&] { fs::trusted_dir(dir.write("f", "x")); }),
              HasSubstr("is a regular file, expected a directory"));
  EXPECT_THAT(error_of([&] { fs::trusted_dir(dir / "absent"); }),
              AllOf(HasSubstr("cannot resolve '" + dir / "absent" + "'"), HasSubstr("No such file or directory")));
  const std::string foreign = dir / "foreign";
  if (!make_foreign_dir(foreign)) GTEST_SKIP() << "not root: cannot make another user's directory";
  ASSERT_EQ(::chmod(foreign.c_str(), 0755), 0);
  EXPECT_THAT(error_of([&] { fs::trusted_dir(foreign); }),
              HasSubstr(fmt::format("belongs to uid 65534, neither this user (uid {}) nor root", ::geteuid())));
  // In a sticky directory, another user's link: they could point it elsewhere.
  ASSERT_EQ(::chmod(open.c_str(), 01777), 0);
  ASSERT_EQ(::lchown((open + "/link").c_str(), 65534, 65534), 0);
  EXPECT_THAT(error_of([&] { fs::trusted_dir(open + "/link"); }),
              HasSubstr("is a symbolic link (made by uid 65534) in '" + open + "' (mode 1777)"));
}

TEST(FsTest, UserNameIsTheEffectiveUsersName) {
  const struct passwd* pw = ::getpwuid(::geteuid());
  EXPECT_EQ(fs::user_name(), pw != nullptr ? std::string(pw->pw_name) : std::to_string(::geteuid()));
}

}  // namespace
}  // namespace dtrain
