// Internal to checkpoint/storage: one HTTP(S) GET over Boost.Beast, no redirects, no
// retries (download() in http_client.cpp builds those on top). Not a public interface.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "checkpoint/storage/url.h"

namespace dtrain::storage::internal {

// What one GET may take: time and bytes.
struct GetLimits {
  double timeout_s = 60;  // connect, TLS handshake, each read and write (<= 0: none)
  // The whole download's deadline (time_point::max(): none) and its length in seconds and
  // origin, for messages ("2 s (DTRAIN_DOWNLOAD_TIMEOUT_S)").
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  std::string deadline_what;
  uint64_t max_bytes = UINT64_MAX;  // body bytes allowed
  std::string max_bytes_what;       // where that cap comes from, for messages
};

// What one GET returned. The body was written to the file only for a 2xx status.
struct GetResult {
  int status = 0;
  std::string reason;                      // "Not Found"; the standard phrase when empty
  std::string location;                    // the Location header (redirects)
  std::optional<uint64_t> content_length;  // from the header, when the server sent one
  bool close_delimited = false;            // neither Content-Length nor chunked: the body
                                           // ended where the server closed the connection
  uint64_t bytes = 0;                      // body bytes written to the file
};

// GETs `url` on a new connection. For a 2xx response streams the whole body to the
// open file descriptor `fd` (named `fd_path` in messages) and returns once the body is
// complete; for any other status returns after the header. `limits.timeout_s` bounds
// each network operation (inactivity), `limits.deadline` the whole exchange, and
// `limits.max_bytes` the body (a larger Content-Length is refused before any body byte).
// Polls dtrain::stop_requested() while waiting and throws dtrain::Interrupted when it
// is set. Throws DownloadError (transient or not, see http_client.h) for network, TLS,
// protocol, deadline and size failures, and dtrain::Error for local write errors.
// Whether the environment variable `name` is set to 1, true, yes or on.
bool env_flag(const char* name);

GetResult http_get(const Url& url, int fd, const std::string& fd_path, const GetLimits& limits);

}  // namespace dtrain::storage::internal
