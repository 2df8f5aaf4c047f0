#include "runtime/base/file_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "runtime/base/error.h"
#include "runtime/base/interrupt.h"

namespace dtrain {

namespace {
constexpr std::chrono::milliseconds kPoll{50};
}  // namespace

FileLock::FileLock(const std::string& path, mode_t mode) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, mode);
  DTRAIN_CHECK(fd_ >= 0, "cannot open the lock file '{}': {}", path, std::strerror(errno));
}

FileLock::~FileLock() { ::close(fd_); }  // releases the flock

FileLock::Outcome FileLock::lock(Mode mode, std::optional<std::chrono::milliseconds> wait, const std::string& what) {
  const int op = (mode == Mode::kExclusive ? LOCK_EX : LOCK_SH) | LOCK_NB;
  const auto deadline = std::chrono::steady_clock::now() + wait.value_or(std::chrono::milliseconds(0));
  held_ = false;
  for (;;) {
    if (::flock(fd_, op) == 0) {
      held_ = true;
      return Outcome::kHeld;
    }
    if (errno != EWOULDBLOCK && errno != EINTR) {
      error_ = std::strerror(errno);
      return Outcome::kUnsupported;
    }
    if (wait && std::chrono::steady_clock::now() >= deadline) return Outcome::kBusy;
    // Polled rather than blocking, so that a stop request ends the wait.
    throw_if_stop_requested(what.empty() ? "waiting for the lock '" + path_ + "'" : what);
    std::this_thread::sleep_for(kPoll);
  }
}

bool FileLock::still_linked() const {
  struct stat opened {}, named {};
  return ::fstat(fd_, &opened) == 0 && ::lstat(path_.c_str(), &named) == 0 && opened.st_dev == named.st_dev &&
         opened.st_ino == named.st_ino;
}

}  // namespace dtrain
