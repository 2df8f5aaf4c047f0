// Environment-driven fault injection (see fault.h).
#include "runtime/base/fault.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "runtime/base/error.h"

namespace dtrain::fault {

namespace {

// Whether the fault named by the environment fires now at `name` for `rank`.
bool fires(const char* name, int rank) {
  const char* want = std::getenv("DTRAIN_FAULT");
  if (want == nullptr || std::strcmp(want, name) != 0) return false;
  const char* want_rank = std::getenv("DTRAIN_FAULT_RANK");
  if (want_rank != nullptr && *want_rank && std::atoi(want_rank) != rank) return false;
  static std::atomic<int> hits{0};  // per process; only fault-injection runs get here
  const char* after = std::getenv("DTRAIN_FAULT_AFTER");
  const int fire_at = after ? std::max(1, std::atoi(after)) : 1;
  if (++hits != fire_at) return false;
  // DTRAIN_FAULT_ONCE_FILE: fire only if the file does not exist yet, and create it, so a
  // restarted run (same environment) does not fail again.
  if (const char* once = std::getenv("DTRAIN_FAULT_ONCE_FILE"); once != nullptr && *once) {
    const int fd = ::open(once, O_CREAT | O_EXCL | O_WRONLY, 0644);
    if (fd < 0) return false;
    ::close(fd);
  }
  return true;
}

}  // namespace

bool poisoned(const char* name, int rank) { return fires(name, rank); }

void point(const char* name, int rank) {
  if (!fires(name, rank)) return;
  const char* mode = std::getenv("DTRAIN_FAULT_MODE");
  if (mode != nullptr && std::strcmp(mode, "throw") == 0) {
    throw Error(fmt::format("injected fault at {} (rank {})", name, rank));
  }
  if (mode != nullptr && std::strcmp(mode, "stop") == 0) {
    // Freezes here until SIGCONT: a test then acts at a known point of the run.
    ::raise(SIGSTOP);
    return;
  }
  std::fprintf(stderr, "dtrain: injected crash at %s (rank %d)\n", name, rank);
  std::fflush(stderr);
  ::kill(::getpid(), SIGKILL);
  ::_exit(137);
}

}  // namespace dtrain::fault
