// Retention: which checkpoints a run keeps, and which is newest. PeriodicCheckpointer
// (detectron2's) saves every `period` iterations and deletes the oldest periodic ones;
// order_by_recency ranks checkpoint directories for resume_or_load's fallbacks.
//
//   PeriodicCheckpointer periodic(ckpt, /*period=*/5000, /*max_iter=*/90000, /*max_to_keep=*/3);
//   periodic.step(iter);               // saves model_0004999, ..., model_final
//
// Collective like the Checkpointer it drives (every rank calls step() with the same
// iteration); not thread-safe: call from the training thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/base/stateful.h"

namespace dtrain::checkpoint {

class Checkpointer;

// Saves every `period` iterations as "<prefix>_<iteration:07d>" and "<prefix>_final" at
// max_iter - 1, keeping the newest max_to_keep periodic checkpoints (0: all). The kept
// list is rebuilt from save_dir when constructed, so retention survives restarts; it
// never deletes <prefix>_final, the checkpoint that was resumed from, or what
// last_checkpoint names. With `async`, periodic saves are asynchronous (save_async):
// step() commits a finished one at the next iteration boundary, retention is applied
// after each commit, and <prefix>_final is saved synchronously (training ends there).
//
// A periodic save that fails (a full disk, an I/O error: a CheckpointError, which the
// Checkpointer raises alike on every rank, after removing what the save had written)
// stops training with that error under OnSaveError::kStop (CHECKPOINT.ON_SAVE_ERROR
// stop, the default). Under kWarn (warn) it is logged as a warning and training goes on
// without that checkpoint; failed_saves() counts them. A failed delete of an old
// checkpoint (retention) is treated the same way. <prefix>_final and save() always
// throw: a run must not end without its final checkpoint unnoticed.
enum class OnSaveError { kStop, kWarn };

// "stop" or "warn" (CHECKPOINT.ON_SAVE_ERROR); anything else is a ConfigError.
OnSaveError parse_on_save_error(const std::string& value);

class PeriodicCheckpointer {
 public:
  PeriodicCheckpointer(Checkpointer& checkpointer, int64_t period,
                       std::optional<int64_t> max_iter = std::nullopt, int64_t max_to_keep = 0,
                       std::string file_prefix = "model", bool async = false,
                       OnSaveError on_error = OnSaveError::kStop);
  // Call after iteration `iteration` finished; `extra` is saved with "iteration".
  void step(int64_t iteration, const StateDict& extra = {});
  // Saves now as `name` (with `extra`), outside the period, synchronously.
  void save(const std::string& name, const StateDict& extra = {});
  // Commits an asynchronous save in flight (call when training ends normally).
  void finish();
  // Periodic saves (and retention's deletes of old ones) that failed and were skipped
  // under OnSaveError::kWarn.
  int64_t failed_saves() const { return failed_saves_; }

 private:
  // Runs a periodic save step; under kWarn a CheckpointError is logged and counted.
  template <typename F>
  void periodic(const std::string& what, F&& f);
  void prune();
  void prune_if_committed(int64_t commits_before);
  Checkpointer& checkpointer_;
  int64_t period_;
  std::optional<int64_t> max_iter_;
  int64_t max_to_keep_;
  std::string prefix_;
  bool async_;
  OnSaveError on_error_;
  int64_t failed_saves_ = 0;
};

// Checkpoint directories newest first: by the iteration stored in their checkpoint.h5
// (unreadable ones last), then "*_final" before others, then by name, descending. Names
// alone would put e.g. a manual "backup" (iteration 6) after model_0000004. Local (no
// communication): reads each directory's checkpoint.h5 attributes.
std::vector<std::string> order_by_recency(const std::vector<std::string>& dirs);

}  // namespace dtrain::checkpoint
