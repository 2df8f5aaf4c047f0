// Fault injection for tests: named points in crash-sensitive code paths (the checkpoint
// commit protocol) where a test can make the process die or throw.
//
//   DTRAIN_FAULT=ckpt.after_shards DTRAIN_FAULT_RANK=0 dtrain train ...   // SIGKILL
//   DTRAIN_FAULT=ckpt.after_shards DTRAIN_FAULT_MODE=throw ...            // throws
//   DTRAIN_FAULT=train.after_step DTRAIN_FAULT_MODE=stop ...              // SIGSTOP itself
//
// DTRAIN_FAULT_RANK (default: every rank) restricts the fault to one rank;
// DTRAIN_FAULT_AFTER=K fires at the K-th time (1-based) the point is reached (default 1);
// DTRAIN_FAULT_ONCE_FILE=F fires only while F does not exist, creating it (so a restarted
// run with the same environment does not fail again).
//
// Points: ckpt.before_shard, ckpt.during_shard, ckpt.after_shards, ckpt.before_rename,
// ckpt.before_last_checkpoint (checkpoint commit protocol, see docs/FORMAT.md) and
// train.after_step (after each optimizer step of SimpleTrainer); and for poisoned():
// train.loss (SimpleTrainer's loss of this rank becomes NaN before it is checked, e.g.
// DTRAIN_FAULT=train.loss DTRAIN_FAULT_RANK=1 DTRAIN_FAULT_AFTER=3).
// With no DTRAIN_FAULT set, fault points cost one getenv. Thread-safe.
#pragma once

namespace dtrain::fault {

// Kills this process with SIGKILL (or throws dtrain::Error "injected fault at <point>"
// with DTRAIN_FAULT_MODE=throw, or stops it with SIGSTOP and goes on after SIGCONT with
// DTRAIN_FAULT_MODE=stop) when the environment names `point` for `rank`.
void point(const char* name, int rank);

// True when the environment names `point` for `rank` (with the same DTRAIN_FAULT_RANK,
// _AFTER and _ONCE_FILE rules; DTRAIN_FAULT_MODE is ignored): the caller then corrupts
// the value computed there instead of crashing.
bool poisoned(const char* name, int rank);

}  // namespace dtrain::fault
