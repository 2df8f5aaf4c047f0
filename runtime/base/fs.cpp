// Crash-safe filesystem helpers (see fs.h).
#include "runtime/base/fs.h"

#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>  // renameat2
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

#include "runtime/base/env.h"
#include "runtime/base/error.h"

namespace dtrain::fs {
namespace {

// Owns a POSIX file descriptor.
class Fd {
 public:
  Fd(const std::string& path, int flags, mode_t mode = 0644) : fd_(::open(path.c_str(), flags, mode)) {
    if (fd_ >= 0) return;
    const int err = errno;
    // O_NOFOLLOW on a symbolic link fails with ELOOP: say what that means.
    DTRAIN_CHECK(!(err == ELOOP && (flags & O_NOFOLLOW)),
                 "cannot open '{}': it is a symbolic link (refused: dtrain created this name "
                 "itself and never makes it a link)",
                 path);
    throw Error(fmt::format("cannot open '{}': {}", path, std::strerror(err)));
  }
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(Fd&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// "a FIFO", "a directory", ... for an st_mode.
const char* file_kind(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";  // none of the POSIX types
}

// Opens `path` for reading without blocking (a FIFO with no writer would block a plain
// open for ever) and checks that it is a regular file; returns it and its size.
Fd open_regular(const std::string& path, bool no_follow, off_t* size) {
  Fd fd(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | (no_follow ? O_NOFOLLOW : 0));
  struct stat st {};
  DTRAIN_CHECK(::fstat(fd.get(), &st) == 0, "cannot stat '{}': {}", path, std::strerror(errno));
  DTRAIN_CHECK(S_ISREG(st.st_mode), "'{}' is not a regular file (it is {})", path,
               file_kind(st.st_mode));
  // Back to blocking reads (O_NONBLOCK means nothing for regular files, but be plain).
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags >= 0) ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  *size = st.st_size;
  return fd;
}

std::string size_text(size_t bytes) {
  if (bytes >= (size_t{1} << 20) && bytes % (size_t{1} << 20) == 0) {
    return fmt::format("{} MiB", bytes >> 20);
  }
  return fmt::format("{} bytes", bytes);
}

// Reads up to `limit` bytes; with `refuse_more`, one byte past `limit` is an error
// (the whole file was wanted, and it is, or grew, larger than allowed).
std::string read_bounded(const std::string& path, size_t limit, bool no_follow,
                         bool refuse_more) {
  off_t size = 0;
  Fd fd = open_regular(path, no_follow, &size);
  if (refuse_more && static_cast<uint64_t>(size) > limit) {
    throw Error(fmt::format("'{}' is too large: {} bytes, the limit is {}", path, size,
                            size_text(limit)));
  }
  std::string out;
  out.reserve(std::min<size_t>(static_cast<size_t>(size), limit));
  char buf[1 << 16];
  // With refuse_more, read one byte past the limit to notice a file that grew.
  const size_t want = refuse_more && limit < SIZE_MAX ? limit + 1 : limit;
  while (out.size() < want) {
    ssize_t n = ::read(fd.get(), buf, std::min(sizeof buf, want - out.size()));
    if (n < 0 && errno == EINTR) continue;
    DTRAIN_CHECK(n >= 0, "cannot read '{}': {}", path, std::strerror(errno));
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  if (refuse_more && out.size() > limit) {
    throw Error(fmt::format("'{}' is too large: it grew past the limit of {} while being read "
                            "({} bytes when opened)", path, size_text(limit), size));
  }
  return out;
}

void write_all(int fd, const std::string& path, const std::string& content) {
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    DTRAIN_CHECK(n >= 0, "cannot write '{}': {}", path, std::strerror(errno));
    done += static_cast<size_t>(n);
  }
}

}  // namespace

std::string read_file(const std::string& path, const ReadOptions& options) {
  return read_bounded(path, options.max_bytes, options.no_follow, /*refuse_more=*/true);
}

std::string read_file_head(const std::string& path, size_t limit, bool no_follow) {
  return read_bounded(path, limit, no_follow, /*refuse_more=*/false);
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

size_t pread_upto(int fd, uint64_t offset, void* dst, size_t n, const std::string& path) {
  auto* p = static_cast<char*>(dst);
  size_t done = 0;
  while (done < n) {
    const size_t chunk = std::min<size_t>(n - done, size_t{1} << 30);
    const ssize_t got = ::pread(fd, p + done, chunk, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    DTRAIN_CHECK(got >= 0, "cannot read '{}' at byte {}: {}", path, offset + done, std::strerror(errno));
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  return done;
}

std::string temp_name_for(const std::string& path) {
  std::random_device rd;
  const uint64_t id = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  const std::filesystem::path p(path);
  const std::string name = fmt::format(".{}.tmp-{:016x}", p.filename().string(), id);
  return p.has_parent_path() ? (p.parent_path() / name).string() : name;
}

namespace {

// Whether no user but this one or root can change directory `st`'s entries: owned by
// them, and not writable by group or others unless sticky (like /tmp).
void check_trusted_entry(const std::string& path, const struct stat& st) {
  DTRAIN_CHECK(st.st_uid == ::geteuid() || st.st_uid == 0,
               "'{}' belongs to uid {}, neither this user (uid {}) nor root: its owner could change what is in "
               "it",
               path, st.st_uid, ::geteuid());
  DTRAIN_CHECK((st.st_mode & (S_IWGRP | S_IWOTH)) == 0 || (st.st_mode & S_ISVTX) != 0,
               "'{}' (mode {:o}) is writable by other users and not sticky: they could rename what is in it; "
               "expected mode 700, 755 or a sticky directory like /tmp",
               path, st.st_mode & 07777);
}

}  // namespace

DirId check_private_dir(const std::string& path) {
  struct stat st {};
  DTRAIN_CHECK(::lstat(path.c_str(), &st) == 0, "cannot stat '{}': {}", path, std::strerror(errno));
  DTRAIN_CHECK(S_ISDIR(st.st_mode), "'{}' is {}, expected a directory of this user (uid {})", path,
               file_kind(st.st_mode), ::geteuid());
  // The checks and the chmod on one descriptor: the name cannot be swapped in between.
  Fd fd(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  DTRAIN_CHECK(::fstat(fd.get(), &st) == 0, "cannot stat '{}': {}", path, std::strerror(errno));
  DTRAIN_CHECK(st.st_uid == ::geteuid(),
               "'{}' belongs to uid {}, not to this user (uid {}): another user could change what is in it, so "
               "it is neither read nor written",
               path, st.st_uid, ::geteuid());
  DTRAIN_CHECK((st.st_mode & (S_IWGRP | S_IWOTH)) == 0,
               "'{}' (mode {:o}) could be written by other users: what is in it cannot be told from what this "
               "user's runs put there; remove it, or make it private (chmod -R go-w) if only you wrote in it",
               path, st.st_mode & 07777);
  if ((st.st_mode & 077) != 0) {
    DTRAIN_CHECK(::fchmod(fd.get(), 0700) == 0, "cannot make '{}' private (mode {:o} to 700): {}", path,
                 st.st_mode & 07777, std::strerror(errno));
  }
  return {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
}

DirId private_dir_id(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() ||
      (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return {};
  }
  return {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
}

namespace {

bool others_can_write(const struct stat& st) { return (st.st_mode & (S_IWGRP | S_IWOTH)) != 0; }

// A link on the way is followed unless another user can replace it: in a directory
// others can write to, one that is not sticky, or a sticky one where the link is not
// this user's or root's.
void check_link(const std::filesystem::path& link, const struct stat& st) {
  struct stat parent {};
  const std::string dir = link.parent_path().string();
  DTRAIN_CHECK(::stat(dir.c_str(), &parent) == 0, "cannot stat '{}': {}", dir, std::strerror(errno));
  const bool replaceable = others_can_write(parent) &&
                           ((parent.st_mode & S_ISVTX) == 0 || (st.st_uid != ::geteuid() && st.st_uid != 0));
  DTRAIN_CHECK(!replaceable,
               "'{}' is a symbolic link (made by uid {}) in '{}' (mode {:o}), where another user could replace it "
               "and lead the tier anywhere",
               link.string(), st.st_uid, dir, parent.st_mode & 07777);
}

}  // namespace

TrustedDir trusted_dir(const std::string& path) {
  const std::filesystem::path given = std::filesystem::absolute(path).lexically_normal();
  std::filesystem::path prefix;
  for (const auto& part : given) {
    prefix /= part;
    if (part.empty()) continue;
    struct stat st {};
    if (::lstat(prefix.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) check_link(prefix, st);
  }
  std::error_code ec;
  TrustedDir out;
  const std::filesystem::path real = std::filesystem::canonical(given, ec);
  DTRAIN_CHECK(!ec, "cannot resolve '{}': {}", path, ec.message());
  out.path = real.string();
  struct stat st {};
  DTRAIN_CHECK(::stat(out.path.c_str(), &st) == 0, "cannot stat '{}': {}", out.path, std::strerror(errno));
  DTRAIN_CHECK(S_ISDIR(st.st_mode), "'{}' is {}, expected a directory", out.path, file_kind(st.st_mode));
  check_trusted_entry(out.path, st);
  // The directories above: their owners are not checked (in a user-namespace container
  // the host's root shows as an unmapped uid), and one others can write to without the
  // sticky bit (Kubernetes' emptyDir, a group directory under umask 002) is a warning.
  for (std::filesystem::path up = real.parent_path(); !up.empty(); up = up.parent_path()) {
    if (::stat(up.c_str(), &st) == 0 && others_can_write(st) && (st.st_mode & S_ISVTX) == 0) {
      out.warning = fmt::format("'{}' (mode {:o}) is writable by other users and not sticky: another user of this "
                                "node could replace '{}' and what is in it",
                                up.string(), st.st_mode & 07777, out.path);
      break;
    }
    if (up == up.parent_path()) break;
  }
  return out;
}

std::string user_name() {
  const uid_t uid = ::geteuid();
  const long hint = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buf(hint > 0 ? static_cast<size_t>(hint) : size_t{16384});
  struct passwd pw {};
  struct passwd* found = nullptr;
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr &&
      found->pw_name != nullptr) {
    const std::string name = found->pw_name;
    if (!name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos) return name;
  }
  return std::to_string(uid);
}

std::string boot_id() {
  std::string boot;
  try {
    boot = read_file("/proc/sys/kernel/random/boot_id");
  } catch (const std::exception&) {
    return "";
  }
  while (!boot.empty() && (boot.back() == '\n' || boot.back() == ' ')) boot.pop_back();
  return boot;
}

namespace {

// The real file system.
class PosixEnv final : public Env {
 public:
  FileType type_of(const std::string& path) override {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
      DTRAIN_CHECK(errno == ENOENT || errno == ENOTDIR, "cannot stat '{}': {}", path, std::strerror(errno));
      return FileType::kMissing;
    }
    if (S_ISREG(st.st_mode)) return FileType::kRegular;
    if (S_ISDIR(st.st_mode)) return FileType::kDirectory;
    if (S_ISLNK(st.st_mode)) return FileType::kSymlink;
    return FileType::kOther;
  }
  std::vector<std::string> children(const std::string& dir) override {
    std::vector<std::string> names;
    std::error_code ec;
    for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      names.push_back(it->path().filename().string());
    }
    DTRAIN_CHECK(!ec, "cannot list '{}': {}", dir, ec.message());
    return names;
  }
  std::string read_file(const std::string& path, const ReadOptions& options) override {
    return fs::read_file(path, options);
  }
  void write_new_file(const std::string& path, const std::string& content) override {
    Fd fd(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC);
    write_all(fd.get(), path, content);
  }
  bool create_dir(const std::string& path, DirAccess access) override {
    // The umask only removes bits: 700 stays 700.
    if (::mkdir(path.c_str(), access == DirAccess::kPrivate ? 0700 : 0777) == 0) return true;
    DTRAIN_CHECK(errno == EEXIST, "cannot create directory '{}': {}", path, std::strerror(errno));
    return false;
  }
  void sync(const std::string& path) override { fsync_path(path); }
  void rename(const std::string& from, const std::string& to) override {
    DTRAIN_CHECK(::rename(from.c_str(), to.c_str()) == 0, "cannot rename '{}' to '{}': {}", from, to,
                 std::strerror(errno));
  }
  bool exchange(const std::string& a, const std::string& b) override {
#ifdef RENAME_EXCHANGE
    // A failed renameat2 changed nothing; the caller falls back to plain renames.
    return ::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) == 0;
#else
    return false;
#endif
  }
  void remove_file(const std::string& path) override {
    DTRAIN_CHECK(::unlink(path.c_str()) == 0, "cannot remove '{}': {}", path, std::strerror(errno));
  }
  void remove_tree(const std::string& path) override {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
    DTRAIN_CHECK(!ec, "cannot remove '{}': {}", path, ec.message());
  }
};

}  // namespace

}  // namespace dtrain::fs

namespace dtrain {

Env& Env::posix() {
  static fs::PosixEnv env;  // stateless
  return env;
}

}  // namespace dtrain
