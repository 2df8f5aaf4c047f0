// The download cache against a loopback HTTP server: single files and checkpoint
// directories fetched once, nothing that looks complete after a failure, concurrent
// fetches by threads and processes.
#include "checkpoint/storage/cache.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "tests/checkpoint/storage/test_util.h"

namespace dtrain::storage {
namespace {

namespace stdfs = std::filesystem;
using testing::find_part_files;
using testing::list_dir;
using testing::read_file;
using testing::served_files;

const std::vector<std::string> kCkptFiles = {"checkpoint.h5", "shard-00000-of-00002.h5",
                                             "shard-00001-of-00002.h5"};

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Compares each file with what the server has (what an index-based checksum check does).
std::string check_against_source(const std::string& name, const std::string& path) {
  auto it = served_files().ckpt.find(name);
  if (it == served_files().ckpt.end()) return "unexpected file " + name;
  return read_file(path) == it->second ? "" : "checksum mismatch in " + name;
}

class CacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!server().ok()) GTEST_SKIP() << server().error();
    cache_ = testing::make_temp_dir("cache");
    env_ = std::make_unique<testing::ScopedEnv>("DTRAIN_CACHE", cache_);
    opts_.timeout_s = 5;
    opts_.retries = 1;
    opts_.backoff_s = 0.01;
  }

  static testing::TestServer& server() { return testing::http_server(); }

  // Names in the cache entry directory holding `url` (".lock" and the entry itself).
  std::vector<std::string> entry_listing(const std::string& url) {
    return list_dir(stdfs::path(cache_path_for(url)).parent_path());
  }

  std::string cache_;
  std::unique_ptr<testing::ScopedEnv> env_;
  DownloadOptions opts_;
};

TEST_F(CacheTest, FileIsDownloadedOnce) {
  const std::string url = server().url("/ok/small.bin");
  const int64_t before = server().requests();
  const std::string path = fetch_file(url, opts_);
  EXPECT_EQ(path, cache_path_for(url));
  EXPECT_EQ(path.rfind(cache_ + "/127.0.0.1_", 0), 0u) << path;
  EXPECT_TRUE(read_file(path) == served_files().small);
  EXPECT_EQ(server().requests() - before, 1);
  EXPECT_EQ(fetch_file(url, opts_), path);
  EXPECT_EQ(server().requests() - before, 1);  // the second fetch is served by the cache
  EXPECT_EQ(entry_listing(url), (std::vector<std::string>{".lock", "small.bin"}));
}

TEST_F(CacheTest, CutFileLeavesNothingInTheCache) {
  const std::string url = server().url("/cut/small.bin");
  try {
    fetch_file(url, opts_);
    FAIL() << "expected an error";
  } catch (const DownloadError& e) {
    EXPECT_TRUE(contains(e.what(),
                         "failed after 2 attempt(s): connection closed after 500 of "
                         "1000 bytes"))
        << e.what();
  }
  EXPECT_FALSE(stdfs::exists(cache_path_for(url)));
  EXPECT_EQ(entry_listing(url), std::vector<std::string>{".lock"});
  EXPECT_EQ(find_part_files(cache_), std::vector<std::string>{});
}

TEST_F(CacheTest, WrongBytesLeaveNothingInTheCache) {
  const std::string url = server().url("/wrong/small.bin");
  opts_.verify = [](const std::string& path) {
    return read_file(path) == served_files().small ? "" : "xxh64 mismatch";
  };
  try {
    fetch_file(url, opts_);
    FAIL() << "expected an error";
  } catch (const DownloadError& e) {
    EXPECT_TRUE(contains(e.what(), "is corrupt after 2 attempt(s): xxh64 mismatch")) << e.what();
  }
  EXPECT_FALSE(stdfs::exists(cache_path_for(url)));
  EXPECT_EQ(find_part_files(cache_), std::vector<std::string>{});
}

TEST_F(CacheTest, DirectoryIsFetchedVerifiedAndReused) {
  const std::string base = server().url("/ok/ckpt");
  std::vector<std::string> verified;
  auto verify = [&](const std::string& name, const std::string& path) {
    verified.push_back(name);
    // Files are checked in the hidden staging directory, before anything is published.
    EXPECT_EQ(stdfs::path(path).parent_path().filename().string().rfind(".ckpt.part-", 0), 0u)
        << path;
    return check_against_source(name, path);
  };
  const int64_t before = server().requests();
  const std::string dir = fetch_directory(base, kCkptFiles, verify, opts_);
  EXPECT_EQ(dir, cache_path_for(base));
  EXPECT_EQ(dir, cache_path_for(base + "/"));
  EXPECT_EQ(verified, kCkptFiles);
  EXPECT_EQ(list_dir(dir), kCkptFiles);
  for (const auto& [name, data] : served_files().ckpt) {
    EXPECT_TRUE(read_file(dir + "/" + name) == data) << name;
  }
  EXPECT_EQ(server().requests() - before, 3);
  EXPECT_EQ(find_part_files(cache_), std::vector<std::string>{});

  // A second fetch, also through a trailing-slash spelling, downloads nothing.
  EXPECT_EQ(fetch_directory(base + "/", kCkptFiles, verify, opts_), dir);
  EXPECT_EQ(server().requests() - before, 3);
  EXPECT_EQ(verified.size(), 3u);
}

TEST_F(CacheTest, DirectoryWithAMissingFileLeavesNoDirectory) {
  const std::string base = server().url("/ok/ckpt_missing");
  try {
    fetch_directory(base, kCkptFiles, check_against_source, opts_);
    FAIL() << "expected an error";
  } catch (const DownloadError& e) {
    EXPECT_TRUE(contains(e.what(), "HTTP 404 Not Found for " + base + "/shard-00001-of-00002.h5"))
        << e.what();
  }
  EXPECT_FALSE(stdfs::exists(cache_path_for(base)));
  EXPECT_EQ(entry_listing(base), std::vector<std::string>{".lock"});  // staging removed
}

TEST_F(CacheTest, DirectoryWithACorruptFileLeavesNoDirectory) {
  const std::string base = server().url("/ok/ckpt");
  auto verify = [](const std::string& name, const std::string& path) -> std::string {
    if (name == "shard-00001-of-00002.h5") return "piece model/w[0:8] xxh64 mismatch";
    return check_against_source(name, path);
  };
  const int64_t before = server().requests();
  try {
    fetch_directory(base, kCkptFiles, verify, opts_);
    FAIL() << "expected an error";
  } catch (const DownloadError& e) {
    EXPECT_TRUE(contains(e.what(), "download of " + base +
                                       "/shard-00001-of-00002.h5 is corrupt "
                                       "after 2 attempt(s): piece model/w[0:8] xxh64 mismatch"))
        << e.what();
  }
  EXPECT_EQ(server().requests() - before, 4);  // 2 good files + 2 attempts at the bad one
  EXPECT_FALSE(stdfs::exists(cache_path_for(base)));
  EXPECT_EQ(entry_listing(base), std::vector<std::string>{".lock"});

  // The next fetch starts from scratch and succeeds.
  const std::string dir = fetch_directory(base, kCkptFiles, check_against_source, opts_);
  EXPECT_EQ(list_dir(dir), kCkptFiles);
}

TEST_F(CacheTest, DirectoryFetchInSteps) {
  const std::string base = server().url("/ok/ckpt");
  {
    DirectoryFetch fetch(base, opts_);
    EXPECT_FALSE(fetch.complete());
    // The index (checkpoint.h5) first, then the shards it names.
    const std::string index = fetch.fetch("checkpoint.h5");
    EXPECT_TRUE(read_file(index) == served_files().ckpt.at("checkpoint.h5"));
    EXPECT_FALSE(stdfs::exists(fetch.path()));
    for (const char* shard : {"shard-00000-of-00002.h5", "shard-00001-of-00002.h5"}) {
      fetch.fetch(shard, [&](const std::string& p) { return check_against_source(shard, p); });
    }
    EXPECT_THROW(fetch.fetch("../escape"), Error);
    EXPECT_THROW(fetch.fetch(".hidden"), Error);
    EXPECT_EQ(fetch.commit(), cache_path_for(base));
  }
  EXPECT_EQ(list_dir(cache_path_for(base)), kCkptFiles);
  {
    DirectoryFetch again(base, opts_);
    EXPECT_TRUE(again.complete());
    again.evict();
    EXPECT_FALSE(again.complete());
  }
  EXPECT_FALSE(stdfs::exists(cache_path_for(base)));
  {
    DirectoryFetch abandoned(base, opts_);  // destroyed without commit: staging removed
    abandoned.fetch("checkpoint.h5");
  }
  EXPECT_EQ(entry_listing(base), std::vector<std::string>{".lock"});
}

TEST_F(CacheTest, CachedDirectoryLackingRequestedFilesIsFetchedAgain) {
  const std::string base = server().url("/ok/ckpt");
  fetch_directory(base, {"checkpoint.h5"}, {}, opts_);
  const int64_t before = server().requests();
  const std::string dir = fetch_directory(base, kCkptFiles, check_against_source, opts_);
  EXPECT_EQ(server().requests() - before, 3);
  EXPECT_EQ(list_dir(dir), kCkptFiles);
  EXPECT_EQ(entry_listing(base), (std::vector<std::string>{".lock", "ckpt"}));
}

TEST_F(CacheTest, StaleTemporariesAreRemovedByTheNextFetch) {
  const std::string url = server().url("/ok/small.bin");
  const stdfs::path entry = stdfs::path(cache_path_for(url)).parent_path();
  testing::write_file((entry / ".small.bin.part-999999-0-deadhost").string(), "partial");
  testing::write_file((entry / ".small.bin.part-999999-1-deadhost" / "inner").string(), "x");
  fetch_file(url, opts_);
  EXPECT_EQ(list_dir(entry.string()), (std::vector<std::string>{".lock", "small.bin"}));
}

TEST_F(CacheTest, RemoveCached) {
  const std::string url = server().url("/ok/small.bin");
  remove_cached(url);  // nothing cached: no-op
  fetch_file(url, opts_);
  remove_cached(url);
  EXPECT_FALSE(stdfs::exists(cache_path_for(url)));
  EXPECT_EQ(entry_listing(url), std::vector<std::string>{".lock"});
}

TEST_F(CacheTest, ConcurrentThreadsDownloadOnce) {
  const std::string url = server().url("/ok/big.bin");
  const int64_t before = server().requests();
  std::vector<std::string> paths(4);
  std::vector<std::string> errors(4);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < paths.size(); ++i) {
    threads.emplace_back([&, i] {
      try {
        paths[i] = fetch_file(url, opts_);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < paths.size(); ++i) {
    EXPECT_EQ(errors[i], "");
    EXPECT_EQ(paths[i], cache_path_for(url));
  }
  EXPECT_EQ(server().requests() - before, 1);  // the others waited on the entry lock
  EXPECT_TRUE(read_file(cache_path_for(url)) == served_files().big);
  EXPECT_EQ(find_part_files(cache_), std::vector<std::string>{});
}

TEST_F(CacheTest, ConcurrentProcessesDownloadOnce) {
  const std::string base = server().url("/ok/ckpt");
  const int64_t before = server().requests();
  std::vector<pid_t> children;
  for (int i = 0; i < 3; ++i) {
    pid_t pid = ::fork();
    if (pid == 0) {
      int rc = 0;
      try {
        std::string dir = fetch_directory(base, kCkptFiles, check_against_source, opts_);
        rc = list_dir(dir) == kCkptFiles ? 0 : 2;
      } catch (...) {
        rc = 1;
      }
      ::_exit(rc);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = -1;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  }
  EXPECT_EQ(server().requests() - before, 3);  // one process fetched the three files
  EXPECT_EQ(entry_listing(base), (std::vector<std::string>{".lock", "ckpt"}));
}

}  // namespace
}  // namespace dtrain::storage
