// download() against a loopback HTTP server that misbehaves on request: redirects,
// loops, HTTP errors, transfers cut short, wrong bytes, stalls, refused connections.
#include "checkpoint/storage/http_client.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <stdexcept>

#include "tests/checkpoint/storage/test_util.h"

namespace dtrain::storage {
namespace {

using testing::find_part_files;
using testing::read_file;
using testing::served_files;

class DownloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!server().ok()) GTEST_SKIP() << server().error();
    dir_ = testing::make_temp_dir("download");
    dest_ = dir_ + "/out.bin";
    opts_.timeout_s = 5;  // only the timeout tests use short ones
    opts_.retries = 2;
    opts_.backoff_s = 0.01;
  }

  static testing::TestServer& server() { return testing::http_server(); }

  // Runs download() expecting a DownloadError; returns it. `requests` is set to the
  // number of requests the server saw meanwhile.
  DownloadError expect_failure(const std::string& path, int64_t* requests = nullptr) {
    const int64_t before = server().requests();
    try {
      download(server().url(path), dest_, opts_);
    } catch (const DownloadError& e) {
      if (requests) *requests = server().requests() - before;
      EXPECT_FALSE(std::filesystem::exists(dest_)) << "a failed download left " << dest_;
      EXPECT_EQ(find_part_files(dir_), std::vector<std::string>{});
      return e;
    }
    ADD_FAILURE() << "download of " << path << " did not fail";
    return DownloadError("no error", 0, false);
  }

  std::string dir_;
  std::string dest_;
  DownloadOptions opts_;
};

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST_F(DownloadTest, BigFileArrivesBitwiseEqual) {
  download(server().url("/ok/big.bin"), dest_, opts_);
  EXPECT_TRUE(read_file(dest_) == served_files().big);
  EXPECT_EQ(find_part_files(dir_), std::vector<std::string>{});
}

TEST_F(DownloadTest, ReplacesAnExistingFile) {
  testing::write_file(dest_, "old contents");
  download(server().url("/ok/small.bin"), dest_, opts_);
  EXPECT_TRUE(read_file(dest_) == served_files().small);
}

TEST_F(DownloadTest, FollowsRedirectsUpToTheLimit) {
  const int64_t before = server().requests();
  download(server().url("/redirect/5/ok/small.bin"), dest_, opts_);  // exactly max_redirects
  EXPECT_TRUE(read_file(dest_) == served_files().small);
  EXPECT_EQ(server().requests() - before, 6);
  std::filesystem::remove(dest_);
  download(server().url("/relredirect/ok/small.bin"), dest_, opts_);
  EXPECT_TRUE(read_file(dest_) == served_files().small);
  std::filesystem::remove(dest_);
  download(server().url("/absredirect/ok/small.bin"), dest_, opts_);
  EXPECT_TRUE(read_file(dest_) == served_files().small);
}

TEST_F(DownloadTest, TooManyRedirectsNamesTheLimit) {
  int64_t requests = 0;
  DownloadError e = expect_failure("/redirect/6/ok/small.bin", &requests);
  EXPECT_TRUE(contains(e.what(), "too many redirects (max_redirects = 5)")) << e.what();
  EXPECT_FALSE(e.transient());
  EXPECT_EQ(requests, 6);  // not retried

  opts_.max_redirects = 2;
  e = expect_failure("/loop", &requests);
  EXPECT_TRUE(contains(e.what(), "too many redirects (max_redirects = 2)")) << e.what();
  EXPECT_TRUE(contains(e.what(), "'/loop' (a redirect loop?)")) << e.what();
  EXPECT_EQ(e.status(), 302);
  EXPECT_EQ(requests, 3);
}

TEST_F(DownloadTest, NotFoundNamesStatusAndUrlWithoutRetrying) {
  int64_t requests = 0;
  DownloadError e = expect_failure("/ok/missing.bin", &requests);
  EXPECT_TRUE(contains(e.what(), "HTTP 404 Not Found for " + server().url("/ok/missing.bin")))
      << e.what();
  EXPECT_EQ(e.status(), 404);
  EXPECT_FALSE(e.transient());
  EXPECT_EQ(requests, 1);

  e = expect_failure("/redirect/1/ok/missing.bin");
  EXPECT_TRUE(contains(e.what(), "HTTP 404 Not Found for " + server().url("/ok/missing.bin") +
                                     " (redirected from " +
                                     server().url("/redirect/1/ok/missing.bin") + ")"))
      << e.what();
  e = expect_failure("/status/403");
  EXPECT_TRUE(contains(e.what(), "HTTP 403 Forbidden for")) << e.what();
}

TEST_F(DownloadTest, ServerErrorsAreRetried) {
  int64_t requests = 0;
  DownloadError e = expect_failure("/status/503", &requests);
  EXPECT_TRUE(contains(e.what(), "failed after 3 attempt(s): HTTP 503 Service Unavailable for " +
                                     server().url("/status/503")))
      << e.what();
  EXPECT_EQ(e.status(), 503);
  EXPECT_TRUE(e.transient());
  EXPECT_EQ(requests, 3);
}

TEST_F(DownloadTest, CutTransferIsRetriedThenFailsClearly) {
  int64_t requests = 0;
  DownloadError e = expect_failure("/cut/small.bin", &requests);
  EXPECT_TRUE(contains(e.what(), "download of " + server().url("/cut/small.bin") +
                                     " failed after 3 attempt(s): connection closed after 500 "
                                     "of 1000 bytes"))
      << e.what();
  EXPECT_EQ(requests, 3);
}

TEST_F(DownloadTest, BodiesWithoutContentLength) {
  download(server().url("/chunked/small.bin"), dest_, opts_);
  EXPECT_TRUE(read_file(dest_) == served_files().small);
  std::filesystem::remove(dest_);
  // Ended by the connection close: only accepted when the caller can verify the file.
  opts_.accept_close_delimited = true;
  download(server().url("/noclen/small.bin"), dest_, opts_);
  EXPECT_TRUE(read_file(dest_) == served_files().small);
  std::filesystem::remove(dest_);
  opts_.accept_close_delimited = false;
  DownloadError e = expect_failure("/chunkcut/small.bin");
  EXPECT_TRUE(contains(e.what(),
                       "failed after 3 attempt(s): connection closed after 500 bytes "
                       "(no Content-Length)"))
      << e.what();
}

TEST_F(DownloadTest, TransientFailuresRecoverOnRetry) {
  static int run = 0;  // a fresh query per run: the server counts per path and query
  const std::string path = "/flaky/2/small.bin?run=" + std::to_string(run++);
  const int64_t before = server().requests();
  download(server().url(path), dest_, opts_);  // cut twice, then whole
  EXPECT_TRUE(read_file(dest_) == served_files().small);
  EXPECT_EQ(server().requests() - before, 3);
  EXPECT_EQ(find_part_files(dir_), std::vector<std::string>{});
}

TEST_F(DownloadTest, WrongBytesFailVerificationAsCorrupt) {
  std::vector<std::string> verified;
  opts_.verify = [&](const std::string& part) -> std::string {
    verified.push_back(part);
    EXPECT_TRUE(std::filesystem::exists(part));
    EXPECT_EQ(std::filesystem::path(part).filename().string().rfind(".out.bin.part-", 0), 0u);
    return read_file(part) == served_files().small ? "" : "bytes differ from the expected file";
  };
  int64_t requests = 0;
  DownloadError e = expect_failure("/wrong/small.bin", &requests);
  EXPECT_TRUE(contains(e.what(), "download of " + server().url("/wrong/small.bin") +
                                     " is corrupt after 3 attempt(s): bytes differ from the "
                                     "expected file"))
      << e.what();
  EXPECT_EQ(requests, 3);
  EXPECT_EQ(verified.size(), 3u);

  download(server().url("/ok/small.bin"), dest_, opts_);  // the same check accepts good bytes
  EXPECT_TRUE(read_file(dest_) == served_files().small);
}

TEST_F(DownloadTest, VerifyExceptionPropagatesWithoutRetry) {
  opts_.verify = [](const std::string&) -> std::string {
    throw std::logic_error("index unreadable");
  };
  const int64_t before = server().requests();
  EXPECT_THROW(
      {
        try {
          download(server().url("/ok/small.bin"), dest_, opts_);
        } catch (const std::logic_error& e) {
          EXPECT_STREQ(e.what(), "index unreadable");
          throw;
        }
      },
      std::logic_error);
  EXPECT_EQ(server().requests() - before, 1);
  EXPECT_FALSE(std::filesystem::exists(dest_));
  EXPECT_EQ(find_part_files(dir_), std::vector<std::string>{});
}

TEST_F(DownloadTest, SlowHeaderTimesOut) {
  opts_.timeout_s = 0.5;
  opts_.retries = 1;
  int64_t requests = 0;
  DownloadError e = expect_failure("/slow/small.bin", &requests);
  EXPECT_TRUE(contains(e.what(),
                       "failed after 2 attempt(s): timed out after 0.5 s waiting for "
                       "the response header"))
      << e.what();
  EXPECT_TRUE(e.transient());
  EXPECT_EQ(requests, 2);
}

TEST_F(DownloadTest, StalledBodyTimesOut) {
  opts_.timeout_s = 0.5;
  opts_.retries = 0;
  DownloadError e = expect_failure("/stall/small.bin");
  EXPECT_TRUE(contains(e.what(),
                       "failed after 1 attempt(s): timed out after 0.5 s without data "
                       "while reading the body, after 500 of 1000 bytes"))
      << e.what();
}

TEST_F(DownloadTest, RefusedConnectionIsRetriedThenFails) {
  const std::string url = "http://127.0.0.1:" + std::to_string(testing::unused_port()) + "/x";
  opts_.retries = 1;
  try {
    download(url, dest_, opts_);
    FAIL() << "expected an error";
  } catch (const DownloadError& e) {
    EXPECT_TRUE(contains(e.what(), "download of " + url +
                                       " failed after 2 attempt(s): cannot "
                                       "connect to 127.0.0.1:"))
        << e.what();
    EXPECT_TRUE(contains(e.what(), "refused")) << e.what();
  }
  EXPECT_EQ(find_part_files(dir_), std::vector<std::string>{});
}

TEST_F(DownloadTest, InvalidUrlIsRejectedBeforeAnyRequest) {
  try {
    download("ftp://127.0.0.1/x", dest_, opts_);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "unsupported scheme 'ftp'")) << e.what();
  }
  EXPECT_EQ(testing::list_dir(dir_), std::vector<std::string>{});
}

}  // namespace
}  // namespace dtrain::storage
