// The process-wide stop request (see interrupt.h).
#include "runtime/base/interrupt.h"

#include <atomic>
#include <cstring>

namespace dtrain {
namespace {

std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "request_stop must be async-signal-safe");

}  // namespace

void request_stop(int signal) noexcept {
  int expected = 0;
  g_stop_signal.compare_exchange_strong(expected, signal > 0 ? signal : 1);
}

int stop_requested() noexcept { return g_stop_signal.load(); }

void clear_stop_request() noexcept { g_stop_signal.store(0); }

void throw_if_stop_requested(const std::string& what) {
  const int sig = stop_requested();
  if (sig == 0) return;
  throw Interrupted(fmt::format("{}: interrupted by signal {} ({})", what, sig, ::strsignal(sig)),
                    sig);
}

}  // namespace dtrain
