// Crash-safe filesystem helpers (see fs.h).
#include "runtime/base/fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>

#include "runtime/base/error.h"

namespace dtrain::fs {
namespace {

// Owns a POSIX file descriptor.
class Fd {
 public:
  Fd(const std::string& path, int flags, mode_t mode = 0644) : fd_(::open(path.c_str(), flags, mode)) {
    DTRAIN_CHECK(fd_ >= 0, "cannot open '{}': {}", path, std::strerror(errno));
  }
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

std::string read_file(const std::string& path) { return read_file_head(path, SIZE_MAX); }

std::string read_file_head(const std::string& path, size_t limit) {
  Fd fd(path, O_RDONLY | O_CLOEXEC);
  std::string out;
  char buf[1 << 16];
  while (out.size() < limit) {
    ssize_t n = ::read(fd.get(), buf, std::min(sizeof buf, limit - out.size()));
    if (n < 0 && errno == EINTR) continue;
    DTRAIN_CHECK(n >= 0, "cannot read '{}': {}", path, std::strerror(errno));
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

void fsync_path(const std::string& path) {
  struct stat st {};
  DTRAIN_CHECK(::stat(path.c_str(), &st) == 0, "cannot stat '{}': {}", path, std::strerror(errno));
  Fd fd(path, (S_ISDIR(st.st_mode) ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  DTRAIN_CHECK(::fsync(fd.get()) == 0, "cannot fsync '{}': {}", path, std::strerror(errno));
}

std::string parent_dir(const std::string& path) {
  std::filesystem::path p(path);
  auto parent = p.parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

void rename_durable(const std::string& from, const std::string& to) {
  DTRAIN_CHECK(::rename(from.c_str(), to.c_str()) == 0, "cannot rename '{}' to '{}': {}", from,
               to, std::strerror(errno));
  fsync_path(parent_dir(to));
}

void write_file_durable(const std::string& path, const std::string& content) {
  Fd fd(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC);
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    DTRAIN_CHECK(n >= 0, "cannot write '{}': {}", path, std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  DTRAIN_CHECK(::fsync(fd.get()) == 0, "cannot fsync '{}': {}", path, std::strerror(errno));
}

void write_file_atomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  try {
    write_file_durable(tmp, content);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  rename_durable(tmp, path);
}

}  // namespace dtrain::fs
