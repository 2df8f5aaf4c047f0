// URL recognition, parsing and redirect resolution (see url.h).
#include "checkpoint/storage/url.h"

#include <cctype>
#include <vector>

#include "runtime/base/error.h"

namespace dtrain::storage {
namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Length of a leading "<scheme>:" (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )),
// 0 when `s` does not start with one.
size_t scheme_length(const std::string& s) {
  if (s.empty() || !std::isalpha(static_cast<unsigned char>(s[0]))) return 0;
  size_t i = 1;
  while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '+' ||
                          s[i] == '-' || s[i] == '.')) {
    ++i;
  }
  return i < s.size() && s[i] == ':' ? i : 0;
}

// Splits "path?query" (no fragment) into path and "?query" (empty when absent).
std::pair<std::string, std::string> split_query(const std::string& target) {
  size_t q = target.find('?');
  if (q == std::string::npos) return {target, ""};
  return {target.substr(0, q), target.substr(q)};
}

// RFC 3986 section 5.2.4: removes "." and ".." segments from an absolute path.
std::string remove_dot_segments(const std::string& path) {
  std::vector<std::string> out;
  size_t i = 0;
  bool trailing_slash = false;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    std::string seg = path.substr(i, j - i);
    bool last = j == path.size();
    if (seg == "..") {
      if (!out.empty()) out.pop_back();
      trailing_slash = last;
    } else if (seg == ".") {
      trailing_slash = last;
    } else if (!(seg.empty() && i == 0)) {
      out.push_back(seg);
      trailing_slash = false;
    }
    i = j + 1;
  }
  std::string result;
  for (const auto& seg : out) result += "/" + seg;
  if (result.empty() || trailing_slash) result += "/";
  return result;
}

}  // namespace

std::string Url::host_header() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  const uint16_t default_port = scheme == "https" ? 443 : 80;
  return port == default_port ? h : h + ":" + std::to_string(port);
}

std::string Url::str() const { return scheme + "://" + host_header() + target; }

std::string Url::path() const { return split_query(target).first; }

bool is_url(const std::string& s) {
  size_t n = scheme_length(s);
  return n > 0 && s.compare(n, 3, "://") == 0;
}

Url parse_url(const std::string& s) {
  auto fail = [&](const std::string& why) {
    return Error(fmt::format("invalid URL '{}': {}", s, why));
  };
  for (unsigned char c : s) {
    if (c <= 0x20 || c == 0x7f) {
      throw fail("it contains whitespace or a control character (percent-encode it as %XX)");
    }
  }
  size_t n = scheme_length(s);
  if (n == 0 || s.compare(n, 3, "://") != 0) throw fail("expected <scheme>://host/path");
  Url url;
  url.scheme = lower(s.substr(0, n));
  if (url.scheme != "http" && url.scheme != "https") {
    throw fail(fmt::format("unsupported scheme '{}' (supported: http, https)", url.scheme));
  }
  size_t auth_begin = n + 3;
  size_t auth_end = s.find_first_of("/?#", auth_begin);
  if (auth_end == std::string::npos) auth_end = s.size();
  std::string authority = s.substr(auth_begin, auth_end - auth_begin);
  if (authority.find('@') != std::string::npos) {
    throw fail("credentials in URLs (user:password@host) are not supported");
  }
  std::string port_text;
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string::npos) throw fail("unterminated '[' in IPv6 host");
    url.host = authority.substr(1, close - 1);
    std::string rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') throw fail("unexpected text after ']' in the host");
      port_text = rest.substr(1);
    }
  } else {
    size_t colon = authority.rfind(':');
    url.host = authority.substr(0, colon);
    if (colon != std::string::npos) port_text = authority.substr(colon + 1);
  }
  url.host = lower(url.host);
  if (url.host.empty()) throw fail("empty host");
  url.port = url.scheme == "https" ? 443 : 80;
  if (!port_text.empty()) {
    unsigned long port = 0;
    for (char c : port_text) {
      if (!std::isdigit(static_cast<unsigned char>(c)) || port > 65535) {
        throw fail(fmt::format("bad port '{}' (expected 1-65535)", port_text));
      }
      port = port * 10 + static_cast<unsigned long>(c - '0');
    }
    if (port == 0 || port > 65535)
      throw fail(fmt::format("bad port '{}' (expected 1-65535)", port_text));
    url.port = static_cast<uint16_t>(port);
  }
  std::string target = s.substr(auth_end);
  target = target.substr(0, target.find('#'));
  if (target.empty() || target[0] == '?') target = "/" + target;
  url.target = target;
  return url;
}

Url resolve_location(const Url& base, const std::string& location) {
  std::string loc = location.substr(0, location.find('#'));
  if (scheme_length(loc) > 0) return parse_url(loc);
  if (loc.rfind("//", 0) == 0) return parse_url(base.scheme + ":" + loc);
  Url out = base;
  if (loc.empty()) return out;
  if (loc[0] == '?') {
    out.target = base.path() + loc;
  } else {
    auto [path, query] = split_query(loc);
    if (path.empty()) {
      path = base.path();
    } else if (path[0] != '/') {
      std::string base_path = base.path();
      path = base_path.substr(0, base_path.rfind('/') + 1) + path;
    }
    out.target = remove_dot_segments(path) + query;
  }
  // Re-parse to apply the same character checks as for a user-supplied URL.
  return parse_url(out.str());
}

std::string percent_encode(const std::string& s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace dtrain::storage
