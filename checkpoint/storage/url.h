// URLs for network checkpoint paths: recognising them, parsing http(s) URLs into
// scheme/host/port/target, and resolving a redirect's Location against a base URL.
//
//   if (storage::is_url(path)) {
//     storage::Url u = storage::parse_url(path);   // throws on "ftp://...", "http://:80/"
//     // u.scheme == "https", u.host == "example.com", u.port == 443, u.target == "/a/b?x=1"
//   }
//
// All functions are pure and thread-safe.
#pragma once

#include <cstdint>
#include <string>

namespace dtrain::storage {

// A parsed http/https URL. The fragment is dropped; the query stays in the target.
struct Url {
  std::string scheme;  // "http" or "https" (lower case)
  std::string host;    // lower case; an IPv6 literal without its brackets
  uint16_t port = 0;   // explicit or the scheme's default (80 / 443)
  std::string target;  // path and query, always starting with '/'

  // The normalised URL: scheme://host[:port]target, the port only when not the default.
  std::string str() const;

  // "host" or "host:port" (brackets around IPv6), as sent in the Host header.
  std::string host_header() const;

  // The target without its query ("/a/b" for "/a/b?x=1").
  std::string path() const;
};

// True when `s` looks like a URL ("<scheme>://..."), whatever the scheme, so that an
// unsupported one ("s3://...") reaches parse_url and fails with a clear message instead
// of being taken for a local path.
bool is_url(const std::string& s);

// Parses an http or https URL. Throws dtrain::Error naming the URL and what is wrong:
// unsupported scheme, empty host, bad port, credentials (user:pass@ is not supported),
// whitespace or control characters.
Url parse_url(const std::string& s);

// Resolves a redirect's Location header (absolute URL, "//host/path", "/path",
// "relative/path", "../path", "?query") against `base` (RFC 3986 section 5.2).
// Throws dtrain::Error if the result is not a valid http(s) URL.
Url resolve_location(const Url& base, const std::string& location);

// Percent-encodes every byte outside RFC 3986's unreserved set (A-Z a-z 0-9 - . _ ~),
// for putting a file name into a URL path.
std::string percent_encode(const std::string& s);

}  // namespace dtrain::storage
