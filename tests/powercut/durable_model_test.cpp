// Unit tests of DurableModel (tests/powercut/durable_model.h), the rules of what survives
// a power cut, on a real backing directory without FUSE: unsynced writes, creates,
// renames and unlinks are lost; fsynced ones survive; a name made durable before its
// content holds an empty file; a cut write tears at a page boundary.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "tests/powercut/durable_model.h"
#include "tests/test_util.h"

namespace dtrain::powercut {
namespace {

namespace stdfs = std::filesystem;
using testutil::read_file;
using testutil::TempDir;
using testutil::write_file;

class DurableModelTest : public ::testing::Test {
 protected:
  std::string live(const std::string& p) const { return dir_ / ("live" + p); }
  std::string image(const std::string& p) const { return dir_ / ("image" + p); }
  bool in_image(const std::string& p) const { return stdfs::exists(image(p)); }
  void reboot(const DurableModel& m) const { m.write_image(dir_ / "image"); }

  TempDir dir_;
};

TEST_F(DurableModelTest, WhatWasThereAtTheStartSurvives) {
  write_file(live("/a/b/keep"), "kept");
  DurableModel m(dir_ / "live");
  write_file(live("/a/b/keep"), "changed, never synced");
  reboot(m);
  EXPECT_EQ(read_file(image("/a/b/keep")), "kept");
}

TEST_F(DurableModelTest, ANewFileNeedsItsDirectorySynced) {
  stdfs::create_directories(live(""));
  DurableModel m(dir_ / "live");
  write_file(live("/f"), "data");
  m.file_synced("/f");  // content durable, but the name is not
  reboot(m);
  EXPECT_FALSE(in_image("/f"));
}

TEST_F(DurableModelTest, ANameSyncedBeforeItsContentHoldsAnEmptyFile) {
  stdfs::create_directories(live(""));
  DurableModel m(dir_ / "live");
  write_file(live("/f"), "data");
  m.dir_synced("/");
  write_file(live("/g"), "synced");
  m.file_synced("/g");
  m.dir_synced("/");
  reboot(m);
  EXPECT_EQ(read_file(image("/f")), "");
  EXPECT_EQ(read_file(image("/g")), "synced");
}

TEST_F(DurableModelTest, RenamesAndUnlinksNeedTheDirectorySynced) {
  write_file(live("/d/old"), "v1");
  write_file(live("/d/gone"), "x");
  DurableModel m(dir_ / "live");
  m.forget_if_last_link("/d/gone");
  ASSERT_EQ(::unlink(live("/d/gone").c_str()), 0);
  ASSERT_EQ(std::rename(live("/d/old").c_str(), live("/d/new").c_str()), 0);
  reboot(m);
  EXPECT_TRUE(in_image("/d/old"));
  EXPECT_TRUE(in_image("/d/gone"));
  EXPECT_FALSE(in_image("/d/new"));
  stdfs::remove_all(dir_ / "image");
  m.dir_synced("/d");
  reboot(m);
  EXPECT_FALSE(in_image("/d/old"));
  EXPECT_FALSE(in_image("/d/gone"));
  EXPECT_EQ(read_file(image("/d/new")), "v1");  // the file kept its durable content
}

TEST_F(DurableModelTest, ANewDirectoryIsEmptyUntilItIsSynced) {
  stdfs::create_directories(live(""));
  DurableModel m(dir_ / "live");
  write_file(live("/ckpt/.tmp/shard"), "bytes");
  m.file_synced("/ckpt/.tmp/shard");
  m.dir_synced("/");  // "ckpt" durable, its entries not
  reboot(m);
  EXPECT_TRUE(stdfs::is_directory(image("/ckpt")));
  EXPECT_TRUE(stdfs::is_empty(image("/ckpt")));
  stdfs::remove_all(dir_ / "image");
  m.dir_synced("/ckpt");
  m.dir_synced("/ckpt/.tmp");
  reboot(m);
  EXPECT_EQ(read_file(image("/ckpt/.tmp/shard")), "bytes");
}

TEST_F(DurableModelTest, AReusedInodeIsANewFile) {
  write_file(live("/a"), "old a");
  DurableModel m(dir_ / "live");
  m.forget_if_last_link("/a");
  ASSERT_EQ(::unlink(live("/a").c_str()), 0);
  write_file(live("/b"), "new b");  // may get a's inode number
  m.file_synced("/b");
  reboot(m);
  EXPECT_EQ(read_file(image("/a")), "old a");  // the unlink was never made durable
  EXPECT_FALSE(in_image("/b"));
}

TEST_F(DurableModelTest, ATornWriteReachesTheDiskInWholePages) {
  write_file(live("/f"), "");
  DurableModel m(dir_ / "live");
  const std::string data(10000, 'x');
  m.tear_write("/f", data.data(), 8192, 100);
  reboot(m);
  const std::string got = read_file(image("/f"));
  ASSERT_EQ(got.size(), 8292u);
  EXPECT_EQ(got.substr(0, 100), std::string(100, '\0'));
  EXPECT_EQ(got.substr(100), std::string(8192, 'x'));
}

}  // namespace
}  // namespace dtrain::powercut
