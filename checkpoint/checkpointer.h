// Checkpointer and PeriodicCheckpointer: detectron2's checkpoint API over the sharded
// HDF5 format v1 and the rank-zero coordinated commit protocol (docs/FORMAT.md).
//
//   Checkpointer ckpt(model, cfg.OUTPUT_DIR, comm,
//                     {{"optimizer", {&opt_state}}, {"scheduler", {&sched}},
//                      {"rng", {&rng, Scope::kPerRank}}});
//   ckpt.save("model_0004999", {{"iteration", int64_t{4999}}});
//   StateDict extra = ckpt.resume_or_load(cfg.MODEL.WEIGHTS, /*resume=*/true);
//
//   PeriodicCheckpointer periodic(ckpt, /*period=*/5000, /*max_iter=*/90000, /*max_to_keep=*/3);
//   periodic.step(iter);               // saves model_0004999, ..., model_final
//
// Every method is collective: all ranks call it, in the same order, with the same
// arguments; mismatched calls are detected and reported on every rank. Every rank
// returns the same result or throws the same dtrain::CheckpointError. Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "checkpoint/format.h"
#include "checkpoint/module_state.h"
#include "checkpoint/stateful.h"
#include "runtime/dist/communicator.h"

namespace dtrain::checkpoint {

enum class Scope {
  kReplicated,  // identical on every rank: saved once, sharded over the ranks' files
  kPerRank,     // one value per rank (RNG): each rank saves and restores its own
};

struct Checkpointable {
  Stateful* state = nullptr;  // not owned; must outlive the Checkpointer
  Scope scope = Scope::kReplicated;
};

struct CheckpointerOptions {
  std::string config_yaml;  // stored as /dtrain/config_yaml
  bool strict = false;      // CHECKPOINT.STRICT: fail on missing/unexpected/mismatched keys
};

class Checkpointer {
 public:
  Checkpointer(std::shared_ptr<torch::nn::Module> model, std::string save_dir,
               dist::Communicator& comm, std::map<std::string, Checkpointable> checkpointables = {},
               CheckpointerOptions options = {});

  // Saves the model, every checkpointable and `extra` (ints, floats, strings, tensors)
  // as save_dir/<name>, commits it, and tags it in save_dir/last_checkpoint.
  void save(const std::string& name, const StateDict& extra = {});

  // Loads `path` (a checkpoint directory, its checkpoint.h5, or a PyTorch .pt/.pth
  // state dict for the model only) into the model and the checkpointables named in
  // `only` (all when nullopt; an empty list loads the model only). Returns the extras
  // saved with it, plus "iteration". Mismatched model keys are reported in a table and
  // skipped (or fail with options.strict).
  StateDict load(const std::string& path,
                 const std::optional<std::vector<std::string>>& only = std::nullopt);

  // Whether save_dir/last_checkpoint exists.
  bool has_checkpoint();
  // save_dir/<name in last_checkpoint>, or "" when there is none.
  std::string get_checkpoint_file();
  // Every committed checkpoint directory in save_dir, sorted by name.
  std::vector<std::string> get_all_checkpoint_files();
  // With resume and a last checkpoint: loads everything from it; when it is damaged,
  // says which and why and falls back to the newest valid one. Otherwise loads `path`
  // (if not empty) into the model only and returns no extras.
  StateDict resume_or_load(const std::string& path, bool resume);
  // Writes `name` into save_dir/last_checkpoint (atomically).
  void tag_last_checkpoint(const std::string& name);
  // Deletes save_dir/<name> (hidden rename first, so a crash never leaves a partial
  // directory that looks committed). Refuses what last_checkpoint names.
  void remove_checkpoint(const std::string& name);

  // The checkpoint most recently loaded by this Checkpointer (full path), if any.
  const std::string& loaded_from() const { return loaded_from_; }
  const std::string& save_dir() const { return save_dir_; }
  dist::Communicator& comm() { return comm_; }
  // Times of the last save: total and the slowest rank's shard write (seconds).
  double last_save_seconds() const { return last_save_s_; }
  double last_save_max_write_seconds() const { return last_write_s_; }

 private:
  // Throws on every rank unless every rank called `what` with the same argument.
  void check_collective(const std::string& what, const std::string& arg);
  CollectedState collect(const StateDict& extra) const;
  StateDict load_directory(const std::string& dir, const std::optional<std::vector<std::string>>& only);
  StateDict load_torch_file(const std::string& path);

  std::shared_ptr<torch::nn::Module> model_;
  std::string save_dir_;
  dist::Communicator& comm_;
  std::map<std::string, Checkpointable> checkpointables_;
  CheckpointerOptions options_;
  std::string loaded_from_;
  bool cleaned_stale_ = false;
  double last_save_s_ = 0.0;
  double last_write_s_ = 0.0;
};

// Saves every `period` iterations as "<prefix>_<iteration:07d>" and "<prefix>_final" at
// max_iter - 1, keeping the newest max_to_keep periodic checkpoints (0: all). The kept
// list is rebuilt from save_dir when constructed, so retention survives restarts; it
// never deletes <prefix>_final, the checkpoint that was resumed from, or what
// last_checkpoint names.
class PeriodicCheckpointer {
 public:
  PeriodicCheckpointer(Checkpointer& checkpointer, int64_t period,
                       std::optional<int64_t> max_iter = std::nullopt, int64_t max_to_keep = 0,
                       std::string file_prefix = "model");
  // Call after iteration `iteration` finished; `extra` is saved with "iteration".
  void step(int64_t iteration, const StateDict& extra = {});
  // Saves now as `name` (with `extra`), outside the period.
  void save(const std::string& name, const StateDict& extra = {});

 private:
  void prune();
  Checkpointer& checkpointer_;
  int64_t period_;
  std::optional<int64_t> max_iter_;
  int64_t max_to_keep_;
  std::string prefix_;
};

// Checks a checkpoint directory without loading it into a model: every piece's
// checksum. Returns one line per problem (empty: valid). Local (not collective).
std::vector<std::string> verify_checkpoint(const std::string& dir);

}  // namespace dtrain::checkpoint
