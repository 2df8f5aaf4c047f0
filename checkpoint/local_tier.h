// The node-local checkpoint tier (CHECKPOINT.LOCAL.*; docs/OPERATIONS.md "The tiers"):
// frequent snapshots of the full training state in node memory (/dev/shm by default),
// each rank's shard replicated to a buddy rank on another node, so that a killed rank
// or a lost node costs at most LOCAL.PERIOD iterations.
//
// A local snapshot is a checkpoint of format v1, written by the same shard writer,
// with the same pieces, checksums and index; only the place and the commit differ.
// Each node keeps, under <DIR>/<node id>/<job>/,
//
//   snap-0000000099/        committed: checkpoint.h5, this node's ranks' shards and
//                           the replicas it holds for ranks of other nodes
//   .snap-0000000104.tmp-local   a snapshot being written (or left by a crash)
//   .spare-rRRRRR.tmp-local      (LocalWrite::kMapped) rank R's shard file of a pruned
//                           snapshot, which R's next snapshot reuses
//   .ahead-rRRRRR.tmp-local      (kMapped) rank R's shard file for its next snapshot,
//                           created ahead while R holds fewer than KEEP + 1 files
//   .restore-…-rRRRRR/      files received for a resume, removed after it
//   job.txt                 the OUTPUT_DIR the job saves into
//   lock                    flock(2)ed by every rank of a run using it (lock_job)
//
// <job> is "job-" and 16 hex digits of a hash of the absolute OUTPUT_DIR and the run's
// config: snapshots of another run are never looked at.
//
// A snapshot: at an iteration boundary every rank copies its shard's rows (the stall)
// to host memory, written through HDF5 in the background (kHdf5), or straight into its
// mapped shard file, only hashed in the background (kMapped, shard_slab.h); at a later
// boundary, once
// every rank's write is done (one all-reduce), every rank learns every manifest (one
// all-gather), and each node's first rank finishes that node's checkpoint.h5, renames
// the directory into place and deletes the node's snapshots beyond LOCAL.KEEP. Then the
// ranks send their shard files to their buddies in the background
// (Communicator::exchange_bytes_async); a buddy stores a replica into its node's copy of
// that snapshot (a temporary, renamed into place) once it arrived. The next commit
// waits for them first. A failed snapshot, or a replica not stored, is a warning (the
// persistent tier is still there); it never stops training.
//
// A resume (plan_restore/stage): the ranks tell each other what their node holds and
// agree on the newest iteration for which every shard is on some node (of this world
// size first); ranks whose node lacks their shard receive it (and the index) from a
// rank that holds it. A snapshot of another world size is resharded by the load: each
// of its shards is read once, on a node that holds it, and spread over the
// communicator. A copy found damaged by the load is replaced by another node's copy of
// the same shard (a replica), else an older snapshot is tried (Checkpointer interleaves
// them with the persistent tier's checkpoints, newest first).
//
// Every method but abandon() is collective over the communicator, from the training
// thread. Not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "checkpoint/async_writer.h"
#include "checkpoint/format.h"
#include "checkpoint/slab_pool.h"
#include "runtime/base/env.h"
#include "runtime/base/file_lock.h"
#include "runtime/dist/communicator.h"

namespace boost::asio {
class thread_pool;
}  // namespace boost::asio

namespace dtrain::checkpoint {

// How a rank writes its shard of a snapshot. kMapped: into a shard file kept mapped and
// reused (shard_slab.h: one copy in the stall, only hashing in the background); kHdf5:
// a host copy in the stall, written through HDF5 in the background; kAuto: kMapped when
// the tier is in memory (tmpfs, ramfs) and the state is on the CPU, else kHdf5.
enum class LocalWrite { kAuto, kMapped, kHdf5 };
// CHECKPOINT.LOCAL.WRITE: "auto", "mapped" or "hdf5"; throws ConfigError naming the key.
LocalWrite parse_local_write(const std::string& value);

struct LocalTierOptions {
  int64_t period = 0;   // CHECKPOINT.LOCAL.PERIOD (iterations; 0: off)
  std::string dir;      // CHECKPOINT.LOCAL.DIR: the tier's root on every node ("{user}": expand_user)
  int replicas = 1;     // CHECKPOINT.LOCAL.REPLICAS: buddies on other nodes per shard
  int keep = 2;         // CHECKPOINT.LOCAL.KEEP: committed snapshots kept per node
  std::string node_id;  // this rank's node ("" : node_id_from_environment())
  // This rank's machine ("": fs::boot_id()): ranks that give the same node id must be on
  // one machine, which shares the node's directory (node_id_clash).
  std::string machine_id;
  // How long open() waits for another process that holds this job's lock on the node
  // (see LocalTier::lock_job) before the tier is not used in the run.
  std::chrono::milliseconds lock_wait{10000};
  std::string output_dir;   // the persistent tier's OUTPUT_DIR (the job's identity)
  std::string config_yaml;  // the run's config (the job's identity; stored in the index)
  LocalWrite write = LocalWrite::kAuto;
};

// DTRAIN_NODE_ID when set (tests run several "nodes" on one machine), else the host
// name. Throws ConfigError when it is not a plain file name.
std::string node_id_from_environment();
// `dir` with each "{user}" replaced by this user's name (fs::user_name()): the default
// root /dev/shm/dtrain-local-{user} is one per user, like /tmp/torchinductor_<user>.
std::string expand_user(const std::string& dir);
// `dir` absolute and normal, without a trailing separator.
std::string absolute_dir(const std::string& dir);
// "job-" and 16 hex digits of xxHash64 of the absolute output_dir and config_yaml.
std::string local_job_key(const std::string& output_dir, const std::string& config_yaml);

// Who sends what to whom in rounds of Communicator::send_recv_bytes: in each round a
// rank sends at most once and receives at most once. Greedy and deterministic: the
// same on every rank for the same pairs (sender, receiver).
std::vector<std::vector<std::pair<int, int>>> schedule_transfers(
    const std::vector<std::pair<int, int>>& pairs);

// "" when every node id names one machine; else why not: two ranks that give the same
// node id (`node_of`) from different machines (`machine_of`: boot ids; "" for unknown,
// never a clash), e.g. hosts with the same name, would each take the other's snapshots
// for their own node's.
std::string node_id_clash(const std::vector<std::string>& node_of, const std::vector<std::string>& machine_of);

// The replication pairs (sender, receiver): each rank sends its shard to the rank with
// the same position on each of the next `replicas` nodes (ring order of nodes by first
// rank; modulo the ranks of a smaller node). `node_of[r]`: rank r's node id.
std::vector<std::pair<int, int>> buddy_pairs(const std::vector<std::string>& node_of, int replicas);

// The snapshot a resume restores, the same on every rank.
struct LocalRestore {
  int64_t iteration = -1;       // -1: no complete snapshot
  int world = 0;                // the snapshot's world size (another one: resharded)
  std::vector<int> server;      // by shard: the rank whose node serves it
  std::string description;      // which tier served which shard, for the log
  // By shard: the nodes whose copy a load of this snapshot found damaged; this plan
  // serves those shards from other nodes' copies.
  std::map<int, std::set<std::string>> damaged;
  // The nodes whose copy of the index (checkpoint.h5) a load found damaged, and the rank
  // that reads the index in this plan, from a node not among them (-1: the first rank).
  std::set<std::string> bad_index;
  int index_reader = -1;
};

// What a failed load found it could not read on a rank (Checkpointer::read_failure_).
enum class ReadFailure : char { kNone = '-', kPieces = '!', kIndex = 'i' };

class LocalTier {
 public:
  LocalTier(dist::Communicator& comm, LocalTierOptions options, Env& env);
  ~LocalTier();  // waits for a write in flight (dropped)
  LocalTier(const LocalTier&) = delete;
  LocalTier& operator=(const LocalTier&) = delete;

  const LocalTierOptions& options() const { return options_; }
  // This node's directory of this job: <DIR>/<node id>/<job>.
  const std::string& job_dir() const { return job_dir_; }

  // Learns the nodes and buddies; checks that no other user can change the tier (each
  // node's leader: <DIR> trusted, <DIR>/<node> and the job's directory private, see
  // fs::trusted_dir, fs::check_private_dir; from then on the real path is used), else
  // the tier is not used in this run (refusal(): no snapshot is taken, each counted as
  // failed, and nothing in the tier is read or removed);
  // removes leftovers of crashed snapshots and the tiers of other configs of this
  // OUTPUT_DIR; without `resume`, this job's old snapshots too (a new run). Called once,
  // before anything else (start() opens a fresh run).
  void open(bool resume);
  // Why the tier is not used in this run ("" when it is): a directory of it that is not
  // one or that another user could change, on some node.
  const std::string& refusal() const { return refused_; }

  // Starts a snapshot of `live` at `iteration` (committing the one in flight first).
  void start(const CollectedState& live, int64_t iteration);
  // Before this run's first snapshot, at a step boundary where `live` has the layout
  // the snapshots will have (after a step: the optimizer's state exists): starts
  // making this rank's shard file ready on the background thread (taking over an
  // earlier process's spare, else creating one), so that the first snapshot takes it
  // instead of doing either in its stall. Only where snapshots are written through
  // mappings; once per run; not collective. A file that turns out not to fit is
  // removed by the snapshot.
  void prepare(const CollectedState& live);
  // Whether prepare() would do anything (so that a caller collects the state only then).
  bool wants_layout() const;
  // At a step boundary between snapshots: when a commit's prune left an earlier
  // process's shard file as this rank's spare (a resumed run's first KEEP commits),
  // starts taking it over on the background thread (SlabPool::prepare_takeover), so
  // that the next snapshot need not in its stall. Not collective; a few stat calls at
  // most, none once the rank holds KEEP + 1 files of its own.
  void prepare_takeover();
  // Advances the replicas in flight (not collective); then commits the snapshot in
  // flight if every rank's write is done, and says whether it did.
  bool poll();
  // Waits for the snapshot in flight, if any, and commits it; its replicas go on in the
  // background.
  void commit_now();
  // commit_now(), then waits until the replicas are stored: everything is on the tiers.
  void finish();
  // Local, never throws: drops the snapshot in flight and the replicas in flight (after
  // an error on some rank).
  void abandon() noexcept;
  bool in_flight() const { return pending_ != nullptr; }
  // Whether snapshots are written through mapped shard files (known after open()).
  bool mapped() const { return mapped_; }

  // The newest snapshot every shard of which some node holds (of this world size first).
  // After `failed` could not be loaded: the shards that the ranks whose reads failed
  // (`failure` on those ranks) read come from other nodes' copies of the same snapshot,
  // and the index from a node whose copy was not found damaged, where there are such
  // copies; else the newest older snapshot serves.
  LocalRestore plan_restore(const LocalRestore* failed = nullptr, ReadFailure failure = ReadFailure::kNone);
  // Makes this rank's shard and checkpoint.h5 of `plan` readable in one directory of
  // this node (its snapshot, or a staging directory the files are received into) and
  // returns that directory.
  std::string stage(const LocalRestore& plan);
  // After a resume from iteration `resumed` (either tier): removes staging directories
  // and this node's snapshots newer than `resumed` (of a timeline that was abandoned).
  void after_resume(int64_t resumed);
  // Removes this rank's staging directories (after a load of a snapshot failed: they
  // hold a shard's bytes, in memory on tmpfs). Local; a failure is a warning.
  void drop_staging() noexcept;
  // Removes this node's directory of this job (training ended: nothing to resume).
  void remove_all();

  int64_t commits() const { return commits_; }
  int64_t failures() const { return failures_; }
  // Replicas this rank could not read, send or store (each a warning).
  int64_t replica_failures() const { return replica_failures_; }
  // How long the last start() kept the caller (the host copy), and the last commit.
  double last_stall_seconds() const { return last_stall_s_; }
  double last_commit_seconds() const { return last_commit_s_; }
  // kMapped: this rank's shard files created in a snapshot's stall, ahead of it, and taken
  // over from an earlier process (a resumed run's spares; of those, ahead of the stall).
  int64_t shard_files_created_in_stall() const { return slabs_ ? slabs_->created_in_stall() : 0; }
  int64_t shard_files_created_ahead() const { return slabs_ ? slabs_->created_ahead() : 0; }
  int64_t shard_files_adopted() const { return slabs_ ? slabs_->adopted() : 0; }
  int64_t shard_files_adopted_ahead() const { return slabs_ ? slabs_->adopted_ahead() : 0; }

 private:
  struct Pending;
  struct Replication;
  void commit();
  // After `p` committed: starts sending this rank's shard to its buddies and receiving
  // theirs (every rank, when the job has buddies).
  void start_replication(const Pending& p);
  // Stores the received replicas on the background thread once they arrived (no wait).
  void advance_replication();
  // Waits for the transfers of `r` and posts the storing of what arrived.
  void store_replication(Replication& r);
  // Waits for the replicas in flight to be stored, and warns of those that were not.
  void settle_replication();
  boost::asio::thread_pool& background();
  // Whether a shard file may be made ready ahead now (prepare, prepare_takeover): the
  // tier is in use and written through mappings, and no snapshot is in flight.
  bool can_prepare() const;
  void commit_on_node(Pending& p, const std::vector<ShardManifest>& manifests);
  // After every node committed a snapshot: each node's leader prunes (a failure is a
  // warning), then every rank waits for every prune.
  void prune_after_commit();
  void prune();
  // This node's committed snapshots of this job (its snap-* directories), oldest first.
  std::vector<std::string> committed_snapshots();
  std::string spare_path(int rank) const;
  void require_open();
  // Points the tier at root `dir` (options_.dir, job_dir_).
  void set_root(const std::string& dir);
  // Creates what is missing of <DIR>/<node>/<job> (mode 700) and checks that <DIR> is
  // still trusted and the other two private (and job.txt there): at open, and when a
  // snapshot finds the job's directory is not the one checked (job_dir_id_).
  void make_job_dir();
  void secure();
  // Makes sure no other process uses this job's directory on any node (a run of the same
  // OUTPUT_DIR and config, or a process of a killed run still alive), waiting up to
  // LocalTierOptions::lock_wait for it to end, else throws CheckpointError (the same on
  // every rank): the node's first rank takes `lock` exclusively, then every rank of the
  // node holds it shared until this object goes.
  void lock_job();
  // At each snapshot: where this rank no longer holds its node's lock (the job's
  // directory was made again mid-run, or an earlier relock failed), takes the new
  // directory's shared, without waiting (throws CheckpointError where another process
  // holds it exclusively: the snapshot fails). A run that started while the directory
  // was gone holds it shared too and is not detected.
  void relock_job();
  // This rank holds the lock of the job's directory as it is now (kUnsupported: not held).
  bool holds_job_lock() const;
  void tidy_up(bool resume);

  // Declared first, so released last: after every thread and file of this run is done.
  std::unique_ptr<FileLock> job_lock_;
  dist::Communicator& comm_;
  LocalTierOptions options_;
  Env& env_;
  std::string job_dir_;
  fs::DirId job_dir_id_;  // of job_dir_ when this rank last made or checked it
  bool opened_ = false;
  std::string refused_;  // see refusal()
  bool leader_ = false;  // the first rank of this node
  std::vector<std::string> node_of_;  // by rank
  std::vector<int> replica_dests_, replica_sources_;  // this rank's buddies, both ways
  bool replicating_ = false;  // some rank of the job has a buddy
  bool staged_nothing_ = false;  // stage() got nothing from its sender: its copy failed
  // The leader's checkpoint.h5 virtual datasets (index_mappings_image) of the plan
  // index_layout_; used only on the index thread, one snapshot at a time. Declared
  // before pending_, whose index thread uses them.
  CheckpointIndex index_layout_;
  std::string index_image_;
  // The background thread (SCHED_BATCH) for the leader's index and the replicas'
  // storing, started once: a thread started per snapshot took the training thread's
  // core in the stall. Declared after what its jobs use, before what waits for them.
  std::unique_ptr<boost::asio::thread_pool> background_;
  // kMapped: this rank's shard files (at most LOCAL.KEEP + 1: the kept snapshots' and
  // the one being written; slab_pool.h), from open() on the tier's real path (null
  // before, and in a refused tier). A snapshot reuses the one whose file prune()
  // renamed to spare_path(), or one created ahead on background_.
  std::unique_ptr<SlabPool> slabs_;
  std::unique_ptr<Pending> pending_;
  std::unique_ptr<Replication> replication_;  // of the last snapshot committed
  std::unique_ptr<AsyncShardWriter> writer_;
  CollectedState buffers_;  // kHdf5: the host copy, reused
  bool mapped_ = false;
  bool layout_offered_ = false;  // prepare() ran
  int64_t commits_ = 0;
  int64_t failures_ = 0;
  int64_t replica_failures_ = 0;
  double last_stall_s_ = 0.0;
  double last_commit_s_ = 0.0;
};

}  // namespace dtrain::checkpoint
