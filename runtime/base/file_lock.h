// An flock(2) on a file, held while the FileLock lives. The kernel releases it when the
// descriptor closes, including when the process dies (SIGKILL too), so a lock found held
// means a live process holds it. The descriptor is close-on-exec; dtrain forks no
// children that would inherit it.
//
//   FileLock lock(dir + "/lock", 0600);
//   if (lock.lock(FileLock::Mode::kExclusive, std::chrono::seconds(5)) == FileLock::Outcome::kBusy) ...
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>

namespace dtrain {

class FileLock {
 public:
  enum class Mode { kShared, kExclusive };
  enum class Outcome {
    kHeld,         // this object holds the lock in the mode asked for
    kBusy,         // another holder kept it for the whole wait
    kUnsupported,  // the file system has no flock (error() says why): nothing is held
  };
  // Opens `path`, creating it with `mode` where missing; not a link (O_NOFOLLOW). Throws
  // dtrain::Error naming the file when it cannot be opened. Holds no lock yet.
  FileLock(const std::string& path, mode_t mode);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

  // Takes the lock in `mode`, or converts the one held (flock's conversion is not atomic:
  // another waiter may come first). Polls until `wait` has passed (nullopt: until it is
  // free); a stop request (SIGTERM) ends the wait with Interrupted, whose message starts
  // with `what` ("" : "waiting for the lock '<path>'").
  Outcome lock(Mode mode, std::optional<std::chrono::milliseconds> wait, const std::string& what = "");
  // Whether `path` still names the file opened: a holder that removed it (or its
  // directory) before releasing the lock leaves the next one a lock nobody else sees.
  bool still_linked() const;
  // Whether the last lock() got the lock (a failed conversion leaves none: flock drops
  // the old lock first).
  bool held() const { return held_; }
  const std::string& path() const { return path_; }
  const std::string& error() const { return error_; }

 private:
  std::string path_;
  std::string error_;
  int fd_ = -1;
  bool held_ = false;
};

}  // namespace dtrain
