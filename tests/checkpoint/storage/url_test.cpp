// URL recognition, parsing, redirect resolution and cache naming (no network).
#include "checkpoint/storage/url.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "checkpoint/storage/cache.h"
#include "tests/checkpoint/storage/test_util.h"

namespace dtrain::storage {
namespace {

using testing::ScopedEnv;

std::string parse_error(const std::string& url) {
  try {
    parse_url(url);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(UrlTest, IsUrl) {
  EXPECT_TRUE(is_url("http://127.0.0.1/x"));
  EXPECT_TRUE(is_url("https://example.com"));
  EXPECT_TRUE(is_url("HTTPS://example.com/a"));
  EXPECT_TRUE(is_url("s3://bucket/key"));  // recognised, so that parse_url can reject it
  EXPECT_FALSE(is_url("/data/output/model_final"));
  EXPECT_FALSE(is_url("output/model_final.pt"));
  EXPECT_FALSE(is_url("model:final"));
  EXPECT_FALSE(is_url(""));
  EXPECT_FALSE(is_url("://x"));
}

TEST(UrlTest, ParsesComponents) {
  Url u = parse_url("HTTPS://Example.COM/a/b?x=1#frag");
  EXPECT_EQ(u.scheme, "https");
  EXPECT_EQ(u.host, "example.com");
  EXPECT_EQ(u.port, 443);
  EXPECT_EQ(u.target, "/a/b?x=1");
  EXPECT_EQ(u.path(), "/a/b");
  EXPECT_EQ(u.str(), "https://example.com/a/b?x=1");
  EXPECT_EQ(u.host_header(), "example.com");

  Url v = parse_url("http://127.0.0.1:8080");
  EXPECT_EQ(v.port, 8080);
  EXPECT_EQ(v.target, "/");
  EXPECT_EQ(v.host_header(), "127.0.0.1:8080");
  EXPECT_EQ(parse_url("http://h?q=1").target, "/?q=1");
  EXPECT_EQ(parse_url("http://h:80/x").str(), "http://h/x");

  Url w = parse_url("http://[::1]:9000/ckpt");
  EXPECT_EQ(w.host, "::1");
  EXPECT_EQ(w.port, 9000);
  EXPECT_EQ(w.host_header(), "[::1]:9000");
  EXPECT_EQ(w.str(), "http://[::1]:9000/ckpt");
}

TEST(UrlTest, RejectsBadUrlsClearly) {
  EXPECT_NE(parse_error("ftp://h/x")
                .find("invalid URL 'ftp://h/x': unsupported scheme 'ftp' "
                      "(supported: http, https)"),
            std::string::npos);
  EXPECT_NE(parse_error("http:///x").find("empty host"), std::string::npos);
  EXPECT_NE(parse_error("http://h:0/").find("bad port '0'"), std::string::npos);
  EXPECT_NE(parse_error("http://h:70000/").find("bad port '70000'"), std::string::npos);
  EXPECT_NE(parse_error("http://h:8a/").find("bad port '8a'"), std::string::npos);
  EXPECT_NE(parse_error("http://u:p@h/").find("credentials"), std::string::npos);
  EXPECT_NE(parse_error("http://h/a b").find("whitespace"), std::string::npos);
  EXPECT_NE(parse_error("http://[::1/x").find("unterminated '['"), std::string::npos);
  EXPECT_NE(parse_error("/local/path").find("expected <scheme>://host/path"), std::string::npos);
}

TEST(UrlTest, ResolvesRedirectLocations) {
  const Url base = parse_url("http://h:81/a/b/c?q");
  auto resolve = [&](const std::string& loc) { return resolve_location(base, loc).str(); };
  EXPECT_EQ(resolve("/x"), "http://h:81/x");
  EXPECT_EQ(resolve("d"), "http://h:81/a/b/d");
  EXPECT_EQ(resolve("./d/"), "http://h:81/a/b/d/");
  EXPECT_EQ(resolve("../d"), "http://h:81/a/d");
  EXPECT_EQ(resolve("../../../../d?z=1"), "http://h:81/d?z=1");
  EXPECT_EQ(resolve("?z"), "http://h:81/a/b/c?z");
  EXPECT_EQ(resolve("/x#frag"), "http://h:81/x");
  EXPECT_EQ(resolve("//other/p"), "http://other/p");
  EXPECT_EQ(resolve("https://o:444/p"), "https://o:444/p");
  EXPECT_EQ(resolve(""), "http://h:81/a/b/c?q");
  EXPECT_THROW(resolve("ftp://o/p"), Error);
}

TEST(UrlTest, PercentEncode) {
  EXPECT_EQ(percent_encode("shard-00000-of-00002.h5"), "shard-00000-of-00002.h5");
  EXPECT_EQ(percent_encode("a b/c%"), "a%20b%2Fc%25");
}

TEST(CacheNameTest, CacheDirFromEnvironment) {
  {
    ScopedEnv cache("DTRAIN_CACHE", "/tmp/mycache");
    EXPECT_EQ(cache_dir(), "/tmp/mycache");
  }
  {
    ScopedEnv cache("DTRAIN_CACHE", "rel/./c");
    EXPECT_EQ(cache_dir(), (std::filesystem::current_path() / "rel/c").string());
  }
  ScopedEnv cache("DTRAIN_CACHE", std::nullopt);
  ScopedEnv home("HOME", "/home/someone");
  {
    ScopedEnv xdg("XDG_CACHE_HOME", std::nullopt);
    EXPECT_EQ(cache_dir(), "/home/someone/.cache/dtrain");
  }
  {
    ScopedEnv xdg("XDG_CACHE_HOME", "/scratch/cache");
    EXPECT_EQ(cache_dir(), "/scratch/cache/dtrain");
  }
  ScopedEnv xdg("XDG_CACHE_HOME", std::nullopt);
  ScopedEnv no_home("HOME", std::nullopt);
  try {
    cache_dir();
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("set DTRAIN_CACHE"), std::string::npos) << e.what();
  }
}

TEST(CacheNameTest, StableSafeDistinctNames) {
  ScopedEnv cache("DTRAIN_CACHE", "/c");
  const std::string p = cache_path_for("http://127.0.0.1:8000/runs/r1/model_final.pt");
  EXPECT_EQ(p.rfind("/c/127.0.0.1_8000/", 0), 0u) << p;
  EXPECT_EQ(p.substr(p.size() - 15), "/model_final.pt") << p;
  // /c/127.0.0.1_8000/<16 hex digits>/model_final.pt
  const std::string hash = p.substr(std::string("/c/127.0.0.1_8000/").size(), 16);
  EXPECT_EQ(hash.find_first_not_of("0123456789abcdef"), std::string::npos) << p;
  EXPECT_EQ(p.size(), std::string("/c/127.0.0.1_8000/").size() + 16 + 15);

  EXPECT_EQ(p, cache_path_for("http://127.0.0.1:8000/runs/r1/model_final.pt"));
  EXPECT_EQ(p, cache_path_for("HTTP://127.0.0.1:8000/runs/r1/model_final.pt#x"));
  EXPECT_NE(p, cache_path_for("http://127.0.0.1:8001/runs/r1/model_final.pt"));
  EXPECT_NE(p, cache_path_for("http://127.0.0.1:8000/runs/r2/model_final.pt"));
  EXPECT_NE(p, cache_path_for("http://127.0.0.1:8000/runs/r1/model_final.pt?v=2"));
  EXPECT_NE(p, cache_path_for("https://127.0.0.1:8000/runs/r1/model_final.pt"));
  EXPECT_EQ(cache_path_for("https://h/run/model_final/"),
            cache_path_for("https://h/run/model_final"));

  EXPECT_EQ(cache_path_for("https://h/").substr(cache_path_for("https://h/").rfind('/')), "/index");
  const std::string odd = cache_path_for("https://h/a/%2E%2E");
  EXPECT_EQ(odd.substr(odd.rfind('/')), "/_.");  // never "..", never hidden
  const std::string spaced = cache_path_for("https://h/a/x%20y%2Fz?k=v");
  EXPECT_EQ(spaced.substr(spaced.rfind('/')), "/x_y_z");
  const std::string v6 = cache_path_for("http://[::1]:81/m.pt");
  EXPECT_EQ(v6.rfind("/c/__1_81/", 0), 0u) << v6;
}

}  // namespace
}  // namespace dtrain::storage
