// Helpers for the storage tests: a loopback HTTP(S) server process (http_test_server.py)
// and the files it serves, plus the shared helpers of tests/test_util.h (temporary
// directories, file contents, environment overrides) under this namespace.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace dtrain::storage::testing {

// Runs http_test_server.py on 127.0.0.1 (an ephemeral port) serving `root`; https when
// cert/key are given. Stops it in the destructor (and the server exits by itself when
// this process dies: its stdin is a pipe from here). Not thread-safe.
class TestServer {
 public:
  TestServer(const std::string& root, const std::string& cert = "", const std::string& key = "");
  ~TestServer();
  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;

  // Whether the server started (false: python3 missing or it failed; see error()).
  bool ok() const { return port_ > 0; }
  const std::string& error() const { return error_; }
  int port() const { return port_; }

  // "http(s)://127.0.0.1:<port>" + path.
  std::string url(const std::string& path) const;

  // Requests served so far (GET /stats, which is not counted itself).
  int64_t requests() const;

 private:
  std::string scheme_;
  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  int port_ = 0;
  std::string error_;
};

// The files the test servers serve, written once per process under a temp root:
// small.bin (1000 bytes), big.bin (9 MiB + 7, beyond Beast's default 8 MiB body limit),
// ckpt/{checkpoint.h5, shard-00000-of-00002.h5, shard-00001-of-00002.h5}, and
// ckpt_missing/ with the same minus shard-00001-of-00002.h5.
struct ServedFiles {
  std::string root;
  std::string small;
  std::string big;
  std::map<std::string, std::string> ckpt;  // file name -> contents
};
const ServedFiles& served_files();

// The process-wide plain-HTTP test server over served_files(), started on first use.
// Check ok() and GTEST_SKIP() with error() when it is not.
TestServer& http_server();

// A new empty directory $TMPDIR/dtrain_storage_<tag>_XXXXXX (not removed automatically).
std::string make_temp_dir(const std::string& tag);

// `n` pseudo-random bytes from `seed` (deterministic).
std::string random_bytes(size_t n, uint32_t seed);

using testutil::read_file;
using testutil::write_file;

// Names in `dir` (not recursive, sorted); empty when it does not exist.
std::vector<std::string> list_dir(const std::string& dir);

// Names anywhere under `dir` containing ".part" (leftover temporaries).
std::vector<std::string> find_part_files(const std::string& dir);

// A loopback port that nothing listens on (bound and released).
int unused_port();

// Sets (or unsets, with nullopt) an environment variable for the object's lifetime.
using testutil::ScopedEnv;

}  // namespace dtrain::storage::testing
