// Scheduling of the runtime's background threads (checkpoint writers, index threads).
//
//   boost::asio::post(pool, [] { run_as_background_thread(); });  // once per thread
//
// On 2 ranks per 2 cores every core already runs a training thread; a background
// thread that wakes up (a snapshot's hash, a checkpoint.h5 being begun) then preempts
// the training thread at once, in the middle of its stall. SCHED_BATCH keeps the
// thread's fair share of CPU (the same weight as nice 0: it is not starved, so commits
// do not wait longer) but its wake-ups no longer preempt a running thread.
#pragma once

namespace dtrain {

// Puts the calling thread under SCHED_BATCH (Linux, no privilege needed). Best effort:
// false where the policy cannot be set, and the thread runs as before.
bool run_as_background_thread() noexcept;
// Whether the calling thread runs under SCHED_BATCH.
bool is_background_thread() noexcept;

}  // namespace dtrain
