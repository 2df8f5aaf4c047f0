// The node-local checkpoint tier (see local_tier.h).
#include "checkpoint/local_tier.h"

#include <linux/magic.h>
#include <sys/vfs.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <future>
#include <set>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "checkpoint/local_tier_files.h"
#include "checkpoint/messages.h"
#include "checkpoint/save_dir.h"
#include "runtime/base/error.h"
#include "runtime/base/fs.h"
#include "runtime/base/logging.h"
#include "runtime/base/thread_policy.h"
#include "runtime/dist/agree.h"

namespace dtrain::checkpoint {
namespace {

using local_detail::snap_iteration;
using local_detail::snap_name;
using local_detail::whole_file;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Whether `dir` is on a file system in memory (tmpfs, ramfs): no disk behind a mapping.
bool in_memory_fs(const std::string& dir) {
  struct statfs st {};
  if (::statfs(dir.c_str(), &st) != 0) return false;
  return st.f_type == TMPFS_MAGIC || st.f_type == RAMFS_MAGIC;
}

bool all_on_cpu(const CollectedState& state) {
  for (const auto* part : {&state.replicated, &state.per_rank}) {
    for (const auto& [name, t] : *part) {
      if (!t.device().is_cpu()) return false;
    }
  }
  return true;
}

}  // namespace

struct LocalTier::Pending {
  int64_t iteration = -1;
  std::string tmp, final_dir;
  std::string error;  // this rank's error before its write started
  CollectedState state;  // kHdf5: the host copy; kMapped: the live state (for its layout)
  std::shared_ptr<ShardSlab> slab;  // kMapped: the file written
  // kHdf5 with buddies: the shard's bytes, read back on the I/O thread after the write
  // (written there before the writer's wait() returns), for the replicas.
  struct ReadBack {
    std::string bytes, error;
  };
  std::shared_ptr<ReadBack> read_back;
  std::chrono::steady_clock::time_point t0;
  double copy_s = 0.0;            // of the stall, the copy of the rows
  bool new_file = false;          // kMapped: the stall created the shard file
  bool renaming = false;          // the node leader began renaming tmp to final_dir
  CheckpointIndex planned;        // the node leader's
  std::future<void> index_begun;  // of the task on background_, which uses this Pending

  Pending() = default;
  Pending(const Pending&) = delete;
  Pending& operator=(const Pending&) = delete;
  // A packaged task's future does not wait when destroyed: wait here, so that no path
  // that drops a Pending (commit, an error, abandon) leaves the index thread using it.
  ~Pending() {
    if (index_begun.valid()) index_begun.wait();
  }
};

// The replicas of the last snapshot committed: this rank's shard going to its buddies
// and theirs coming in, then stored into this node's copy of the snapshot.
struct LocalTier::Replication {
  int64_t iteration = -1;
  std::string dir;                          // the committed snapshot on this node
  std::unique_ptr<dist::Exchange> exchange;
  std::future<std::string> stored;          // of the store job on background_: its error
  std::string error;                        // this rank's first failure
  int64_t received_bytes = 0;
  std::chrono::steady_clock::time_point t0;

  Replication() = default;
  Replication(const Replication&) = delete;
  Replication& operator=(const Replication&) = delete;
  ~Replication() {
    if (stored.valid()) stored.wait();  // a packaged task's future does not wait
  }
};

LocalTier::LocalTier(dist::Communicator& comm, LocalTierOptions options, Env& env)
    : comm_(comm), options_(std::move(options)), env_(env), writer_(std::make_unique<AsyncShardWriter>()) {
  DTRAIN_CHECK_T(ConfigError, options_.period > 0 && options_.keep >= 1 && options_.replicas >= 0 &&
                                  !options_.dir.empty(),
                 "the local tier needs CHECKPOINT.LOCAL.PERIOD > 0 (got {}), LOCAL.KEEP >= 1 (got {}), "
                 "LOCAL.REPLICAS >= 0 (got {}) and a LOCAL.DIR",
                 options_.period, options_.keep, options_.replicas);
  if (options_.node_id.empty()) options_.node_id = node_id_from_environment();
  set_root(absolute_dir(expand_user(options_.dir)));
}

LocalTier::~LocalTier() { abandon(); }

boost::asio::thread_pool& LocalTier::background() {
  if (!background_) {
    background_ = std::make_unique<boost::asio::thread_pool>(1);
    boost::asio::post(*background_, [] { run_as_background_thread(); });
  }
  return *background_;
}

void LocalTier::require_open() {
  if (!opened_) open(false);
}

void LocalTier::open(bool resume) {
  // One all-gather of "<machine>\n<node id>" (a boot id has no newline; a node id may).
  const std::string machine = options_.machine_id.empty() ? fs::boot_id() : options_.machine_id;
  std::vector<std::string> machine_of = comm_.all_gather_bytes(machine + '\n' + options_.node_id);
  node_of_.clear();
  for (std::string& m : machine_of) {
    const size_t end = m.find('\n');
    node_of_.push_back(m.substr(end + 1));
    m.resize(end);
  }
  const int rank = comm_.rank();
  leader_ = std::find(node_of_.begin(), node_of_.end(), options_.node_id) - node_of_.begin() == rank;
  const auto pairs = buddy_pairs(node_of_, options_.replicas);
  replica_dests_.clear();
  replica_sources_.clear();
  for (const auto& [from, to] : pairs) {
    if (from == rank) replica_dests_.push_back(to);
    if (to == rank) replica_sources_.push_back(from);
  }
  replicating_ = !pairs.empty();
  opened_ = true;
  // A tier another user could change is never used: what it holds could be planted.
  try {
    const std::string clash = node_id_clash(node_of_, machine_of);
    if (!clash.empty()) throw CheckpointError(clash);  // the same on every rank
    secure();
    lock_job();
    slabs_ = std::make_unique<SlabPool>(env_, spare_path(rank),
                                        fmt::format("{}/.ahead-r{:05d}.tmp-local", job_dir_, rank),
                                        static_cast<size_t>(options_.keep) + 1);
  } catch (const CheckpointError& e) {
    refused_ = e.what();
    job_lock_.reset();  // a run that does not use the tier keeps no other run from it
    if (rank == 0) {
      DTRAIN_LOG_ERROR("The local tier is not used in this run: no local snapshot is taken (CHECKPOINT.LOCAL; "
                       "each counts as failed) and none is resumed from: {}",
                       refused_);
    }
    return;
  }
  const size_t nodes = std::set<std::string>(node_of_.begin(), node_of_.end()).size();
  if (rank == 0) {
    if (nodes == 1 && options_.replicas > 0) {
      DTRAIN_LOG_WARN("Local snapshots (CHECKPOINT.LOCAL) have no buddy replicas: all {} ranks are on "
                      "node '{}'. A node that loses its local tier is served by the persistent tier",
                      comm_.size(), options_.node_id);
    }
    DTRAIN_LOG_INFO("Local snapshots every {} iterations in {}/<node>/{} ({} node(s), {} replica(s) "
                    "of each shard, {} kept)",
                    options_.period, options_.dir, std::filesystem::path(job_dir_).filename().string(),
                    nodes, std::min<size_t>(options_.replicas, nodes - 1), options_.keep);
  }
  // The node's first rank tidies up; the agreement orders it before any snapshot. A
  // tier that cannot be tidied is a warning: its snapshots fail and say so. (One whose
  // job directory could not be made or locked above is not used in the run.)
  try {
    tidy_up(resume);
  } catch (const CheckpointError& e) {
    if (rank == 0) DTRAIN_LOG_WARN("{}", e.what());
  }
  mapped_ = options_.write == LocalWrite::kMapped ||
            (options_.write == LocalWrite::kAuto && in_memory_fs(job_dir_));
  // A spare a resume kept serves only a rank that writes through mappings.
  if (!mapped_) slabs_->release();
}

void LocalTier::start(const CollectedState& live, int64_t iteration) {
  require_open();
  if (!refused_.empty() || !slabs_) {  // refused (said once, at open()), or open() failed
    ++failures_;
    return;
  }
  advance_replication();
  if (pending_) commit();  // at most one in flight
  auto p = std::make_unique<Pending>();
  p->t0 = std::chrono::steady_clock::now();
  p->iteration = iteration;
  p->final_dir = job_dir_ + "/" + snap_name(iteration);
  p->tmp = job_dir_ + "/." + snap_name(iteration) + ".tmp-local";
  const int rank = comm_.rank(), world = comm_.size();
  try {
    // Still the private directory made or checked (one lstat)? Else removed while the
    // run went on (a tidy-up of /dev/shm): made again as at open, or refused.
    if (fs::private_dir_id(job_dir_) != job_dir_id_ || job_dir_id_ == fs::DirId{}) make_job_dir();
    relock_job();  // one fstat and one lstat where it holds the lock
    env_.create_dir(p->tmp, DirAccess::kPrivate);  // by every rank of the node: whoever comes first
    const auto plan = plan_shards(live.replicated_meta(), world);
    const std::string shard_path = p->tmp + "/" + shard_file_name(rank, world);
    std::vector<ShardItem> items;
    if (mapped_ && all_on_cpu(live)) {
      items = shard_items(live, plan, rank, /*contiguous_cpu=*/false);
      const int64_t created = slabs_->created_in_stall();
      p->slab = slabs_->take(items, shard_path);
      p->new_file = slabs_->created_in_stall() > created;
      const auto copy_t0 = std::chrono::steady_clock::now();
      p->slab->fill(items);
      p->copy_s = seconds_since(copy_t0);
      p->state = live;
      buffers_ = CollectedState{};
    } else {
      // State on a GPU on a tier in memory: the prune made this rank a spare it will
      // not use; it would hold a shard of the tier's memory.
      if (mapped_) slabs_->release();
      const auto copy_t0 = std::chrono::steady_clock::now();
      p->state = snapshot(live, &buffers_, &plan, rank);
      p->copy_s = seconds_since(copy_t0);
      buffers_ = p->state;
    }
    if (leader_) {
      p->planned = plan_index(live, plan, world, iteration);
      stamp_index(p->planned);
      Pending* raw = p.get();
      std::packaged_task<void()> task([this, raw] {
        // Snapshots of one run share their layout: the virtual datasets are made once.
        if (index_image_.empty() || !mapping_difference(index_layout_, raw->planned).empty()) {
          index_image_ = index_mappings_image(job_dir_ + "/.index-layout.tmp-local", raw->planned);
          index_layout_ = raw->planned;
        }
        begin_index_file(raw->tmp, raw->planned, options_.config_yaml, &index_image_);
      });
      p->index_begun = task.get_future();
      boost::asio::post(background(), std::move(task));
    }
    if (p->slab) {
      // The items' tensors are views of the live state: only their names, dtypes and
      // shapes are read on the I/O thread (training changes their values, not those).
      writer_->start_job([slab = p->slab, items = std::move(items), path = shard_path, rank, &env = env_] {
        const std::vector<uint64_t> hashes = slab->hashes();
        env.sync(path);
        return shard_manifest(items, hashes, rank);
      });
      // After the index task (the commit needs that first); not when this snapshot's
      // commit will prune a snapshot, whose file of this rank becomes the spare.
      slabs_->prepare_next(background(), [this] {
        return static_cast<int64_t>(committed_snapshots().size()) >= options_.keep;
      });
    } else {
      if (!replica_dests_.empty()) p->read_back = std::make_shared<Pending::ReadBack>();
      writer_->start_job([path = shard_path, rank, state = p->state, plan, read_back = p->read_back, &env = env_] {
        ShardManifest m = write_shard(path, rank, state, plan, nullptr, env);
        // Read back here, not on the training thread at the commit: the bytes the
        // buddies get (the commit's rename leaves them as they are).
        if (read_back) {
          try {
            read_back->bytes = env.read_file(path, whole_file());
          } catch (const std::exception& e) {
            read_back->error = e.what();
          }
        }
        return m;
      });
    }
  } catch (const std::exception& e) {
    p->error = e.what();
  }
  last_stall_s_ = seconds_since(p->t0);
  pending_ = std::move(p);
}

bool LocalTier::can_prepare() const {
  // The pool exists only in a tier that was opened and not refused.
  return slabs_ && mapped_ && !pending_;
}

bool LocalTier::wants_layout() const { return can_prepare() && !layout_offered_ && commits_ + failures_ == 0; }

void LocalTier::prepare(const CollectedState& live) {
  if (!wants_layout()) return;
  layout_offered_ = true;
  if (!all_on_cpu(live)) return;  // such state is written through HDF5 (start)
  try {
    const auto plan = plan_shards(live.replicated_meta(), comm_.size());
    if (slabs_->prepare_first(background(), shard_items(live, plan, comm_.rank(), /*contiguous_cpu=*/false))) {
      DTRAIN_LOG_DEBUG("Making rank {}'s first local shard file ready ahead", comm_.rank());
    }
  } catch (const std::exception& e) {
    DTRAIN_LOG_DEBUG("Not creating rank {}'s first local shard file ahead: {}", comm_.rank(), e.what());
  }
}

void LocalTier::prepare_takeover() {
  if (!can_prepare()) return;
  if (slabs_->prepare_takeover(background())) {
    DTRAIN_LOG_DEBUG("Taking rank {}'s spare shard file of an earlier run over ahead", comm_.rank());
  }
}

bool LocalTier::poll() {
  advance_replication();
  if (!pending_) return false;
  const int64_t done = !pending_->error.empty() || writer_->done() ? 1 : 0;
  if (comm_.all_reduce_int(done, dist::ReduceOp::kMin) == 0) return false;
  commit();
  return true;
}

void LocalTier::commit_now() {
  if (pending_) commit();
}

void LocalTier::finish() {
  commit_now();
  settle_replication();
}

void LocalTier::abandon() noexcept {
  replication_.reset();  // gives its transfers up, waits for its store job
  if (!pending_) return;
  if (writer_->in_flight()) {
    try {
      writer_->wait();
    } catch (const std::exception&) {
    }
  }
  slabs_->drop(pending_->slab);  // its file is a temporary, removed with the next open
  pending_.reset();  // waits for its index task; the temporary goes with the next open
}

std::string LocalTier::spare_path(int rank) const {
  return fmt::format("{}/.spare-r{:05d}.tmp-local", job_dir_, rank);
}

void LocalTier::start_replication(const Pending& p) {
  if (!replicating_) return;
  auto r = std::make_unique<Replication>();
  r->iteration = p.iteration;
  r->dir = p.final_dir;
  r->t0 = std::chrono::steady_clock::now();
  std::string_view send;
  std::shared_ptr<const void> keep;
  if (!replica_dests_.empty()) {
    try {
      if (p.slab) {
        send = p.slab->contents();  // the committed shard file, mapped: sent as it is
        keep = p.slab;
      } else {
        DTRAIN_CHECK_T(CheckpointError, p.read_back && p.read_back->error.empty(), "{}",
                       p.read_back ? p.read_back->error : "internal: no shard read back");
        send = p.read_back->bytes;
        keep = p.read_back;
      }
    } catch (const std::exception& e) {
      r->error = fmt::format("reading the shard to replicate: {}", e.what());  // sends nothing
    }
  }
  try {
    r->exchange = comm_.exchange_bytes_async(send, std::move(keep), replica_dests_, replica_sources_);
  } catch (const std::exception& e) {
    r->error = fmt::format("sending the replicas: {}", e.what());
  }
  replication_ = std::move(r);
  advance_replication();
}

namespace {
// The store job: each replica received is written under a temporary name in the job's
// directory, synced, and renamed into the committed snapshot `dir`. Returns the first
// error ("" if none).
std::string store_replicas(Env& env, const std::string& job_dir, const std::string& dir,
                           const std::vector<int>& sources, std::vector<std::string> received, int world) {
  std::string error;
  for (size_t i = 0; i < sources.size(); ++i) {
    if (received[i].empty()) continue;  // its sender failed to read it, and says so
    const std::string name = shard_file_name(sources[i], world);
    const std::string tmp = fmt::format("{}/.replica-{}.{}.tmp-local", job_dir,
                                        std::filesystem::path(dir).filename().string(), name);
    try {
      fs::remove_quietly(tmp, env);
      fs::write_file_durable(tmp, received[i], env);
      fs::rename_durable(tmp, dir + "/" + name, env);  // and syncs `dir`
    } catch (const std::exception& e) {
      fs::remove_quietly(tmp, env);
      if (error.empty()) error = fmt::format("storing the replica of rank {}'s shard: {}", sources[i], e.what());
    }
  }
  return error;
}
}  // namespace

void LocalTier::advance_replication() {
  Replication* r = replication_.get();
  if (r == nullptr || r->exchange == nullptr || r->stored.valid()) return;
  try {
    if (r->exchange->test()) store_replication(*r);
  } catch (const std::exception& e) {
    r->error = fmt::format("receiving the replicas: {}", e.what());
    r->exchange.reset();  // given up
  }
}

void LocalTier::store_replication(Replication& r) {
  std::vector<std::string> received = r.exchange->wait();
  r.exchange.reset();  // finished: frees what was sent
  for (const auto& b : received) r.received_bytes += static_cast<int64_t>(b.size());
  std::packaged_task<std::string()> task(
      [&env = env_, job = job_dir_, dir = r.dir, sources = replica_sources_, received = std::move(received),
       world = comm_.size()]() mutable { return store_replicas(env, job, dir, sources, std::move(received), world); });
  r.stored = task.get_future();
  boost::asio::post(background(), std::move(task));
}

void LocalTier::settle_replication() {
  if (!replication_) return;
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<Replication> r = std::move(replication_);
  // Never throws: a replica that did not make it is a warning, and every rank goes on to
  // the commit's all-gather. The leader prunes after that all-gather, so after every
  // rank of its node settled: no replica is stored into a snapshot being removed.
  try {
    if (r->exchange != nullptr && !r->stored.valid()) store_replication(*r);  // waits for the transfers
    if (r->stored.valid()) {
      const std::string stored = r->stored.get();
      if (r->error.empty()) r->error = stored;
    }
  } catch (const std::exception& e) {
    if (r->error.empty()) r->error = fmt::format("receiving the replicas: {}", e.what());
  }
  if (!r->error.empty()) {
    ++replica_failures_;
    DTRAIN_LOG_WARN_RANK("Replicas of local snapshot {}: {}. A loss of this node or its buddy's is served by "
                         "an older snapshot or the persistent tier",
                         r->iteration, r->error);
  }
  if (comm_.rank() == 0) {
    DTRAIN_LOG_DEBUG("Replicas of local snapshot {}: {} bytes received and stored by {:.4f} s after its commit "
                     "(the training waited {:.4f} s for them)",
                     r->iteration, r->received_bytes, seconds_since(r->t0), seconds_since(t0));
  }
}

void LocalTier::commit_on_node(Pending& p, const std::vector<ShardManifest>& manifests) {
  CheckpointIndex index = build_index(p.state, manifests, comm_.size(), p.iteration);
  index.created = p.planned.created;
  index.versions = p.planned.versions;
  index.validate(fmt::format("index of local snapshot '{}'", p.final_dir));
  p.index_begun.get();
  finish_index_file(p.tmp, p.planned, index, env_);
  env_.sync(p.tmp);
  p.renaming = true;
  save_dir::commit_directory(env_, p.tmp, p.final_dir);
}

void LocalTier::prune_after_commit() {
  std::string error;
  if (leader_) {
    try {
      prune();
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  // The next take() of a rank of this node may use the spare the prune made.
  comm_.barrier();
  if (!error.empty()) {
    DTRAIN_LOG_WARN_RANK("Removing local snapshots beyond CHECKPOINT.LOCAL.KEEP ({}) in {}: {}", options_.keep,
                         job_dir_, error);
  }
}

void LocalTier::commit() {
  settle_replication();  // on every rank before the all-gather, after which the leader prunes
  if (slabs_) slabs_->settle();  // a takeover ahead maps the spare path, which the prune renames to
  std::unique_ptr<Pending> p = std::move(pending_);
  const auto t0 = std::chrono::steady_clock::now();
  const int rank = comm_.rank();
  ShardReport report;
  report.error = p->error;
  try {
    // A write started before this rank's error is waited for too: the next snapshot
    // needs the writer free.
    if (writer_->in_flight()) {
      ShardManifest m = writer_->wait();
      if (report.error.empty()) report.shards[rank] = std::move(m);
    }
  } catch (const std::exception& e) {
    if (report.error.empty()) report.error = e.what();
  }
  report.write_seconds = writer_->last_write_seconds();
  if (!report.error.empty()) report.shards.clear();
  const auto reports = dist::all_gather(comm_, report);
  std::string failures;
  std::vector<ShardManifest> manifests(reports.size());
  for (size_t r = 0; r < reports.size(); ++r) {
    if (!reports[r].error.empty()) failures += fmt::format("; rank {}: {}", r, reports[r].error);
    auto it = reports[r].shards.find(static_cast<int>(r));
    if (it != reports[r].shards.end()) manifests[r] = it->second;
  }
  try {
    DTRAIN_CHECK_T(CheckpointError, failures.empty(), "writing shards failed{}", failures);
    dist::all_or_none<CheckpointError>(comm_, fmt::format("committing local snapshot '{}'", p->final_dir),
                                       [&] {
                                         if (leader_) commit_on_node(*p, manifests);
                                       });
    ++commits_;
    // Only now, with the snapshot committed on every node: a node that dropped its
    // oldest before another node's rename could leave no snapshot complete on both.
    prune_after_commit();
    start_replication(*p);
  } catch (const CheckpointError& e) {
    ++failures_;
    slabs_->drop(p->slab);
    if (leader_) {
      if (p->index_begun.valid()) p->index_begun.wait();
      // Renamed here (the sync after the rename may have failed) but not committed on
      // every node: not a snapshot to keep, nor to count against LOCAL.KEEP.
      try {
        const bool renamed = p->renaming && env_.type_of(p->tmp) == FileType::kMissing;
        fs::remove_quietly(p->tmp, env_);
        if (renamed) save_dir::remove_dir_safely(env_, p->final_dir);
      } catch (const std::exception& x) {  // incomplete: a resume never picks it
        DTRAIN_LOG_WARN_RANK("Removing the uncommitted local snapshot {}: {}", p->final_dir, x.what());
      }
    }
    // Every rank of the node waits for that removal before its next snapshot makes a
    // shard file in place of the one dropped: never more than KEEP + 1 per rank.
    comm_.barrier();
    if (rank == 0) {
      DTRAIN_LOG_WARN("Local snapshot of iteration {} failed; training goes on ({} failed so far; the "
                      "persistent tier is unaffected): {}",
                      p->iteration, failures_, e.what());
    }
  }
  last_commit_s_ = seconds_since(t0);
  if (rank == 0) {
    DTRAIN_LOG_DEBUG("Local snapshot of iteration {}: stall {:.4f} s (copy {:.4f} s{}), write {:.4f} s, "
                     "commit {:.4f} s",
                     p->iteration, last_stall_s_, p->copy_s, p->new_file ? ", a new shard file" : "",
                     report.write_seconds, last_commit_s_);
  }
}

std::vector<std::string> LocalTier::committed_snapshots() {
  std::vector<std::string> snaps;
  for (const auto& n : env_.children(job_dir_)) {
    if (snap_iteration(n) >= 0) snaps.push_back(n);
  }
  std::sort(snaps.begin(), snaps.end());  // zero-padded: name order is iteration order
  return snaps;
}

void LocalTier::prune() {
  const std::vector<std::string> snaps = committed_snapshots();
  for (int64_t i = 0; i + options_.keep < static_cast<int64_t>(snaps.size()); ++i) {
    const std::string dir = job_dir_ + "/" + snaps[i];
    // The node's ranks reuse their own shard files (SlabPool::take); replicas go.
    for (int r = 0; mapped_ && r < comm_.size(); ++r) {
      const std::string shard = dir + "/" + shard_file_name(r, comm_.size());
      if (node_of_[r] == options_.node_id && env_.type_of(shard) == FileType::kRegular) {
        env_.rename(shard, spare_path(r));
      }
    }
    save_dir::remove_dir_safely(env_, dir);
  }
}

void LocalTier::remove_all() {
  finish();
  if (!slabs_) return;  // not opened, or refused: nothing of this run's to remove
  slabs_->release();  // waits for a file being created ahead
  comm_.barrier();    // every rank of the node is done with the directory
  if (leader_) fs::remove_quietly(job_dir_, env_);
}

}  // namespace dtrain::checkpoint
