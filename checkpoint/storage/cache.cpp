// The download cache: entry naming, per-entry flock, single-file and directory fetches
// published by rename(2) (see cache.h).
#include "checkpoint/storage/cache.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <thread>

#include "checkpoint/storage/url.h"
#include "runtime/base/env.h"
#include "runtime/base/file_lock.h"
#include "runtime/base/fs.h"
#include "runtime/base/interrupt.h"
#include "runtime/base/logging.h"

namespace dtrain::storage {
namespace stdfs = std::filesystem;

namespace {

constexpr size_t kMaxNameChars = 96;

std::string sha256_hex(const std::string& data, size_t hex_chars) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  DTRAIN_CHECK(EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) == 1,
               "SHA-256 failed (OpenSSL) while naming the cache entry of '{}'", data);
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len && out.size() < hex_chars; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out.substr(0, hex_chars);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Keeps [A-Za-z0-9._-] (after percent-decoding), replaces the rest by '_', never starts
// with '.' (hidden names are reserved for temporaries) and is never empty.
std::string sanitize(const std::string& raw) {
  std::string out;
  for (size_t i = 0; i < raw.size() && out.size() < kMaxNameChars; ++i) {
    char c = raw[i];
    if (c == '%' && i + 2 < raw.size() && hex_value(raw[i + 1]) >= 0 &&
        hex_value(raw[i + 2]) >= 0) {
      c = static_cast<char>(hex_value(raw[i + 1]) * 16 + hex_value(raw[i + 2]));
      i += 2;
    }
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
    out += ok ? c : '_';
  }
  if (!out.empty() && out[0] == '.') out[0] = '_';
  return out.empty() ? "index" : out;
}

// The URL with trailing slashes of the path removed ("http://h/a/" == "http://h/a").
Url normalized(const std::string& url) {
  Url u = parse_url(url);
  std::string path = u.path();
  std::string query = u.target.substr(path.size());
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  u.target = path + query;
  return u;
}

// The directory holding the entry of `url`: <cache>/<host>_<port>/<hash>.
std::string entry_dir_for(const Url& u) {
  std::string host = u.host;
  for (char& c : host) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') c = '_';
  }
  return (stdfs::path(cache_dir()) / (host + "_" + std::to_string(u.port)) /
          sha256_hex(u.str(), 16))
      .string();
}

std::string entry_name_for(const Url& u) {
  std::string path = u.path();
  return sanitize(path.substr(path.rfind('/') + 1));
}

bool is_temporary_name(const std::string& name) {
  return !name.empty() && name[0] == '.' && name.find(".part-") != std::string::npos;
}

Env& env_of(const DownloadOptions& options) { return options.env != nullptr ? *options.env : Env::posix(); }

// Moves `path` aside to a temporary name (atomic), then deletes it.
void remove_entry(const std::string& path, Env& env) {
  if (env.type_of(path) == FileType::kMissing) return;
  const std::string aside = part_path_for(path);
  try {
    env.rename(path, aside);
  } catch (const Error& e) {
    throw Error(fmt::format("cannot move cache entry '{}' aside: {}", path, e.what()));
  }
  try {
    env.remove_tree(aside);
  } catch (const Error& e) {
    DTRAIN_LOG_WARN_RANK("{}", e.what());
  }
}

}  // namespace

namespace internal {

// An exclusive flock(2) on <entry dir>/.lock, held for the object's lifetime. Creates the
// entry directory. When the file system does not support flock, runs unlocked.
class EntryLock {
 public:
  EntryLock(const std::string& entry_dir, const std::string& url, Env& env) : dir_(entry_dir), env_(env) {
    try {
      // Durable, so that an entry renamed into it and synced survives a power cut.
      fs::create_directories_durable(entry_dir, env);
    } catch (const Error& e) {
      throw Error(fmt::format("cannot create cache directory '{}' for {}: {} (set DTRAIN_CACHE to a "
                              "writable directory)", entry_dir, url, e.what()));
    }
    try {
      lock_ = std::make_unique<FileLock>(entry_dir + "/.lock", 0644);
    } catch (const Error& e) {
      throw Error(fmt::format("cannot open the cache lock for {}: {}", url, e.what()));
    }
    FileLock::Outcome got = lock_->lock(FileLock::Mode::kExclusive, std::chrono::milliseconds(0));
    if (got == FileLock::Outcome::kBusy) {
      DTRAIN_LOG_INFO_RANK("waiting for another process fetching {} into {}", url, entry_dir);
      // A stop request ends the wait.
      got = lock_->lock(FileLock::Mode::kExclusive, std::nullopt, "waiting for another process fetching " + url);
    }
    if (got != FileLock::Outcome::kHeld) {
      DTRAIN_LOG_WARN_RANK("cannot lock '{}' ({}): fetching {} without a lock", lock_->path(), lock_->error(), url);
    }
  }
  EntryLock(const EntryLock&) = delete;
  EntryLock& operator=(const EntryLock&) = delete;

  // Removes temporaries that a crashed or killed fetch left behind. Only with the lock
  // held: every live fetch of this entry holds it, so the temporaries found are stale.
  void remove_stale_temporaries() {
    if (!lock_->held()) return;
    for (const auto& name : env_.children(dir_)) {
      if (!is_temporary_name(name)) continue;
      DTRAIN_LOG_INFO_RANK("removing '{}' left by an interrupted download", dir_ + "/" + name);
      fs::remove_quietly(dir_ + "/" + name, env_);
    }
  }

 private:
  std::string dir_;
  Env& env_;
  std::unique_ptr<FileLock> lock_;  // released with the object
};

}  // namespace internal

std::string cache_dir() {
  if (const char* d = std::getenv("DTRAIN_CACHE"); d && *d) {
    return stdfs::absolute(d).lexically_normal().string();
  }
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/dtrain";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/dtrain";
  throw Error("cannot locate the download cache: set DTRAIN_CACHE (or HOME)");
}

std::string cache_path_for(const std::string& url) {
  Url u = normalized(url);
  return (stdfs::path(entry_dir_for(u)) / entry_name_for(u)).string();
}

std::string fetch_file(const std::string& url, const DownloadOptions& options,
                       const VerifyFn& check_cached) {
  const std::string dest = cache_path_for(url);
  // "" when the cached copy is there and good.
  auto cached_problem = [&]() -> std::string {
    if (!stdfs::is_regular_file(dest)) return "missing";
    return check_cached ? check_cached(dest) : "";
  };
  if (cached_problem().empty()) {
    DTRAIN_LOG_INFO_RANK("using the cached copy {} of {}", dest, url);
    return dest;
  }
  Env& env = env_of(options);
  internal::EntryLock lock(fs::parent_dir(dest), url, env);
  const std::string problem = cached_problem();
  if (problem.empty()) return dest;  // fetched by whoever held the lock
  if (stdfs::exists(stdfs::symlink_status(dest))) {
    DTRAIN_LOG_WARN_RANK("the cached copy {} of {} is damaged ({}): removing it and downloading again",
                    dest, url, problem);
    remove_entry(dest, env);
  }
  lock.remove_stale_temporaries();
  download(url, dest, options);
  return dest;
}

void remove_cached(const std::string& url) {
  const std::string dest = cache_path_for(url);
  if (!stdfs::exists(fs::parent_dir(dest))) return;
  internal::EntryLock lock(fs::parent_dir(dest), url, Env::posix());
  remove_entry(dest, Env::posix());
}

std::string fetch_directory(const std::string& base_url, const std::vector<std::string>& file_names,
                            const FileVerifyFn& verify, const DownloadOptions& options) {
  auto has_all = [&](const std::string& dir) {
    if (!stdfs::is_directory(dir)) return false;
    for (const auto& name : file_names) {
      if (!stdfs::is_regular_file(stdfs::path(dir) / name)) return false;
    }
    return true;
  };
  const std::string final_path = cache_path_for(base_url);
  if (has_all(final_path)) {
    DTRAIN_LOG_INFO_RANK("using the cached copy {} of {}", final_path, base_url);
    return final_path;
  }
  DirectoryFetch fetch(base_url, options);
  if (fetch.complete()) {
    if (has_all(final_path)) return final_path;
    DTRAIN_LOG_WARN_RANK(
        "cached {} lacks some of the files requested from {} (the remote directory "
        "changed?): fetching it again",
        final_path, base_url);
    fetch.evict();
  }
  for (const auto& name : file_names) {
    VerifyFn check;
    if (verify) check = [&verify, name](const std::string& path) { return verify(name, path); };
    fetch.fetch(name, check);
  }
  return fetch.commit();
}

DirectoryFetch::DirectoryFetch(const std::string& base_url, DownloadOptions options)
    : base_url_(base_url), options_(std::move(options)) {
  Url u = normalized(base_url);
  DTRAIN_CHECK(u.target.find('?') == std::string::npos,
               "directory URL '{}' has a query string: expected http(s)://host/path/to/dir",
               base_url);
  base_url_ = u.str();
  final_path_ = cache_path_for(base_url_);
  lock_ = std::make_unique<internal::EntryLock>(fs::parent_dir(final_path_), base_url_, env_of(options_));
  lock_->remove_stale_temporaries();
}

DirectoryFetch::~DirectoryFetch() {
  if (!committed_ && !staging_path_.empty()) fs::remove_quietly(staging_path_, env_of(options_));
}

void DirectoryFetch::make_staging() {
  if (!staging_path_.empty()) return;
  std::string staging = part_path_for(final_path_);
  DTRAIN_CHECK(env_of(options_).create_dir(staging, DirAccess::kShared), "cannot create staging directory '{}': it exists",
               staging);
  staging_path_ = staging;
}

bool DirectoryFetch::complete() const { return stdfs::is_directory(final_path_); }

void DirectoryFetch::evict() { remove_entry(final_path_, env_of(options_)); }

std::string DirectoryFetch::fetch(const std::string& file_name, const VerifyFn& verify,
                                  uint64_t max_bytes, const std::string& max_bytes_source) {
  DTRAIN_CHECK(
      !file_name.empty() && file_name[0] != '.' && file_name.find('/') == std::string::npos,
      "cannot fetch '{}' from {}: expected a plain file name (no '/', not starting "
      "with '.')",
      file_name, base_url_);
  DTRAIN_CHECK(!committed_, "cannot fetch '{}' from {}: the directory was already committed",
               file_name, base_url_);
  make_staging();
  DownloadOptions opts = options_;
  opts.verify = verify;
  if (max_bytes > 0 && (opts.max_bytes == 0 || max_bytes < opts.max_bytes)) {
    opts.max_bytes = max_bytes;
    opts.max_bytes_source = max_bytes_source;
  }
  const std::string local = (stdfs::path(staging_path_) / file_name).string();
  download(base_url_ + "/" + percent_encode(file_name), local, opts);
  return local;
}

std::string DirectoryFetch::commit() {
  DTRAIN_CHECK(!committed_, "{} was already committed to {}", base_url_, final_path_);
  make_staging();  // when nothing was fetched, an empty directory is published
  Env& env = env_of(options_);
  env.sync(staging_path_);
  try {
    env.rename(staging_path_, final_path_);
  } catch (const Error&) {
    // rename(2) fails (ENOTEMPTY) onto a non-empty directory: another process's copy.
    if (env.type_of(final_path_) != FileType::kDirectory) throw;
    DTRAIN_LOG_INFO_RANK("{} was fetched into {} by another process meanwhile; using that copy",
                         base_url_, final_path_);
    return final_path_;  // the destructor removes our staging copy
  }
  env.sync(fs::parent_dir(final_path_));
  committed_ = true;
  DTRAIN_LOG_INFO_RANK("fetched {} into {}", base_url_, final_path_);
  return final_path_;
}

}  // namespace dtrain::storage
