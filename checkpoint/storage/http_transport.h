// Internal to checkpoint/storage: one HTTP(S) GET over Boost.Beast, no redirects, no
// retries (download() in http_client.cpp builds those on top). Not a public interface.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "checkpoint/storage/url.h"

namespace dtrain::storage::internal {

// What one GET returned. The body was written to the file only for a 2xx status.
struct GetResult {
  int status = 0;
  std::string reason;                      // "Not Found"; the standard phrase when empty
  std::string location;                    // the Location header (redirects)
  std::optional<uint64_t> content_length;  // from the header, when the server sent one
  uint64_t bytes = 0;                      // body bytes written to the file
};

// GETs `url` on a new connection. For a 2xx response streams the whole body to the
// open file descriptor `fd` (named `fd_path` in messages) and returns once the body is
// complete; for any other status returns after the header. `timeout_s` bounds the
// connect, the TLS handshake and each read and write (inactivity, not total time).
// Throws DownloadError (transient or not, see http_client.h) for network, TLS and
// protocol failures, and dtrain::Error for local write errors.
GetResult http_get(const Url& url, int fd, const std::string& fd_path, double timeout_s);

}  // namespace dtrain::storage::internal
