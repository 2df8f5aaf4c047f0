// download() over TLS against loopback servers with self-signed certificates made by the
// openssl CLI at test time: verification with DTRAIN_CA_BUNDLE, failures without it or
// for the wrong host name, DTRAIN_INSECURE_TLS, and the same cut-transfer handling.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "checkpoint/storage/cache.h"
#include "checkpoint/storage/http_client.h"
#include "tests/checkpoint/storage/test_util.h"

namespace dtrain::storage {
namespace {

namespace stdfs = std::filesystem;
using testing::read_file;
using testing::ScopedEnv;
using testing::served_files;
using testing::TestServer;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Self-signed certificate + key for `san` (e.g. "IP:127.0.0.1"); false when openssl fails.
bool make_cert(const std::string& dir, const std::string& cn, const std::string& san) {
  const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=" + cn +
                          " -addext subjectAltName=" + san + " -keyout " + dir + "/" + cn +
                          ".key -out " + dir + "/" + cn + ".pem > " + dir + "/openssl.log 2>&1";
  return std::system(cmd.c_str()) == 0;
}

class HttpsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    certs_ = new std::string(testing::make_temp_dir("certs"));
    if (std::system("openssl version > /dev/null 2>&1") != 0) {
      skip_ = new std::string("the openssl CLI is not available");
      return;
    }
    if (!make_cert(*certs_, "127.0.0.1", "IP:127.0.0.1") ||
        !make_cert(*certs_, "wrong.example", "DNS:wrong.example")) {
      skip_ = new std::string("openssl could not make a certificate: " +
                              read_file(*certs_ + "/openssl.log"));
      return;
    }
    good_ =
        new TestServer(served_files().root, *certs_ + "/127.0.0.1.pem", *certs_ + "/127.0.0.1.key");
    wrong_host_ = new TestServer(served_files().root, *certs_ + "/wrong.example.pem",
                                 *certs_ + "/wrong.example.key");
    if (!good_->ok()) skip_ = new std::string(good_->error());
  }

  static void TearDownTestSuite() {
    delete good_;
    delete wrong_host_;
    good_ = wrong_host_ = nullptr;
  }

  void SetUp() override {
    if (skip_) GTEST_SKIP() << *skip_;
    dir_ = testing::make_temp_dir("https");
    dest_ = dir_ + "/out.bin";
    opts_.timeout_s = 5;
    opts_.retries = 1;
    opts_.backoff_s = 0.01;
  }

  std::string ca() const { return *certs_ + "/127.0.0.1.pem"; }

  // Downloads expecting a DownloadError; checks nothing was left behind.
  std::string failure(const std::string& url) {
    try {
      download(url, dest_, opts_);
    } catch (const DownloadError& e) {
      EXPECT_FALSE(stdfs::exists(dest_));
      EXPECT_EQ(testing::find_part_files(dir_), std::vector<std::string>{});
      return e.what();
    }
    ADD_FAILURE() << url << " did not fail";
    return "";
  }

  static std::string* certs_;
  static std::string* skip_;
  static TestServer* good_;
  static TestServer* wrong_host_;
  std::string dir_;
  std::string dest_;
  DownloadOptions opts_;
};

std::string* HttpsTest::certs_ = nullptr;
std::string* HttpsTest::skip_ = nullptr;
TestServer* HttpsTest::good_ = nullptr;
TestServer* HttpsTest::wrong_host_ = nullptr;

TEST_F(HttpsTest, VerifiedDownloadWithCaBundle) {
  ScopedEnv bundle("DTRAIN_CA_BUNDLE", ca());
  ScopedEnv insecure("DTRAIN_INSECURE_TLS", std::nullopt);
  download(good_->url("/ok/big.bin"), dest_, opts_);
  EXPECT_TRUE(read_file(dest_) == served_files().big);
  stdfs::remove(dest_);
  download(good_->url("/redirect/2/ok/small.bin"), dest_, opts_);
  EXPECT_TRUE(read_file(dest_) == served_files().small);

  ScopedEnv cache("DTRAIN_CACHE", dir_ + "/cache");
  const std::string local = fetch_directory(
      good_->url("/ok/ckpt"), {"checkpoint.h5", "shard-00000-of-00002.h5"}, {}, opts_);
  EXPECT_TRUE(read_file(local + "/checkpoint.h5") == served_files().ckpt.at("checkpoint.h5"));
}

TEST_F(HttpsTest, CutTransferOverTls) {
  ScopedEnv bundle("DTRAIN_CA_BUNDLE", ca());
  const std::string what = failure(good_->url("/cut/small.bin"));
  EXPECT_TRUE(contains(what,
                       "failed after 2 attempt(s): connection closed after 500 of 1000 "
                       "bytes"))
      << what;
}

TEST_F(HttpsTest, DowngradeToPlainHttpIsRefused) {
  ScopedEnv bundle("DTRAIN_CA_BUNDLE", ca());
  ScopedEnv cross("DTRAIN_ALLOW_CROSS_HOST_REDIRECTS", "1");  // allows no downgrade
  const int64_t before = good_->requests();
  const std::string what = failure(good_->url("/downgrade/ok/small.bin"));
  EXPECT_TRUE(contains(what, "download of " + good_->url("/downgrade/ok/small.bin") +
                                 " failed: refusing the redirect from " +
                                 good_->url("/downgrade/ok/small.bin") + " to http://127.0.0.1:" +
                                 std::to_string(good_->port()) +
                                 "/ok/small.bin: it downgrades https to plain http"))
      << what;
  EXPECT_EQ(good_->requests() - before, 1);  // neither followed nor retried
}

TEST_F(HttpsTest, UntrustedCertificateFailsWithoutRetry) {
  ScopedEnv bundle("DTRAIN_CA_BUNDLE", std::nullopt);
  ScopedEnv insecure("DTRAIN_INSECURE_TLS", std::nullopt);
  const std::string what = failure(good_->url("/ok/small.bin"));
  EXPECT_TRUE(contains(what, "download of " + good_->url("/ok/small.bin") +
                                 " failed: TLS certificate verification failed for 127.0.0.1:" +
                                 std::to_string(good_->port()) + ": self-signed certificate"))
      << what;
  EXPECT_TRUE(contains(what, "DTRAIN_CA_BUNDLE=<PEM file>")) << what;
}

TEST_F(HttpsTest, CertificateForAnotherHostIsRejected) {
  if (!wrong_host_->ok()) GTEST_SKIP() << wrong_host_->error();
  ScopedEnv bundle("DTRAIN_CA_BUNDLE", *certs_ + "/wrong.example.pem");
  ScopedEnv insecure("DTRAIN_INSECURE_TLS", std::nullopt);
  const std::string what = failure(wrong_host_->url("/ok/small.bin"));
  EXPECT_TRUE(contains(what, "TLS certificate verification failed for 127.0.0.1:" +
                                 std::to_string(wrong_host_->port()) +
                                 ": the certificate is not valid for host '127.0.0.1'"))
      << what;
}

TEST_F(HttpsTest, InsecureTlsSkipsVerification) {
  ScopedEnv bundle("DTRAIN_CA_BUNDLE", std::nullopt);
  ScopedEnv insecure("DTRAIN_INSECURE_TLS", "1");
  download(good_->url("/ok/small.bin"), dest_, opts_);
  EXPECT_TRUE(read_file(dest_) == served_files().small);
}

TEST_F(HttpsTest, MissingCaBundleFileIsAClearError) {
  ScopedEnv bundle("DTRAIN_CA_BUNDLE", dir_ + "/no-such.pem");
  ScopedEnv insecure("DTRAIN_INSECURE_TLS", std::nullopt);
  const std::string what = failure(good_->url("/ok/small.bin"));
  EXPECT_TRUE(contains(what, "cannot load DTRAIN_CA_BUNDLE='" + dir_ + "/no-such.pem'")) << what;
}

}  // namespace
}  // namespace dtrain::storage
