// Background threads' scheduling policy (see thread_policy.h).
#include "runtime/base/thread_policy.h"

#include <sched.h>

namespace dtrain {

bool run_as_background_thread() noexcept {
  sched_param param{};
  param.sched_priority = 0;
  // On Linux, pid 0 is the calling thread (a policy is per thread, not per process).
  return ::sched_setscheduler(0, SCHED_BATCH, &param) == 0;
}

bool is_background_thread() noexcept { return ::sched_getscheduler(0) == SCHED_BATCH; }

}  // namespace dtrain
