// One HTTP(S) GET with Boost.Beast (see http_transport.h). Each network operation is
// started asynchronously and the private io_context is run in short slices until it
// completes, so that beast::tcp_stream's expires_after() timeouts apply (they do not to
// Beast's sync calls) and, between slices, the total deadline and a stop request
// (SIGTERM) cancel the operation.
#include "checkpoint/storage/http_transport.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "checkpoint/storage/http_client.h"
#include "runtime/base/interrupt.h"
#include "runtime/base/logging.h"

namespace dtrain::storage::internal {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

constexpr size_t kBodyBufferBytes = 1 << 20;  // body bytes handed to write(2) at most
constexpr size_t kSocketReadBytes = 1 << 16;  // Beast's largest read_some during a parse
// How often a running operation checks the deadline and the stop request.
constexpr std::chrono::milliseconds kPollInterval{50};

bool is_closed_early(const beast::error_code& ec) {
  return ec == http::error::partial_message || ec == http::error::end_of_stream ||
         ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::connection_aborted || ec == asio::error::broken_pipe ||
         ec == ssl::error::stream_truncated;
}

void write_all(int fd, const char* data, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    DTRAIN_CHECK(w >= 0, "cannot write downloaded bytes to '{}': {}", path, std::strerror(errno));
    data += w;
    n -= static_cast<size_t>(w);
  }
}

class Get {
 public:
  Get(const Url& url, int fd, const std::string& fd_path, const GetLimits& limits)
      : url_(url),
        fd_(fd),
        fd_path_(fd_path),
        timeout_(std::chrono::milliseconds(static_cast<int64_t>(limits.timeout_s * 1000))),
        timeout_s_(limits.timeout_s),
        limits_(limits) {}

  GetResult run() {
    tcp::resolver resolver(ioc_);
    beast::error_code ec;
    auto endpoints = resolver.resolve(url_.host, std::to_string(url_.port), ec);
    if (ec) {
      bool transient = ec == asio::error::host_not_found_try_again;
      throw DownloadError(fmt::format("cannot resolve host '{}': {}", url_.host, ec.message()), 0,
                          transient);
    }
    if (url_.scheme == "https") return run_tls(endpoints);
    beast::tcp_stream stream(ioc_);
    connect(stream, endpoints);
    GetResult result = exchange(stream, stream);
    stream.socket().shutdown(tcp::socket::shutdown_both, ec);
    return result;
  }

 private:
  GetResult run_tls(const tcp::resolver::results_type& endpoints) {
    ssl::context ctx(ssl::context::tls_client);
    SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
    const bool insecure = env_flag("DTRAIN_INSECURE_TLS");
    if (insecure) {
      DTRAIN_LOG_WARN_RANK(
          "DTRAIN_INSECURE_TLS is set: NOT verifying the TLS certificate of {} (anyone on the "
          "network path can substitute the checkpoint)",
          url_.host_header());
      ctx.set_verify_mode(ssl::verify_none);
    } else {
      beast::error_code ec;
      ctx.set_default_verify_paths(ec);
      if (ec) DTRAIN_LOG_WARN_RANK("cannot load the system CA store: {}", ec.message());
      if (const char* bundle = std::getenv("DTRAIN_CA_BUNDLE"); bundle && *bundle) {
        ctx.load_verify_file(bundle, ec);
        if (ec) {
          throw DownloadError(fmt::format("cannot load DTRAIN_CA_BUNDLE='{}' (a PEM file of CA "
                                          "certificates): {}",
                                          bundle, ec.message()),
                              0, false);
        }
      }
      ctx.set_verify_mode(ssl::verify_peer);
    }
    beast::ssl_stream<beast::tcp_stream> stream(ioc_, ctx);
    beast::error_code ec;
    asio::ip::make_address(url_.host, ec);
    const bool is_ip = !ec;
    if (!is_ip) SSL_set_tlsext_host_name(stream.native_handle(), url_.host.c_str());  // SNI
    if (!insecure) {
      // host_name_verification, remembering when it was the host name that did not match
      // (OpenSSL then reports only "unspecified certificate verification error").
      stream.set_verify_callback([this, check = ssl::host_name_verification(url_.host)](
                                     bool preverified, ssl::verify_context& vctx) mutable {
        const bool ok = check(preverified, vctx);
        if (preverified && !ok) host_mismatch_ = true;
        return ok;
      });
    }
    connect(beast::get_lowest_layer(stream), endpoints);
    arm_timeout(beast::get_lowest_layer(stream));
    ec = run_op(beast::get_lowest_layer(stream), [&](auto handler) {
      stream.async_handshake(ssl::stream_base::client, std::move(handler));
    });
    if (ec) throw handshake_error(stream, ec);
    // No TLS shutdown: the body is complete (or its end was checked) by then, and some
    // servers never answer close_notify; the TCP connection is just closed.
    return exchange(stream, beast::get_lowest_layer(stream));
  }

  // Starts one asynchronous operation on `stream` (or a layer above it) with a handler that
  // records its error code, then runs the io_context until no work is left (the operation
  // and its timeout timer). Every kPollInterval it checks the stop request and the
  // deadline; either cancels the operation and throws (Interrupted or DownloadError).
  template <class Initiate>
  beast::error_code run_op(beast::tcp_stream& stream, Initiate&& initiate) {
    beast::error_code result = asio::error::operation_aborted;
    bool done = false;
    initiate([&result, &done](beast::error_code ec, auto&&...) {
      result = ec;
      done = true;
    });
    ioc_.restart();
    bool cancelled = false;
    while (!done && !ioc_.stopped()) {
      ioc_.run_for(kPollInterval);
      if (done || cancelled) continue;
      if (stop_requested() != 0 || std::chrono::steady_clock::now() >= limits_.deadline) {
        stream.cancel();  // the operation completes with operation_aborted
        cancelled = true;
      }
    }
    if (cancelled) {
      throw_if_stop_requested(fmt::format("download from {}", url_.str()));
      throw deadline_error();
    }
    return result;
  }

  DownloadError deadline_error() const {
    return DownloadError(fmt::format("exceeded the total deadline of {} after {} body bytes",
                                     limits_.deadline_what, body_bytes_),
                         0, false);
  }

  // Bounds the next operation on `stream` by the timeout (none when timeout_s <= 0).
  void arm_timeout(beast::tcp_stream& stream) {
    if (timeout_s_ > 0) {
      stream.expires_after(timeout_);
    } else {
      stream.expires_never();
    }
  }

  void connect(beast::tcp_stream& stream, const tcp::resolver::results_type& endpoints) {
    arm_timeout(stream);
    beast::error_code ec =
        run_op(stream, [&](auto handler) { stream.async_connect(endpoints, std::move(handler)); });
    if (ec == beast::error::timeout) {
      throw DownloadError(
          fmt::format("timed out after {} s connecting to {}", timeout_s_, url_.host_header()), 0,
          true);
    }
    if (ec) {
      throw DownloadError(fmt::format("cannot connect to {}: {}", url_.host_header(), ec.message()),
                          0, true);
    }
  }

  DownloadError handshake_error(beast::ssl_stream<beast::tcp_stream>& stream,
                                const beast::error_code& ec) {
    if (ec == beast::error::timeout) {
      return DownloadError(fmt::format("timed out after {} s in the TLS handshake with {}",
                                       timeout_s_, url_.host_header()),
                           0, true);
    }
    if (ec.category() == asio::error::get_ssl_category()) {
      long verify = SSL_get_verify_result(stream.native_handle());
      std::string why = ec.message();
      if (ERR_GET_REASON(static_cast<unsigned long>(ec.value())) ==
          SSL_R_CERTIFICATE_VERIFY_FAILED) {
        if (host_mismatch_) {
          why = fmt::format(
              "the certificate is not valid for host '{}' (not in its "
              "subjectAltName)",
              url_.host);
        } else if (verify != X509_V_OK) {
          why = X509_verify_cert_error_string(verify);
        }
        return DownloadError(
            fmt::format("TLS certificate verification failed for {}: {}; add its CA with "
                        "DTRAIN_CA_BUNDLE=<PEM file> (or set DTRAIN_INSECURE_TLS=1 to skip "
                        "verification, unsafe)",
                        url_.host_header(), why),
            0, false);
      }
      if (ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == SSL_R_WRONG_VERSION_NUMBER) {
        why += " (is it a plain http server?)";
      }
      return DownloadError(fmt::format("TLS handshake with {} failed: {}", url_.host_header(), why),
                           0, false);
    }
    return DownloadError(
        fmt::format("TLS handshake with {} failed: {}", url_.host_header(), ec.message()), 0,
        is_closed_early(ec));
  }

  template <class Stream>
  GetResult exchange(Stream& stream, beast::tcp_stream& tcp_layer) {
    http::request<http::empty_body> req{http::verb::get, url_.target, 11};
    req.set(http::field::host, url_.host_header());
    req.set(http::field::user_agent, "dtrain");
    req.set(http::field::accept_encoding, "identity");
    req.set(http::field::connection, "close");
    arm_timeout(tcp_layer);
    beast::error_code ec = run_op(
        tcp_layer, [&](auto handler) { http::async_write(stream, req, std::move(handler)); });
    if (ec) throw network_error(ec, "sending the request");

    beast::flat_buffer buffer;
    http::response_parser<http::buffer_body> parser;
    // No limit. (Not boost::none: Boost 1.74's parser compares the Content-Length with the
    // optional and then rejects every body as "body limit exceeded".)
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    arm_timeout(tcp_layer);
    ec = run_op(tcp_layer, [&](auto handler) {
      http::async_read_header(stream, buffer, parser, std::move(handler));
    });
    if (ec) {
      if (ec == beast::error::timeout || is_closed_early(ec)) {
        throw network_error(ec, "waiting for the response header");
      }
      throw DownloadError(fmt::format("malformed HTTP response: {}", ec.message()), 0, false);
    }
    auto& res = parser.get();
    GetResult result;
    result.status = static_cast<int>(res.result_int());
    result.reason = std::string(res.reason());
    if (result.reason.empty()) result.reason = std::string(http::obsolete_reason(res.result()));
    result.location = std::string(res[http::field::location]);
    if (result.status < 200 || result.status >= 300) return result;
    if (parser.content_length()) result.content_length = *parser.content_length();
    result.close_delimited = parser.need_eof();
    if (result.content_length && *result.content_length > limits_.max_bytes) {
      throw DownloadError(fmt::format("the server announces Content-Length {}, more than the {} "
                                      "bytes allowed ({}); nothing was downloaded",
                                      *result.content_length, limits_.max_bytes,
                                      limits_.max_bytes_what),
                          0, false);
    }

    // Beast sizes each socket read by the free capacity of `buffer` (at least 512 bytes,
    // at most 64 KiB); after the header it is nearly full, so make room for 64 KiB reads.
    buffer.reserve(buffer.size() + kSocketReadBytes);
    std::vector<char> chunk(kBodyBufferBytes);
    while (!parser.is_done()) {
      res.body().data = chunk.data();
      res.body().size = chunk.size();
      arm_timeout(tcp_layer);
      // One socket read per call, so the timeout measures inactivity, not the time to
      // fill the buffer (which on a slow link could exceed it while data still flows).
      ec = run_op(tcp_layer, [&](auto handler) {
        http::async_read_some(stream, buffer, parser, std::move(handler));
      });
      if (ec == http::error::need_buffer) ec = {};
      const size_t n = chunk.size() - res.body().size;
      if (n > limits_.max_bytes - result.bytes) {
        throw DownloadError(
            fmt::format("the body exceeds the {} bytes allowed ({}): {} bytes received{}",
                        limits_.max_bytes, limits_.max_bytes_what, result.bytes + n,
                        result.content_length ? "" : " without a Content-Length"),
            0, false);
      }
      write_all(fd_, chunk.data(), n, fd_path_);
      result.bytes += n;
      body_bytes_ = result.bytes;
      if (ec) throw body_error(ec, result);
    }
    if (result.content_length && result.bytes != *result.content_length) {
      throw DownloadError(fmt::format("received {} bytes but Content-Length is {}", result.bytes,
                                      *result.content_length),
                          0, true);
    }
    if (result.content_length && buffer.size() > 0) {
      // Bytes beyond the declared end already arrived (we sent one request, so nothing
      // may follow the response): the Content-Length does not describe this body.
      throw DownloadError(fmt::format("the server sent more than its Content-Length of {} bytes "
                                      "(at least {} more)",
                                      *result.content_length, buffer.size()),
                          0, false);
    }
    return result;
  }

  // A failure outside the body: timeout or connection loss (transient), anything else not.
  DownloadError network_error(const beast::error_code& ec, const std::string& while_doing) {
    if (ec == beast::error::timeout) {
      return DownloadError(fmt::format("timed out after {} s {}", timeout_s_, while_doing), 0,
                           true);
    }
    if (is_closed_early(ec)) {
      return DownloadError(fmt::format("connection closed by {} {} ({})", url_.host_header(),
                                       while_doing, ec.message()),
                           0, true);
    }
    return DownloadError(fmt::format("network error {}: {}", while_doing, ec.message()), 0, false);
  }

  DownloadError body_error(const beast::error_code& ec, const GetResult& got) {
    const std::string progress = got.content_length
                                     ? fmt::format("{} of {} bytes", got.bytes, *got.content_length)
                                     : fmt::format("{} bytes (no Content-Length)", got.bytes);
    if (ec == beast::error::timeout) {
      return DownloadError(
          fmt::format("timed out after {} s without data while reading the body, after {}",
                      timeout_s_, progress),
          0, true);
    }
    if (ec == ssl::error::stream_truncated && !got.content_length) {
      return DownloadError(
          fmt::format("TLS connection closed without close_notify after {}: cannot tell "
                      "whether the body is complete",
                      progress),
          0, true);
    }
    if (is_closed_early(ec)) {
      return DownloadError(fmt::format("connection closed after {}", progress), 0, true);
    }
    return DownloadError(fmt::format("error reading the body after {}: {}", progress, ec.message()),
                         0, false);
  }

  Url url_;
  int fd_;
  std::string fd_path_;
  std::chrono::milliseconds timeout_;
  double timeout_s_;
  GetLimits limits_;
  uint64_t body_bytes_ = 0;     // body bytes written so far (for the deadline's message)
  bool host_mismatch_ = false;  // set by the TLS verify callback
  asio::io_context ioc_;
};

}  // namespace

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) return false;
  std::string s(v);
  return s == "1" || s == "true" || s == "TRUE" || s == "yes" || s == "on";
}

GetResult http_get(const Url& url, int fd, const std::string& fd_path, const GetLimits& limits) {
  throw_if_stop_requested(fmt::format("download from {}", url.str()));
  return Get(url, fd, fd_path, limits).run();
}

}  // namespace dtrain::storage::internal
