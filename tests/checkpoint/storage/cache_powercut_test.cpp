// Power cuts at every crash point of the download cache (DTRAIN_CACHE), in-process over a
// FaultInjectionEnv (tests/powercut/fault_env.h), against the loopback HTTP server: a
// checkpoint directory and a single file are fetched; after any cut, an entry the cache
// holds under its name is complete (every file equal to the server's), never partial, and
// an entry whose fetch had returned is there.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "checkpoint/storage/cache.h"
#include "tests/checkpoint/storage/test_util.h"
#include "tests/powercut/sweep.h"

namespace dtrain::storage {
namespace {

using powercut::Outcome;
using powercut::SweepResult;
using testing::read_file;
using testing::served_files;

const std::vector<std::string> kCkptFiles = {"checkpoint.h5", "shard-00000-of-00002.h5",
                                             "shard-00001-of-00002.h5"};

// What the cache under `cache` holds of the two URLs: a problem, or "".
std::string check_cache(const std::string& cache, const std::string& dir_url, const std::string& file_url,
                        int fetched) {
  testing::ScopedEnv at("DTRAIN_CACHE", cache);
  Env& env = Env::posix();
  const std::string dir = cache_path_for(dir_url);
  if (env.type_of(dir) != FileType::kMissing) {
    for (const auto& name : kCkptFiles) {
      const std::string path = dir + "/" + name;
      if (env.type_of(path) != FileType::kRegular) return "cached directory lacks " + name;
      if (read_file(path) != served_files().ckpt.at(name)) return "cached " + name + " differs from the server's";
    }
  } else if (fetched >= 1) {
    return "the directory fetch had returned, but its cache entry is gone";
  }
  const std::string file = cache_path_for(file_url);
  if (env.type_of(file) != FileType::kMissing) {
    if (read_file(file) != served_files().small) return "cached small.bin differs from the server's";
  } else if (fetched >= 2) {
    return "the file fetch had returned, but its cache entry is gone";
  }
  return "";
}

// The scenario of both tests: a checkpoint directory, then a file, fetched into a cache
// under the run's root; the check of what the cache holds after a cut.
struct Fetches {
  explicit Fetches(const testing::TestServer& server)
      : dir_url(server.url("/ok/ckpt")), file_url(server.url("/ok/small.bin")) {}
  powercut::Scenario scenario() {
    return [this](Env& env, const std::string& root) {
      testing::ScopedEnv at("DTRAIN_CACHE", root + "/cache");
      fetched = 0;
      DownloadOptions options;
      options.env = &env;
      options.retries = 0;
      fetch_directory(dir_url, kCkptFiles, {}, options);
      fetched = 1;
      fetch_file(file_url, options);
      fetched = 2;
    };
  }
  powercut::Check check() {
    return [this](const std::string& image, const Outcome&) {
      return check_cache(image + "/cache", dir_url, file_url, fetched);
    };
  }
  std::string dir_url, file_url;
  int fetched = 0;  // fetches that returned in the last run
};

TEST(CachePowercut, EveryCrashPointLeavesCompleteEntriesOrNone) {
  auto& server = testing::http_server();
  if (!server.ok()) GTEST_SKIP() << server.error();
  Fetches f(server);
  const SweepResult r = powercut::sweep(
      f.scenario(), f.check());
  EXPECT_GE(r.reference_log.size(), 10u);
  std::string text;
  for (const auto& f : r.failures) text += fmt::format("\n  cut at {} ({}): {}", f.cut_at, f.mutation, f.problem);
  EXPECT_TRUE(r.failures.empty()) << text;
  std::cout << fmt::format("[ sweep    ] download cache: {} crash points, {} failed; the mutations:\n", r.points,
                           r.failures.size());
  for (size_t i = 0; i < r.reference_log.size(); ++i) std::cout << fmt::format("  {:3} {}\n", i + 1, r.reference_log[i]);
}

// Drops each sync in turn: every one is needed except the staging directory's syncs that
// its last sync before the commit's rename makes redundant.
TEST(CachePowercut, EverySyncThatIsNotRedundantIsCaughtWhenDropped) {
  auto& server = testing::http_server();
  if (!server.ok()) GTEST_SKIP() << server.error();
  Fetches f(server);
  std::vector<std::string> log;
  const auto verdicts = powercut::drop_each_sync(
      f.scenario(), f.check(),
      &log);
  // Whether the sync at `at` is made redundant by another sync of the same directory:
  // a later one before the directory is renamed into sight (each file's rename into the
  // staging directory syncs it, but only the last sync before the commit's rename
  // matters), or one with no entry changed in between (the commit syncs it once more).
  auto redundant = [&](size_t at) {
    const std::string path = log[at].substr(5);
    auto changes = [&](const std::string& m) {
      if (m.rfind("sync ", 0) == 0) return false;  // a file's sync changes no entry
      return m.find("-> " + path + "/") != std::string::npos || m.find(" " + path + "/") == m.find(' ');
    };
    for (size_t j = at + 1; j < log.size() && log[j].rfind("rename " + path + " ", 0) != 0; ++j) {
      if (log[j] == log[at] && j + 1 < log.size() && log[j + 1].rfind("rename " + path + " ", 0) == 0) return true;
    }
    for (size_t j = 0; j < log.size(); ++j) {
      if (j == at || log[j] != log[at]) continue;
      bool changed = false;
      for (size_t i = std::min(j, at) + 1; i < std::max(j, at) && !changed; ++i) changed = changes(log[i]);
      if (!changed) return true;
    }
    return false;
  };
  size_t caught = 0;
  for (const auto& v : verdicts) {
    caught += v.caught ? 1 : 0;
    std::cout << fmt::format("  {:3} {:<90} {}\n", v.at + 1, log[v.at], v.caught ? "caught" : "not caught");
    if (!v.caught) {
      EXPECT_TRUE(redundant(v.at)) << "dropping '" << log[v.at] << "' is not noticed by any crash point";
    }
  }
  EXPECT_GE(caught, 9u);
  std::cout << fmt::format("[ mutation ] download cache: {} of {} syncs caught when dropped\n", caught, verdicts.size());
}

}  // namespace
}  // namespace dtrain::storage
