// download(): redirects, retries with backoff, verification and the atomic rename into
// place, over the single-GET transport of http_transport.cpp (see http_client.h).
#include "checkpoint/storage/http_client.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <thread>

#include "checkpoint/storage/http_transport.h"
#include "checkpoint/storage/url.h"
#include "runtime/base/fs.h"
#include "runtime/base/logging.h"

namespace dtrain::storage {
namespace {

constexpr double kMaxBackoffS = 30;

bool is_redirect(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

// 408 Request Timeout, 429 Too Many Requests and 5xx may go away by themselves.
bool is_transient_status(int status) { return status == 408 || status == 429 || status >= 500; }

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "host";
  std::string s(buf);
  for (char& c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') c = '_';
  }
  return s;
}

// Owns an open file descriptor.
class File {
 public:
  explicit File(const std::string& path)
      : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) {
    DTRAIN_CHECK(fd_ >= 0, "cannot create '{}': {}", path, std::strerror(errno));
  }
  ~File() {
    if (fd_ >= 0) ::close(fd_);
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  int get() const { return fd_; }

  // fsync + close, reporting errors (a failed close can mean lost data on NFS).
  void close_durably(const std::string& path) {
    DTRAIN_CHECK(::fsync(fd_) == 0, "cannot fsync '{}': {}", path, std::strerror(errno));
    int rc = ::close(fd_);
    fd_ = -1;
    DTRAIN_CHECK(rc == 0, "cannot close '{}': {}", path, std::strerror(errno));
  }

 private:
  int fd_;
};

// Removes `path` if it exists; never throws (used on failure paths).
void remove_quietly(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove(path, ec);
}

// One attempt: GETs `start` into the open part file, following redirects. Returns the
// number of body bytes. Throws DownloadError (with its transient flag) or dtrain::Error.
uint64_t attempt(const Url& start, File& part, const std::string& part_path,
                 const DownloadOptions& options) {
  Url url = start;
  for (int hops = 0;; ++hops) {
    internal::GetResult got = internal::http_get(url, part.get(), part_path, options.timeout_s);
    if (is_redirect(got.status)) {
      if (got.location.empty()) {
        throw DownloadError(fmt::format("HTTP {} {} without a Location header for {}", got.status,
                                        got.reason, url.str()),
                            got.status, false);
      }
      if (hops >= options.max_redirects) {
        throw DownloadError(
            fmt::format("too many redirects (max_redirects = {}) starting at {}; the last one, "
                        "from {}, pointed to '{}' (a redirect loop?)",
                        options.max_redirects, start.str(), url.str(), got.location),
            got.status, false);
      }
      Url next = resolve_location(url, got.location);
      if (url.scheme == "https" && next.scheme == "http") {
        DTRAIN_LOG_WARN_RANK("{} redirects from https to plain http: {}", url.str(), next.str());
      }
      DTRAIN_LOG_DEBUG("HTTP {} redirect: {} -> {}", got.status, url.str(), next.str());
      url = next;
      continue;
    }
    if (got.status < 200 || got.status >= 300 || got.status == 206) {
      std::string via =
          url.str() == start.str() ? "" : fmt::format(" (redirected from {})", start.str());
      throw DownloadError(
          fmt::format("HTTP {} {} for {}{}", got.status, got.reason, url.str(), via), got.status,
          is_transient_status(got.status));
    }
    return got.bytes;
  }
}

}  // namespace

std::string part_path_for(const std::string& dest_path) {
  static std::atomic<uint64_t> seq{0};
  static const std::string host = host_name();
  std::filesystem::path p(dest_path);
  std::string name = "." + p.filename().string() + ".part-" + std::to_string(::getpid()) + "-" +
                     std::to_string(seq.fetch_add(1)) + "-" + host;
  return (p.parent_path() / name).string();
}

void download(const std::string& url, const std::string& dest_path,
              const DownloadOptions& options) {
  const Url start = parse_url(url);
  const int attempts = 1 + std::max(0, options.retries);
  const auto t0 = std::chrono::steady_clock::now();
  for (int k = 1;; ++k) {
    const std::string part_path = part_path_for(dest_path);
    std::string failure;  // why this attempt failed, when it is worth retrying
    bool corrupt = false;
    int status = 0;
    try {
      File part(part_path);
      uint64_t bytes = attempt(start, part, part_path, options);
      part.close_durably(part_path);
      if (options.verify) failure = options.verify(part_path);
      if (failure.empty()) {
        fs::rename_durable(part_path, dest_path);
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        DTRAIN_LOG_INFO_RANK("downloaded {} -> {} ({} bytes in {:.2f} s, {} attempt(s))", url, dest_path,
                        bytes, secs, k);
        return;
      }
      corrupt = true;
    } catch (const DownloadError& e) {
      remove_quietly(part_path);
      if (!e.transient()) {
        throw DownloadError(fmt::format("download of {} failed: {}", url, e.what()), e.status(),
                            false);
      }
      failure = e.what();
      status = e.status();
    } catch (...) {
      remove_quietly(part_path);
      throw;
    }
    remove_quietly(part_path);
    if (k >= attempts) {
      throw DownloadError(
          corrupt
              ? fmt::format("download of {} is corrupt after {} attempt(s): {}", url, k, failure)
              : fmt::format("download of {} failed after {} attempt(s): {}", url, k, failure),
          status, true);
    }
    const double backoff = std::min(kMaxBackoffS, options.backoff_s * std::pow(2.0, k - 1));
    DTRAIN_LOG_WARN_RANK("download of {} failed (attempt {} of {}): {}{}; retrying in {:.2f} s", url, k,
                    attempts, corrupt ? "corrupt: " : "", failure, backoff);
    std::this_thread::sleep_for(std::chrono::duration<double>(std::max(0.0, backoff)));
  }
}

}  // namespace dtrain::storage
