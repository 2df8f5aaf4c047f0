// A process-wide record of a termination request (SIGTERM, SIGUSR1, ... caught by the
// preemption watcher), which long blocking operations such as downloads poll so that a
// job asked to stop does so promptly instead of finishing a transfer first.
//
//   dtrain::request_stop(SIGTERM);                 // the signal watcher
//   dtrain::throw_if_stop_requested("downloading http://host/w.pt");  // a long operation
//
// Thread-safe and async-signal-safe (one atomic int).
#pragma once

#include <string>

#include "runtime/base/error.h"

namespace dtrain {

// Records that the process was asked to stop by `signal` (> 0). The first request wins.
void request_stop(int signal) noexcept;

// The signal of the first stop request, 0 when there was none.
int stop_requested() noexcept;

// Forgets a stop request (for tests, which send themselves signals).
void clear_stop_request() noexcept;

// An operation abandoned because the process was asked to stop. Not a CheckpointError:
// nothing is damaged, and callers must not fall back to other work but stop too.
class Interrupted : public Error {
 public:
  Interrupted(const std::string& what, int signal) : Error(what), signal_(signal) {}
  // The signal that asked the process to stop.
  int signal() const { return signal_; }

 private:
  int signal_;
};

// Throws Interrupted ("<what>: interrupted by signal 15 (Terminated)") when a stop was
// requested.
void throw_if_stop_requested(const std::string& what);

}  // namespace dtrain
