// HTTP(S) downloads to a local file: redirects (same host only, no https -> http), an
// idle timeout and a total deadline, a size cap, retries with backoff, an optional
// verification of the bytes, and an atomic rename into place.
//
//   storage::DownloadOptions opts;
//   opts.verify = [](const std::string& part) { return check_xxh64(part); };  // "" = good
//   storage::download("https://host/ckpt/shard-00000-of-00002.h5", "/cache/x.h5", opts);
//
// The body is streamed to a hidden part file beside the destination,
// "<dir>/.<name>.part-<pid>-<seq>-<host>", and renamed to `dest_path` only when it is
// complete (Content-Length matched, or the chunked / close-delimited body ended
// cleanly) and `verify` accepted it. Whatever fails, the part file is deleted and
// nothing appears at `dest_path`.
//
// Limits (docs/NETWORK.md): the body may have at most min(options.max_bytes,
// DTRAIN_DOWNLOAD_MAX_BYTES, default 64 GiB) bytes; the whole download, retries
// included, must end within DTRAIN_DOWNLOAD_TIMEOUT_S (default 3600 s); a body that ends
// only with the connection close (no Content-Length, not chunked) is accepted only with
// options.accept_close_delimited; a stop request (runtime/base/interrupt.h, set by the
// preemption watcher on SIGTERM) abandons the download within ~50 ms.
//
// https: TLS 1.2+ with SNI; the server certificate and host name are verified against
// the system store (OpenSSL's default paths) plus the PEM file named by DTRAIN_CA_BUNDLE;
// DTRAIN_INSECURE_TLS=1 disables verification (with a warning on every download).
//
// Thread-safe: concurrent downloads (threads or processes) use distinct part files; two
// downloads to the same `dest_path` both end with a complete file there (rename(2) is
// atomic), the later one replacing the earlier.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "checkpoint/storage/url.h"
#include "runtime/base/env.h"
#include "runtime/base/error.h"

namespace dtrain::storage {

// Checks a downloaded file (the part file, before it is renamed into place). Returns an
// empty string when it is good, otherwise what is wrong (e.g. "xxh64 0x12 != 0x34 in
// piece model/fc1.weight[0:512]"): the download counts as corrupt, is deleted and retried.
// An exception thrown by it deletes the part file and propagates unchanged (no retry).
using VerifyFn = std::function<std::string(const std::string& local_path)>;

// The default of DTRAIN_DOWNLOAD_MAX_BYTES (64 GiB) and of DTRAIN_DOWNLOAD_TIMEOUT_S.
inline constexpr uint64_t kDefaultMaxDownloadBytes = uint64_t{64} << 30;
inline constexpr double kDefaultDownloadDeadlineS = 3600;

struct DownloadOptions {
  int max_redirects = 5;   // 301/302/303/307/308 responses followed per attempt (>= 0)
  int retries = 3;         // further attempts after a transient failure (0 = try once)
  double timeout_s = 60;   // connect, TLS handshake, per-read/write inactivity (<= 0: none)
  double backoff_s = 0.5;  // sleep before the first retry, doubled each time (max 30 s)
  // The whole download's time, retries and backoff included (0: none); < 0 takes
  // DTRAIN_DOWNLOAD_TIMEOUT_S (default kDefaultDownloadDeadlineS).
  double deadline_s = -1;
  // This file's own size bound (0: none), e.g. from a checkpoint's index, and where it
  // comes from, named in the error. DTRAIN_DOWNLOAD_MAX_BYTES bounds every download too.
  uint64_t max_bytes = 0;
  std::string max_bytes_source;
  // Whether a body delimited only by the connection close (neither Content-Length nor
  // chunked) may be accepted. Such a body cut short looks complete, so set this only
  // when `verify` (or the caller's check of the file before using it) detects a
  // truncated file; otherwise it is refused (not retried).
  bool accept_close_delimited = false;
  VerifyFn verify;  // optional check of the complete file before it is published
  // Where the finished file is synced and renamed into place, and the cache's directories
  // are made (not owned): the real file system when null; a power-cutting Env in tests
  // (tests/powercut/fault_env.h). The body itself is written with plain write(2).
  Env* env = nullptr;
};

// A download that failed. `status()` is the HTTP status of the last response when the
// failure was an HTTP error (404, 503, ...), else 0; `transient()` says whether trying
// again later might succeed (connection refused/reset/closed early, timeout, 5xx, 408,
// 429, corrupt bytes).
class DownloadError : public Error {
 public:
  DownloadError(const std::string& what, int status, bool transient)
      : Error(what), status_(status), transient_(transient) {}
  int status() const { return status_; }
  bool transient() const { return transient_; }

 private:
  int status_;
  bool transient_;
};

// GETs `url` (http or https) into `dest_path` (its directory must exist), following up
// to options.max_redirects redirects and retrying transient failures options.retries
// times with exponential backoff. Throws DownloadError with the URL and the reason:
//   "HTTP 404 Not Found for http://127.0.0.1:8000/x"
//   "connection closed after 512 of 1024 bytes"
//   "timed out after 1 s waiting for the response header"
//   "too many redirects (max_redirects = 5)"
//   "refusing the redirect from https://a/x to http://a/x: ..."
//   "the body exceeds the 1048576 bytes allowed (DTRAIN_DOWNLOAD_MAX_BYTES): ..."
//   "exceeded the total deadline of 2 s (DTRAIN_DOWNLOAD_TIMEOUT_S) after 12 body bytes"
//   "download of <url> is corrupt after 4 attempts: <what verify said>"
// dtrain::Interrupted when a stop was requested (SIGTERM; see runtime/base/interrupt.h),
// and dtrain::Error for an invalid URL, an invalid DTRAIN_DOWNLOAD_* variable or a local
// I/O error (disk full, ...).
void download(const std::string& url, const std::string& dest_path,
              const DownloadOptions& options = {});

// The redirect policy: "" when download() follows a redirect from `from` to `to`, else
// why not (naming both URLs). Followed: the same host (any port) with the same scheme or
// http -> https. Refused: https -> http always; another host unless `allow_cross_host`
// (download() passes DTRAIN_ALLOW_CROSS_HOST_REDIRECTS=1, e.g. for S3 pre-signed URLs).
std::string check_redirect(const Url& from, const Url& to, bool allow_cross_host);

// The hidden part-file name download() uses for `dest_path` in this process and thread
// ("<dir>/.<name>.part-<pid>-<seq>-<host>"); every call returns a new one.
std::string part_path_for(const std::string& dest_path);

}  // namespace dtrain::storage
