// download() against hostile servers: endless and oversized bodies (size caps), a body
// longer than its Content-Length, a trickle (total deadline), bodies ended only by the
// connection close, cross-host redirects, and a real SIGTERM during a download.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "checkpoint/storage/cache.h"
#include "checkpoint/storage/http_client.h"
#include "runtime/base/interrupt.h"
#include "tests/checkpoint/storage/test_util.h"

namespace dtrain::storage {
namespace {

using testing::find_part_files;
using testing::read_file;
using testing::ScopedEnv;
using testing::served_files;
using Clock = std::chrono::steady_clock;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

class LimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!server().ok()) GTEST_SKIP() << server().error();
    dir_ = testing::make_temp_dir("limits");
    dest_ = dir_ + "/out.bin";
    opts_.timeout_s = 5;
    opts_.retries = 2;
    opts_.backoff_s = 0.01;
  }

  static testing::TestServer& server() { return testing::http_server(); }

  // Runs download() expecting a DownloadError; checks nothing was left behind and sets
  // `requests` to the requests the server saw and `secs` to the time it took.
  std::string failure(const std::string& path, int64_t* requests = nullptr,
                      double* secs = nullptr) {
    const int64_t before = server().requests();
    const auto t0 = Clock::now();
    try {
      download(server().url(path), dest_, opts_);
    } catch (const DownloadError& e) {
      if (secs) *secs = seconds_since(t0);
      if (requests) *requests = server().requests() - before;
      EXPECT_FALSE(std::filesystem::exists(dest_)) << "a failed download left " << dest_;
      EXPECT_EQ(find_part_files(dir_), std::vector<std::string>{});
      return e.what();
    }
    ADD_FAILURE() << "download of " << path << " did not fail";
    return "";
  }

  std::string dir_;
  std::string dest_;
  DownloadOptions opts_;
};

TEST_F(LimitsTest, EndlessBodyStopsAtTheCap) {
  ScopedEnv cap("DTRAIN_DOWNLOAD_MAX_BYTES", "1M");
  opts_.accept_close_delimited = true;  // the cap applies however the body is framed
  int64_t requests = 0;
  double secs = 0;
  const std::string what = failure("/endless/small.bin", &requests, &secs);
  EXPECT_TRUE(contains(what, "download of " + server().url("/endless/small.bin") +
                                 " failed: the body exceeds the 1048576 bytes allowed "
                                 "(DTRAIN_DOWNLOAD_MAX_BYTES)"))
      << what;
  EXPECT_TRUE(contains(what, "without a Content-Length")) << what;
  EXPECT_EQ(requests, 1);  // not retried
  EXPECT_LT(secs, 3.0);
  std::printf("endless body refused after %.3f s\n", secs);
}

TEST_F(LimitsTest, ContentLengthAboveTheCapIsRefusedBeforeTheBody) {
  int64_t requests = 0;
  double secs = 0;
  // The default cap (64 GiB) is below the announced 10^12 bytes.
  std::string what = failure("/hugeclen/small.bin", &requests, &secs);
  EXPECT_TRUE(contains(what, "failed: the server announces Content-Length 1000000000000, more "
                             "than the 68719476736 bytes allowed (the default of "
                             "DTRAIN_DOWNLOAD_MAX_BYTES); nothing was downloaded"))
      << what;
  EXPECT_EQ(requests, 1);
  EXPECT_LT(secs, 3.0);

  ScopedEnv cap("DTRAIN_DOWNLOAD_MAX_BYTES", "2K");
  what = failure("/ok/big.bin");
  EXPECT_TRUE(contains(what, "Content-Length 9437191, more than the 2048 bytes allowed "
                             "(DTRAIN_DOWNLOAD_MAX_BYTES)"))
      << what;
}

TEST_F(LimitsTest, TheCallersOwnCapNamesItsSource) {
  opts_.max_bytes = 500;
  opts_.max_bytes_source = "the size the index declares";
  std::string what = failure("/ok/small.bin");
  EXPECT_TRUE(contains(what, "Content-Length 1000, more than the 500 bytes allowed (the size "
                             "the index declares)"))
      << what;
  opts_.accept_close_delimited = true;
  what = failure("/noclen/small.bin");
  EXPECT_TRUE(contains(what, "the body exceeds the 500 bytes allowed (the size the index "
                             "declares): 1000 bytes received without a Content-Length"))
      << what;
  // The smaller of the two caps wins.
  ScopedEnv cap("DTRAIN_DOWNLOAD_MAX_BYTES", "100");
  what = failure("/ok/small.bin");
  EXPECT_TRUE(contains(what, "more than the 100 bytes allowed (DTRAIN_DOWNLOAD_MAX_BYTES)"))
      << what;
  // Exactly at the cap is fine.
  opts_.max_bytes = 1000;
  ScopedEnv no_cap("DTRAIN_DOWNLOAD_MAX_BYTES", std::nullopt);
  download(server().url("/ok/small.bin"), dest_, opts_);
  EXPECT_TRUE(read_file(dest_) == served_files().small);
}

TEST_F(LimitsTest, BodyLongerThanItsContentLengthIsRefused) {
  int64_t requests = 0;
  const std::string what = failure("/long/small.bin", &requests);
  EXPECT_TRUE(contains(what, "download of " + server().url("/long/small.bin") +
                                 " failed: the server sent more than its Content-Length of 500 "
                                 "bytes"))
      << what;
  EXPECT_EQ(requests, 1);
}

TEST_F(LimitsTest, ShortContentLengthDeliveryFails) {
  const std::string what = failure("/cut/small.bin");
  EXPECT_TRUE(contains(what, "download of " + server().url("/cut/small.bin") +
                                 " failed after 3 attempt(s): connection closed after 500 of "
                                 "1000 bytes"))
      << what;
}

TEST_F(LimitsTest, TrickleHitsTheTotalDeadline) {
  ScopedEnv deadline("DTRAIN_DOWNLOAD_TIMEOUT_S", "1");
  int64_t requests = 0;
  double secs = 0;
  const std::string what = failure("/trickle/100/small.bin", &requests, &secs);
  EXPECT_TRUE(contains(what, "download of " + server().url("/trickle/100/small.bin") +
                                 " failed: exceeded the total deadline of 1 s "
                                 "(DTRAIN_DOWNLOAD_TIMEOUT_S) after "))
      << what;
  EXPECT_EQ(requests, 1);  // the deadline covers retries too
  EXPECT_GE(secs, 0.95);
  EXPECT_LT(secs, 2.0);
  std::printf("trickle (a byte per 100 ms, idle timeout 5 s) stopped after %.3f s\n", secs);
}

TEST_F(LimitsTest, DeadlineCoversRetriesAndBackoff) {
  ScopedEnv deadline("DTRAIN_DOWNLOAD_TIMEOUT_S", "0.5");
  opts_.retries = 10;
  opts_.backoff_s = 0.2;
  int64_t requests = 0;
  double secs = 0;
  const std::string what = failure("/status/503", &requests, &secs);
  EXPECT_TRUE(contains(what, "exceeded the total deadline of 0.5 s (DTRAIN_DOWNLOAD_TIMEOUT_S) "
                             "after 2 attempt(s); the last failure: HTTP 503"))
      << what;
  EXPECT_EQ(requests, 2);  // 0.2 s, then a 0.4 s backoff would pass the deadline
  EXPECT_LT(secs, 1.0);
}

TEST_F(LimitsTest, BadEnvironmentValuesAreNamed) {
  {
    ScopedEnv deadline("DTRAIN_DOWNLOAD_TIMEOUT_S", "soon");
    try {
      download(server().url("/ok/small.bin"), dest_, opts_);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), "DTRAIN_DOWNLOAD_TIMEOUT_S='soon': expected a number"))
          << e.what();
    }
  }
  ScopedEnv cap("DTRAIN_DOWNLOAD_MAX_BYTES", "-5");
  try {
    download(server().url("/ok/small.bin"), dest_, opts_);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "DTRAIN_DOWNLOAD_MAX_BYTES='-5': expected a positive number"))
        << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dest_));
}

TEST_F(LimitsTest, CloseDelimitedBodyIsRefusedUnlessVerifiable) {
  int64_t requests = 0;
  std::string what = failure("/noclen/small.bin", &requests);
  EXPECT_TRUE(contains(what, "download of " + server().url("/noclen/small.bin") + " failed: " +
                                 server().url("/noclen/small.bin") +
                                 " sent 1000 bytes without a Content-Length or chunked encoding"))
      << what;
  EXPECT_TRUE(contains(what, "cannot be told from a complete one; refused")) << what;
  EXPECT_EQ(requests, 1);
  what = failure("/noclencut/small.bin");
  EXPECT_TRUE(contains(what, "sent 500 bytes without a Content-Length")) << what;

  // Accepted with a verifier, which then catches the early end.
  opts_.accept_close_delimited = true;
  opts_.verify = [](const std::string& part) -> std::string {
    return read_file(part) == served_files().small ? "" : "not the whole file";
  };
  what = failure("/noclencut/small.bin");
  EXPECT_TRUE(contains(what, "is corrupt after 3 attempt(s): not the whole file")) << what;
  download(server().url("/noclen/small.bin"), dest_, opts_);
  EXPECT_TRUE(read_file(dest_) == served_files().small);
}

TEST_F(LimitsTest, CrossHostRedirectIsRefusedUnlessAllowed) {
  const std::string from = server().url("/crosshost/ok/small.bin");
  const std::string to = "http://localhost:" + std::to_string(server().port()) + "/ok/small.bin";
  int64_t requests = 0;
  {
    ScopedEnv off("DTRAIN_ALLOW_CROSS_HOST_REDIRECTS", std::nullopt);
    const std::string what = failure("/crosshost/ok/small.bin", &requests);
    EXPECT_TRUE(contains(what, "download of " + from + " failed: refusing the redirect from " +
                                   from + " to " + to + ": it leads to another host (set "
                                   "DTRAIN_ALLOW_CROSS_HOST_REDIRECTS=1"))
        << what;
    EXPECT_EQ(requests, 1);
  }
  ScopedEnv on("DTRAIN_ALLOW_CROSS_HOST_REDIRECTS", "1");
  try {
    download(from, dest_, opts_);
    EXPECT_TRUE(read_file(dest_) == served_files().small);
  } catch (const DownloadError& e) {
    // Only when "localhost" does not resolve to 127.0.0.1 here.
    EXPECT_TRUE(contains(e.what(), "localhost")) << e.what();
  }
}

TEST(RedirectPolicyTest, SameHostAndUpgradesOnly) {
  auto u = [](const std::string& s) { return parse_url(s); };
  EXPECT_EQ(check_redirect(u("http://h/a"), u("http://h/b"), false), "");
  EXPECT_EQ(check_redirect(u("http://h/a"), u("https://h/b"), false), "");
  EXPECT_EQ(check_redirect(u("http://h:8000/a"), u("http://h:9000/b"), false), "");
  EXPECT_EQ(check_redirect(u("https://h/a"), u("https://H/b"), false), "");
  EXPECT_EQ(check_redirect(u("https://h/a"), u("http://h/a"), false),
            "refusing the redirect from https://h/a to http://h/a: it downgrades https to plain "
            "http (the checkpoint could be read or replaced on the way)");
  EXPECT_TRUE(contains(check_redirect(u("https://h/a"), u("http://h/a"), true), "downgrades"));
  EXPECT_TRUE(contains(check_redirect(u("http://h/a"), u("http://evil/a"), false),
                       "refusing the redirect from http://h/a to http://evil/a: it leads to "
                       "another host"));
  EXPECT_EQ(check_redirect(u("https://h/a"), u("https://bucket.s3.amazonaws.com/x?sig=1"), true),
            "");
}

// A real SIGTERM, caught the way the preemption watcher does (it records a stop request),
// abandons a download that would otherwise take minutes.
class StopRequestTest : public LimitsTest {
 protected:
  static void on_signal(int sig) { request_stop(sig); }

  void SetUp() override {
    LimitsTest::SetUp();
    clear_stop_request();
    struct sigaction sa {};
    sa.sa_handler = &StopRequestTest::on_signal;
    sigemptyset(&sa.sa_mask);
    ASSERT_EQ(::sigaction(SIGTERM, &sa, &old_), 0);
  }
  void TearDown() override {
    ::sigaction(SIGTERM, &old_, nullptr);
    clear_stop_request();
  }

  // Downloads `path`, sending this process SIGTERM after `after_s`; returns the
  // Interrupted's message and the seconds from the signal to the exception.
  std::pair<std::string, double> interrupted(const std::string& path, double after_s) {
    Clock::time_point sent;
    std::thread killer([&] {
      std::this_thread::sleep_for(std::chrono::duration<double>(after_s));
      sent = Clock::now();
      ::kill(::getpid(), SIGTERM);
    });
    std::string what;
    try {
      download(server().url(path), dest_, opts_);
      ADD_FAILURE() << "download of " << path << " was not interrupted";
    } catch (const Interrupted& e) {
      what = e.what();
      EXPECT_EQ(e.signal(), SIGTERM);
    }
    const double latency = seconds_since(sent);
    killer.join();
    EXPECT_FALSE(std::filesystem::exists(dest_));
    EXPECT_EQ(find_part_files(dir_), std::vector<std::string>{});
    return {what, latency};
  }

  struct sigaction old_ {};
};

TEST_F(StopRequestTest, SigtermStopsATrickleDownloadPromptly) {
  auto [what, latency] = interrupted("/trickle/1000/small.bin", 0.3);
  EXPECT_TRUE(contains(what, "download from " + server().url("/trickle/1000/small.bin") +
                                 ": interrupted by signal 15"))
      << what;
  EXPECT_LT(latency, 0.5);
  std::printf("SIGTERM during a trickle download: Interrupted %.3f s after the signal\n",
              latency);
}

TEST_F(StopRequestTest, SigtermStopsTheRetryBackoff) {
  opts_.backoff_s = 20;
  auto [what, latency] = interrupted("/status/503", 0.3);
  EXPECT_TRUE(contains(what, "download of " + server().url("/status/503") +
                                 ": interrupted by signal 15"))
      << what;
  EXPECT_LT(latency, 0.5);
}

TEST_F(StopRequestTest, FetchFileLeavesNothingInTheCache) {
  ScopedEnv cache("DTRAIN_CACHE", dir_ + "/cache");
  const std::string url = server().url("/trickle/1000/small.bin");
  Clock::time_point sent;
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    sent = Clock::now();
    ::kill(::getpid(), SIGTERM);
  });
  EXPECT_THROW(fetch_file(url, opts_), Interrupted);
  killer.join();
  EXPECT_LT(seconds_since(sent), 0.5);
  EXPECT_FALSE(std::filesystem::exists(cache_path_for(url)));
  EXPECT_EQ(find_part_files(dir_ + "/cache"), std::vector<std::string>{});
}

}  // namespace
}  // namespace dtrain::storage
