// Checkpointer: detectron2's checkpoint API over the sharded HDF5 format v1 and the
// rank-zero coordinated commit protocol (docs/FORMAT.md). Its parts: the save protocol
// (save_protocol.h), the save directory's layout (save_dir.h), the load plan
// (load_plan.h) and its execution (load.cpp), the messages between ranks (messages.h);
// retention and PeriodicCheckpointer are in retention.h.
//
//   Checkpointer ckpt(model, cfg.OUTPUT_DIR, comm,
//                     {{"optimizer", {&opt_state}}, {"scheduler", {&sched}},
//                      {"rng", {&rng, Scope::kPerRank}}});
//   ckpt.save("model_0004999", {{"iteration", int64_t{4999}}});
//   StateDict extra = ckpt.resume_or_load(cfg.MODEL.WEIGHTS, /*resume=*/true);
//
// Asynchronous saves (CHECKPOINT.ASYNC): save_async() copies the state to host memory
// (the only stall) and writes this rank's shard on a background thread; poll_async(),
// called at each iteration boundary, commits it once every rank's write is done (the
// same commit step as save(), on the calling thread: MPI is never used by two threads).
// At most one save is in flight: save(), save_async() and load() finish it first.
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

#include "checkpoint/async_writer.h"
#include "checkpoint/format.h"
#include "checkpoint/load_plan.h"
#include "checkpoint/local_tier.h"
#include "checkpoint/module_state.h"
#include "checkpoint/retention.h"
#include "checkpoint/save_protocol.h"
#include "runtime/base/stateful.h"
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
  // CHECKPOINT.MATCHING_HEURISTICS: match a foreign file's keys to the model's by their
  // longest '.'-aligned suffix (detectron2's heuristics; docs/INTEROP.md). Also on for a
  // path ending in "?matching_heuristics=True" and for files that ask for it.
  bool matching_heuristics = false;
  // CHECKPOINT.ALLOW_SYMLINKED_SHARDS: read a shard that is a symbolic link to a regular
  // file (with a warning) instead of refusing it.
  bool allow_symlinked_shards = false;
  // Where the save protocol, retention and last_checkpoint do their file-system steps
  // (not owned; must outlive the Checkpointer): the real file system when null, a
  // power-cutting Env in tests (tests/powercut/fault_env.h).
  Env* env = nullptr;
  // CHECKPOINT.LOAD_STRATEGY (load_plan.h): who reads the pieces of a checkpoint every
  // rank can read.
  LoadStrategy load_strategy = LoadStrategy::kAuto;
  // CHECKPOINT.LOCAL.*: the node-local tier (local_tier.h), off when not set.
  std::optional<LocalTierOptions> local;
};

class Checkpointer {
 public:
  Checkpointer(std::shared_ptr<torch::nn::Module> model, std::string save_dir,
               dist::Communicator& comm, std::map<std::string, Checkpointable> checkpointables = {},
               CheckpointerOptions options = {});

  // Saves the model, every checkpointable and `extra` (ints, floats, strings, tensors)
  // as save_dir/<name>, commits it, and tags it in save_dir/last_checkpoint. Finishes
  // an asynchronous save in flight first.
  void save(const std::string& name, const StateDict& extra = {});

  // Starts saving like save(), but returns once the state is copied to host memory; the
  // shard is written in the background and committed by a later poll_async() or
  // finish_async(). Finishes an asynchronous save in flight first. The files, and the
  // outcome on failure (nothing committed, the error thrown on every rank), are those
  // of save(); errors of the background write are thrown by the call that commits.
  void save_async(const std::string& name, const StateDict& extra = {});
  // Commits the save in flight if every rank's shard write has finished (one integer
  // all-reduce); returns whether it committed. Cheap with nothing in flight (no
  // communication). Call it at iteration boundaries.
  bool poll_async();
  // Waits for the save in flight, if any, and commits it.
  void finish_async();
  // Whether an asynchronous save was started and not yet committed (same on every rank).
  bool async_in_flight() const { return pending_ != nullptr; }
  // Local and never throws: drops the save in flight without committing it (after an
  // error on some rank, when no collective call is possible). Waits for this rank's
  // write; its files stay in a hidden temporary directory that the next save removes.
  void abandon_async() noexcept;
  // How many saves this Checkpointer has committed (same on every rank).
  int64_t commits() const { return commits_; }

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
  // says which and why and falls back to the newest valid one. With resume, no
  // last_checkpoint but committed checkpoints in save_dir (a crash between a save's
  // commit and its tag): says so and loads the newest valid one. Otherwise loads `path`
  // (if not empty) into the model only and returns no extras.
  StateDict resume_or_load(const std::string& path, bool resume);
  // Writes `name` into save_dir/last_checkpoint (atomically).
  void tag_last_checkpoint(const std::string& name);
  // Deletes save_dir/<name> (hidden rename first, so a crash never leaves a partial
  // directory that looks committed). Refuses what last_checkpoint names.
  void remove_checkpoint(const std::string& name);

  // The node-local tier (options.local; collective, see local_tier.h). snapshot_local
  // snapshots the state with `extra` and "iteration" into it in the background;
  // poll_local() commits it at a later iteration boundary once every rank's write is
  // done; commit_local() waits and commits, its replicas going on in the background;
  // finish_local() also waits for the replicas; abandon_local() drops both (local, no throw);
  // prepare_local() (local, at a boundary between snapshots) lets the tier make the
  // first snapshot's shard file ready ahead, once the state has its layout
  // (LocalTier::prepare), and later take a resumed run's spares over ahead
  // (LocalTier::prepare_takeover).
  // A failed snapshot is a warning, never an error. end_local() removes this job's
  // snapshots (training finished). resume_or_load restores from the local tier when
  // it holds a complete snapshot at least as new as the persistent one.
  void snapshot_local(int64_t iteration, const StateDict& extra = {});
  bool poll_local();
  void prepare_local(int64_t iteration);
  void commit_local();
  void finish_local();
  void abandon_local() noexcept;
  void end_local();
  LocalTier* local_tier() { return local_.get(); }
  // Whether the last resume_or_load restored from the local tier.
  bool loaded_from_local() const { return loaded_from_local_; }

  // The checkpoint most recently loaded by this Checkpointer (full path), if any.
  const std::string& loaded_from() const { return loaded_from_; }
  const std::string& save_dir() const { return save_dir_; }
  dist::Communicator& comm() { return comm_; }
  // Times of the last committed save: total (from the call to the commit) and the
  // slowest rank's shard write, in seconds; and how long the last save() or
  // save_async() call kept the caller (the training stall: all of a synchronous save,
  // the host copy of an asynchronous one).
  double last_save_seconds() const { return last_save_s_; }
  double last_save_max_write_seconds() const { return last_write_s_; }
  double last_save_stall_seconds() const { return last_stall_s_; }
  // Bytes the last load of a dtrain checkpoint read from its files, over all ranks.
  int64_t last_load_bytes_read() const { return last_load_bytes_read_; }

  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

 private:
  // One load of a checkpoint directory, in phases (load.cpp).
  class DirectoryLoad;
  // Throws on every rank unless every rank called `what` with the same argument.
  void check_collective(const std::string& what, const std::string& arg);
  CollectedState collect(const StateDict& extra) const;
  // With `local` (a local snapshot): `dir` differs between ranks, each rank reads its own
  // shard, or at another world size the shards it serves (load.cpp, Readers::shard_server),
  // and local->index_reader, when set, reads the index.
  StateDict load_directory(const std::string& dir, const std::optional<std::vector<std::string>>& only,
                           const LocalRestore* local = nullptr);
  // Resumes from the local tier's snapshot `plan` (each rank reads only its own shard,
  // or at another world size the shards it serves, from this rank's directory; the
  // communicator spreads the rest).
  StateDict load_local(const LocalRestore& plan);
  // The iteration of candidates[i] (-1: none, or its index cannot be read).
  int64_t persistent_iteration(const std::vector<std::string>& candidates, size_t i);
  // A resume's load: both tiers' copies newest first (a local snapshot before a
  // persistent checkpoint of the same iteration; after a local snapshot whose copy of
  // a shard is damaged, the same snapshot with that shard from another node, then older
  // ones). Adds each failure to `failures`; nullopt when nothing could be loaded.
  std::optional<StateDict> resume_newest(const std::vector<std::string>& candidates, std::string& failures);
  // After a failed attempt of a resume: puts back the per-rank states the attempts
  // handed over (per_rank_undo_). Local to this rank; a failure is logged.
  void undo_per_rank() noexcept;
  // The persistent candidates of a resume, newest first (the tagged one first).
  std::vector<std::string> resume_candidates();
  // Loads a foreign weight file (PyTorch .pt/.pth, detectron2 checkpoint or model-zoo .pkl,
  // safetensors; foreign_load.cpp): the model by key matching, and the optimizer and
  // scheduler when `only` wants them and they can be mapped.
  StateDict load_foreign_file(const std::string& path, bool heuristics,
                              const std::optional<std::vector<std::string>>& only);
  // A save begun (save_protocol::begin) written synchronously and committed.
  void save_now(std::unique_ptr<save_protocol::PendingSave> save);
  // Commits the asynchronous save in flight.
  void complete_async();
  // Records a commit of `save` whose slowest shard write took `slowest_write` seconds.
  void committed(const save_protocol::PendingSave& save, double slowest_write);

  std::shared_ptr<torch::nn::Module> model_;
  std::string save_dir_;
  dist::Communicator& comm_;
  std::map<std::string, Checkpointable> checkpointables_;
  CheckpointerOptions options_;
  Env& env_;
  std::string loaded_from_;
  bool resuming_ = false;  // inside resume_or_load: every model tensor must match
  save_protocol::SaveDirState dir_state_;
  double last_save_s_ = 0.0;
  double last_write_s_ = 0.0;
  double last_stall_s_ = 0.0;
  int64_t commits_ = 0;
  std::unique_ptr<save_protocol::PendingSave> pending_;  // the asynchronous save in flight
  std::unique_ptr<AsyncShardWriter> writer_;
  CollectedState snapshot_buffers_;  // host buffers of the last snapshot, reused
  std::unique_ptr<LocalTier> local_;  // options.local
  bool loaded_from_local_ = false;
  int64_t last_load_bytes_read_ = 0;
  // Which of this rank's own reads of the last local load failed (a damaged piece, a
  // missing shard file, the index): tells a retry of a local snapshot which copies to avoid.
  ReadFailure read_failure_ = ReadFailure::kNone;
  // While a resume tries its candidates (resuming_): this rank's per-rank states as they
  // were before the first attempt, of the keys an attempt handed over
  // (DirectoryLoad::hand_over). A failed attempt may hand some ranks their state before
  // another rank fails, and the candidate that then serves, saved by fewer ranks, may
  // have none for this rank. Cleared when resume_or_load ends.
  std::map<std::string, StateDict> per_rank_undo_;
};

}  // namespace dtrain::checkpoint
