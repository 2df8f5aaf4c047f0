// fetch_remote() of weight files (.pt zip, .safetensors) from a loopback server: bodies
// without Content-Length are verified (a zip's central directory and CRCs, safetensors'
// header sizes) before they are cached, cut ones are never cached, and a truncated
// cached copy (left by an older dtrain) is checked, replaced and not reused.
#include "checkpoint/remote.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "checkpoint/interop/safetensors.h"
#include "checkpoint/interop/zip_archive.h"
#include "checkpoint/storage/cache.h"
#include "runtime/base/error.h"
#include "runtime/dist/local_communicator.h"
#include "tests/checkpoint/storage/test_util.h"

namespace dtrain::checkpoint {
namespace {

namespace stdfs = std::filesystem;
using storage::testing::find_part_files;
using storage::testing::read_file;
using storage::testing::ScopedEnv;
using storage::testing::TestServer;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A served root with w.pt (a zip archive, as torch.save writes) and w.safetensors.
struct Files {
  std::string root, pt, safetensors;
  Files() {
    root = storage::testing::make_temp_dir("remote_root");
    const std::string data = storage::testing::random_bytes(200000, 7);
    interop::ZipWriter zip(root + "/w.pt");
    zip.add("w/data.pkl", data.data(), data.size());
    zip.add("w/version", "3\n", 2);
    zip.close();
    pt = read_file(root + "/w.pt");
    interop::write_safetensors(root + "/w.safetensors",
                               {{"weight", at::arange(50000, at::kFloat)}});
    safetensors = read_file(root + "/w.safetensors");
  }
};

class RemoteWeightsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    files_ = new Files();
    server_ = new TestServer(files_->root);
  }
  static void TearDownTestSuite() {
    delete server_;
    delete files_;
  }

  void SetUp() override {
    if (!server_->ok()) GTEST_SKIP() << server_->error();
    cache_dir_ = storage::testing::make_temp_dir("remote_cache");
    cache_ = std::make_unique<ScopedEnv>("DTRAIN_CACHE", cache_dir_);
  }

  // fetch_remote() expecting a CheckpointError; checks that nothing was cached.
  std::string failure(const std::string& url) {
    try {
      fetch_remote(url, comm_);
      ADD_FAILURE() << url << " was fetched";
    } catch (const CheckpointError& e) {
      EXPECT_FALSE(stdfs::exists(storage::cache_path_for(url))) << "cached: " << url;
      EXPECT_EQ(find_part_files(cache_dir_), std::vector<std::string>{});
      return e.what();
    }
    return "";
  }

  static Files* files_;
  static TestServer* server_;
  std::string cache_dir_;
  std::unique_ptr<ScopedEnv> cache_;
  dist::LocalCommunicator comm_;
};

Files* RemoteWeightsTest::files_ = nullptr;
TestServer* RemoteWeightsTest::server_ = nullptr;

TEST_F(RemoteWeightsTest, WholeBodiesWithoutContentLengthAreVerifiedAndCached) {
  std::string local = fetch_remote(server_->url("/noclen/w.pt"), comm_);
  EXPECT_TRUE(read_file(local) == files_->pt);
  local = fetch_remote(server_->url("/noclen/w.safetensors"), comm_);
  EXPECT_TRUE(read_file(local) == files_->safetensors);
  local = fetch_remote(server_->url("/chunked/w.pt"), comm_);
  EXPECT_TRUE(read_file(local) == files_->pt);
}

TEST_F(RemoteWeightsTest, CutZipWithoutContentLengthIsNeverCached) {
  const std::string url = server_->url("/noclencut/w.pt");
  const std::string what = failure(url);
  EXPECT_TRUE(contains(what, "fetching '" + url + "' failed: download of " + url +
                                 " is corrupt after 4 attempt(s): "))
      << what;
  EXPECT_TRUE(contains(what, "is not a readable zip archive")) << what;
}

TEST_F(RemoteWeightsTest, CutSafetensorsWithoutContentLengthIsNeverCached) {
  const std::string url = server_->url("/noclencut/w.safetensors");
  const std::string what = failure(url);
  EXPECT_TRUE(contains(what, "download of " + url + " is corrupt after 4 attempt(s): "
                                                    "safetensors file '"))
      << what;
}

TEST_F(RemoteWeightsTest, ShortContentLengthDeliveryFails) {
  const std::string url = server_->url("/cut/w.pt");
  const std::string what = failure(url);
  EXPECT_TRUE(contains(what, "download of " + url + " failed after 4 attempt(s): connection "
                                                    "closed after "))
      << what;
}

TEST_F(RemoteWeightsTest, TruncatedCachedCopyIsReplacedNotReused) {
  const std::string url = server_->url("/ok/w.pt");
  const std::string cached = storage::cache_path_for(url);
  // What an older dtrain left after a close-delimited body was cut short.
  storage::testing::write_file(cached, files_->pt.substr(0, files_->pt.size() / 2));
  const int64_t before = server_->requests();
  const std::string local = fetch_remote(url, comm_);
  EXPECT_EQ(local, cached);
  EXPECT_TRUE(read_file(local) == files_->pt);
  EXPECT_EQ(server_->requests() - before, 1);
  // Now whole: the next fetch uses it without a request.
  fetch_remote(url, comm_);
  EXPECT_EQ(server_->requests() - before, 1);
}

TEST_F(RemoteWeightsTest, WeightFileCapComesFromTheEnvironment) {
  ScopedEnv cap("DTRAIN_DOWNLOAD_MAX_BYTES", "100K");
  const std::string url = server_->url("/noclen/w.pt");
  const std::string what = failure(url);
  EXPECT_TRUE(contains(what, "download of " + url + " failed: the body exceeds the 102400 bytes "
                                                    "allowed (DTRAIN_DOWNLOAD_MAX_BYTES)"))
      << what;
}

}  // namespace
}  // namespace dtrain::checkpoint
