// A real SIGTERM caught by the PreemptionWatcher (as in `dtrain train`) stops a download
// of MODEL.WEIGHTS in progress at once with dtrain::Interrupted, leaving nothing cached,
// instead of being noticed only at the first iteration boundary after the download.
#include "runtime/engine/preemption.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "checkpoint/storage/cache.h"
#include "runtime/base/interrupt.h"
#include "tests/checkpoint/storage/test_util.h"

namespace dtrain::engine {
namespace {

using Clock = std::chrono::steady_clock;

TEST(PreemptionDownloadTest, SigtermStopsADownloadPromptly) {
  storage::testing::TestServer& server = storage::testing::http_server();
  if (!server.ok()) GTEST_SKIP() << server.error();
  const std::string cache = storage::testing::make_temp_dir("preempt_cache");
  storage::testing::ScopedEnv env("DTRAIN_CACHE", cache);
  clear_stop_request();
  PreemptionWatcher watcher({SIGTERM}, /*deadline_s=*/0);
  // One byte a second: 1000 s for the whole file, and never idle long enough to time out.
  const std::string url = server.url("/trickle/1000/small.bin");
  Clock::time_point sent;
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    sent = Clock::now();
    ::kill(::getpid(), SIGTERM);
  });
  try {
    storage::fetch_file(url);
    ADD_FAILURE() << "the download was not interrupted";
  } catch (const Interrupted& e) {
    EXPECT_EQ(e.signal(), SIGTERM);
    EXPECT_NE(std::string(e.what()).find("download from " + url + ": interrupted by signal 15"),
              std::string::npos)
        << e.what();
  }
  const double latency = std::chrono::duration<double>(Clock::now() - sent).count();
  killer.join();
  EXPECT_TRUE(watcher.requested());
  EXPECT_LT(latency, 0.5);
  std::printf("SIGTERM -> Interrupted in %.3f s\n", latency);
  EXPECT_FALSE(std::filesystem::exists(storage::cache_path_for(url)));
  EXPECT_EQ(storage::testing::find_part_files(cache), std::vector<std::string>{});
  clear_stop_request();
}

}  // namespace
}  // namespace dtrain::engine
