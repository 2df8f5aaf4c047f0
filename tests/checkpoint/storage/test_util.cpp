// Storage test helpers (see test_util.h).
#include "tests/checkpoint/storage/test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "checkpoint/storage/http_client.h"

namespace dtrain::storage::testing {
namespace stdfs = std::filesystem;

TestServer::TestServer(const std::string& root, const std::string& cert, const std::string& key)
    : scheme_(cert.empty() ? "http" : "https") {
  if (::access(DTRAIN_PYTHON, X_OK) != 0) {
    error_ = std::string(DTRAIN_PYTHON) + " is not available";
    return;
  }
  int in_pipe[2], out_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) != 0 || ::pipe2(out_pipe, O_CLOEXEC) != 0) {
    error_ = "pipe failed";
    return;
  }
  // Built before fork(): the child may only make async-signal-safe calls.
  std::vector<std::string> args = {
      DTRAIN_PYTHON, DTRAIN_TEST_HTTP_SERVER, "--root", root, "--slow", "3", "--lifetime", "240"};
  if (!cert.empty()) args.insert(args.end(), {"--cert", cert, "--key", key});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ == 0) {
    ::dup2(in_pipe[0], 0);
    ::dup2(out_pipe[1], 1);
    ::close(in_pipe[1]);
    ::close(out_pipe[0]);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  stdin_fd_ = in_pipe[1];
  // Read "PORT <n>\n", waiting at most 20 s in total.
  std::string line;
  for (int waited_ms = 0; line.find('\n') == std::string::npos && waited_ms < 20000;) {
    pollfd p{out_pipe[0], POLLIN, 0};
    int rc = ::poll(&p, 1, 200);
    waited_ms += 200;
    if (rc <= 0) continue;
    char c[64];
    ssize_t n = ::read(out_pipe[0], c, sizeof c);
    if (n <= 0) break;
    line.append(c, static_cast<size_t>(n));
  }
  ::close(out_pipe[0]);
  if (line.rfind("PORT ", 0) == 0) {
    port_ = std::atoi(line.c_str() + 5);
  } else {
    error_ = "the test server did not start (output: '" + line + "')";
  }
}

TestServer::~TestServer() {
  if (stdin_fd_ >= 0) ::close(stdin_fd_);  // the server exits on EOF
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
}

std::string TestServer::url(const std::string& path) const {
  return scheme_ + "://127.0.0.1:" + std::to_string(port_) + path;
}

int64_t TestServer::requests() const {
  const std::string dir = make_temp_dir("stats");
  DownloadOptions opts;
  opts.retries = 0;
  opts.timeout_s = 10;
  download(url("/stats"), dir + "/stats", opts);
  return std::stoll(read_file(dir + "/stats"));
}

const ServedFiles& served_files() {
  static const ServedFiles files = [] {
    ServedFiles f;
    f.root = make_temp_dir("served");
    f.small = random_bytes(1000, 1);
    f.big = random_bytes((9 << 20) + 7, 2);
    f.ckpt = {{"checkpoint.h5", random_bytes(3000, 3)},
              {"shard-00000-of-00002.h5", random_bytes(5000, 4)},
              {"shard-00001-of-00002.h5", random_bytes(4999, 5)}};
    write_file(f.root + "/small.bin", f.small);
    write_file(f.root + "/big.bin", f.big);
    for (const auto& [name, data] : f.ckpt) {
      write_file(f.root + "/ckpt/" + name, data);
      if (name != "shard-00001-of-00002.h5") write_file(f.root + "/ckpt_missing/" + name, data);
    }
    return f;
  }();
  return files;
}

TestServer& http_server() {
  static TestServer server(served_files().root);
  return server;
}

std::string make_temp_dir(const std::string& tag) {
  return testutil::make_temp_dir("dtrain_storage_" + tag + "_");
}

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string out(n, '\0');
  for (auto& c : out) c = static_cast<char>(gen() & 0xff);
  return out;
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(dir, ec)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> find_part_files(const std::string& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& e : stdfs::recursive_directory_iterator(dir, ec)) {
    if (e.path().filename().string().find(".part") != std::string::npos) {
      found.push_back(e.path().string());
    }
  }
  return found;
}

int unused_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);
  ::close(s);
  return port;
}

}  // namespace dtrain::storage::testing
