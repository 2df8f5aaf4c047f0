// download(): the redirect policy, size cap, total deadline, retries with backoff,
// verification and the atomic rename into place, over the single-GET transport of
// http_transport.cpp (see http_client.h).
#include "checkpoint/storage/http_client.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "checkpoint/storage/http_transport.h"
#include "checkpoint/storage/url.h"
#include "runtime/base/env.h"
#include "runtime/base/fs.h"
#include "runtime/base/interrupt.h"
#include "runtime/base/logging.h"

namespace dtrain::storage {
namespace {

constexpr double kMaxBackoffS = 30;
constexpr auto kSleepSlice = std::chrono::milliseconds(50);  // stop requests seen within

using Clock = std::chrono::steady_clock;

// DTRAIN_DOWNLOAD_MAX_BYTES: bytes, optionally with a binary suffix K, M, G or T ("64G").
uint64_t env_max_bytes() {
  const char* v = std::getenv("DTRAIN_DOWNLOAD_MAX_BYTES");
  if (v == nullptr || *v == '\0') return kDefaultMaxDownloadBytes;
  char* end = nullptr;
  errno = 0;
  const unsigned long long n = std::strtoull(v, &end, 10);
  int shift = 0;
  if (end != v && *end != '\0' && end[1] == '\0') {
    const char* kSuffixes = "KMGT";
    const char* at = std::strchr(kSuffixes, std::toupper(static_cast<unsigned char>(*end)));
    if (at != nullptr) {
      shift = 10 * static_cast<int>(at - kSuffixes + 1);
      ++end;
    }
  }
  DTRAIN_CHECK(end != v && *end == '\0' && errno == 0 && n > 0 && v[0] != '-' &&
                   (n >> (64 - std::max(shift, 1))) == 0,
               "DTRAIN_DOWNLOAD_MAX_BYTES='{}': expected a positive number of bytes, optionally "
               "with a suffix K, M, G or T (e.g. 64G)",
               v);
  return static_cast<uint64_t>(n) << shift;
}

// DTRAIN_DOWNLOAD_TIMEOUT_S: seconds (0: none).
double env_deadline_s() {
  const char* v = std::getenv("DTRAIN_DOWNLOAD_TIMEOUT_S");
  if (v == nullptr || *v == '\0') return kDefaultDownloadDeadlineS;
  char* end = nullptr;
  const double d = std::strtod(v, &end);
  DTRAIN_CHECK(end != v && *end == '\0' && std::isfinite(d) && d >= 0,
               "DTRAIN_DOWNLOAD_TIMEOUT_S='{}': expected a number of seconds >= 0 (0: no limit)",
               v);
  return d;
}

// The limits of one download: the body cap and where it comes from, the inactivity
// timeout, and the total deadline (starting now) and where it comes from.
internal::GetLimits limits_for(const DownloadOptions& options) {
  internal::GetLimits limits;
  limits.timeout_s = options.timeout_s;
  const uint64_t env_cap = env_max_bytes();
  const bool env_set = std::getenv("DTRAIN_DOWNLOAD_MAX_BYTES") != nullptr &&
                       *std::getenv("DTRAIN_DOWNLOAD_MAX_BYTES") != '\0';
  if (options.max_bytes > 0 && options.max_bytes <= env_cap) {
    limits.max_bytes = options.max_bytes;
    limits.max_bytes_what =
        options.max_bytes_source.empty() ? "the caller's limit" : options.max_bytes_source;
  } else {
    limits.max_bytes = env_cap;
    limits.max_bytes_what = env_set ? "DTRAIN_DOWNLOAD_MAX_BYTES"
                                    : "the default of DTRAIN_DOWNLOAD_MAX_BYTES";
  }
  const double deadline_s = options.deadline_s >= 0 ? options.deadline_s : env_deadline_s();
  if (deadline_s > 0) {
    limits.deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(deadline_s));
    limits.deadline_what = fmt::format(
        "{} s ({})", deadline_s,
        options.deadline_s >= 0 ? "DownloadOptions::deadline_s" : "DTRAIN_DOWNLOAD_TIMEOUT_S");
  }
  return limits;
}

// Sleeps `seconds` in slices, throwing Interrupted as soon as a stop is requested.
void sleep_interruptibly(double seconds, const std::string& what) {
  const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(std::max(0.0, seconds)));
  for (;;) {
    throw_if_stop_requested(what);
    const auto now = Clock::now();
    if (now >= until) return;
    std::this_thread::sleep_for(std::min<Clock::duration>(until - now, kSleepSlice));
  }
}

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

  // close, reporting errors (a failed close can mean lost data on NFS); the caller
  // syncs the file through its Env.
  void close(const std::string& path) {
    int rc = ::close(fd_);
    fd_ = -1;
    DTRAIN_CHECK(rc == 0, "cannot close '{}': {}", path, std::strerror(errno));
  }

 private:
  int fd_;
};

// One attempt: GETs `start` into the open part file, following redirects. Returns the
// number of body bytes. Throws DownloadError (with its transient flag), Interrupted or
// dtrain::Error.
uint64_t attempt(const Url& start, File& part, const std::string& part_path,
                 const DownloadOptions& options, const internal::GetLimits& limits) {
  const bool allow_cross_host = internal::env_flag("DTRAIN_ALLOW_CROSS_HOST_REDIRECTS");
  Url url = start;
  for (int hops = 0;; ++hops) {
    internal::GetResult got = internal::http_get(url, part.get(), part_path, limits);
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
      if (std::string refusal = check_redirect(url, next, allow_cross_host); !refusal.empty()) {
        throw DownloadError(refusal, got.status, false);
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
    if (got.close_delimited && !options.accept_close_delimited) {
      throw DownloadError(
          fmt::format("{} sent {} bytes without a Content-Length or chunked encoding, ended only "
                      "by closing the connection, so a body cut short cannot be told from a "
                      "complete one; refused (only file formats that can be verified, such as "
                      ".pt/.pth/.safetensors weights and checkpoint files, are accepted this way)",
                      url.str(), got.bytes),
          got.status, false);
    }
    return got.bytes;
  }
}

}  // namespace

std::string check_redirect(const Url& from, const Url& to, bool allow_cross_host) {
  if (from.scheme == "https" && to.scheme != "https") {
    return fmt::format("refusing the redirect from {} to {}: it downgrades https to plain http "
                       "(the checkpoint could be read or replaced on the way)",
                       from.str(), to.str());
  }
  if (from.host != to.host && !allow_cross_host) {
    return fmt::format("refusing the redirect from {} to {}: it leads to another host (set "
                       "DTRAIN_ALLOW_CROSS_HOST_REDIRECTS=1 to follow redirects to other hosts, "
                       "e.g. to S3 pre-signed URLs)",
                       from.str(), to.str());
  }
  return "";
}

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
  const internal::GetLimits limits = limits_for(options);
  const std::string what = "download of " + url;
  Env& env = options.env != nullptr ? *options.env : Env::posix();
  for (int k = 1;; ++k) {
    const std::string part_path = part_path_for(dest_path);
    std::string failure;  // why this attempt failed, when it is worth retrying
    bool corrupt = false;
    int status = 0;
    try {
      File part(part_path);
      uint64_t bytes = attempt(start, part, part_path, options, limits);
      part.close(part_path);
      env.sync(part_path);
      if (options.verify) failure = options.verify(part_path);
      if (failure.empty()) {
        fs::rename_durable(part_path, dest_path, env);
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        DTRAIN_LOG_INFO_RANK("downloaded {} -> {} ({} bytes in {:.2f} s, {} attempt(s))", url, dest_path,
                        bytes, secs, k);
        return;
      }
      corrupt = true;
    } catch (const DownloadError& e) {
      fs::remove_quietly(part_path, env);
      if (!e.transient()) {
        throw DownloadError(fmt::format("download of {} failed: {}", url, e.what()), e.status(),
                            false);
      }
      failure = e.what();
      status = e.status();
    } catch (...) {
      fs::remove_quietly(part_path, env);
      throw;
    }
    fs::remove_quietly(part_path, env);
    if (k >= attempts) {
      throw DownloadError(
          corrupt
              ? fmt::format("download of {} is corrupt after {} attempt(s): {}", url, k, failure)
              : fmt::format("download of {} failed after {} attempt(s): {}", url, k, failure),
          status, true);
    }
    const double backoff = std::min(kMaxBackoffS, options.backoff_s * std::pow(2.0, k - 1));
    if (Clock::now() + std::chrono::duration_cast<Clock::duration>(
                           std::chrono::duration<double>(backoff)) >= limits.deadline) {
      throw DownloadError(fmt::format("download of {} failed: exceeded the total deadline of {} "
                                      "after {} attempt(s); the last failure: {}{}",
                                      url, limits.deadline_what, k, corrupt ? "corrupt: " : "",
                                      failure),
                          status, false);
    }
    DTRAIN_LOG_WARN_RANK("download of {} failed (attempt {} of {}): {}{}; retrying in {:.2f} s", url, k,
                    attempts, corrupt ? "corrupt: " : "", failure, backoff);
    sleep_interruptibly(backoff, what);
  }
}

}  // namespace dtrain::storage
