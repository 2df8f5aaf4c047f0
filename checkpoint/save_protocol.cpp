// The commit protocol of a save (see save_protocol.h).
#include "checkpoint/save_protocol.h"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "checkpoint/save_dir.h"
#include "checkpoint/shard_plan.h"
#include "runtime/base/error.h"
#include "runtime/base/fault.h"
#include "runtime/base/env.h"
#include "runtime/base/fs.h"
#include "runtime/base/logging.h"
#include "runtime/base/thread_policy.h"
#include "runtime/dist/agree.h"

namespace dtrain::checkpoint::save_protocol {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string rank_list(const std::vector<int>& ranks) {
  return fmt::format("{} {}", ranks.size() == 1 ? "rank" : "ranks", fmt::join(ranks, ", "));
}

// Fault point in the middle of a shard write (crash tests).
ShardWriteObserver during_shard_fault(int rank) {
  return [rank](int64_t done, int64_t total) {
    if (done == (total + 1) / 2) fault::point("ckpt.during_shard", rank);
  };
}

// Which ranks see the directory rank 0 just created (node-local disks do not): each
// shard of a rank that does not is written by one that does.
void assign_writers(dist::Communicator& comm, PendingSave& ps, const std::string& save_dir,
                    SaveDirState& dir_state) {
  const int world = comm.size();
  bool sees = false;
  try {
    sees = ps.env->type_of(ps.tmp) == FileType::kDirectory;
  } catch (const Error&) {  // cannot even stat it: as good as not seeing it
  }
  const auto seen = dist::all_gather(comm, Visibility{sees, ""});
  std::vector<int> seeing, blind;
  for (int r = 0; r < world; ++r) (seen[r].readable ? seeing : blind).push_back(r);
  DTRAIN_CHECK_T(CheckpointError, !seeing.empty(),
                 "saving checkpoint '{}': no rank sees the directory '{}' that rank 0 created",
                 ps.final_dir, ps.tmp);
  ps.writer_of.resize(world);
  for (int r = 0, next = 0; r < world; ++r) {
    ps.writer_of[r] = seen[r].readable ? r : seeing[next++ % seeing.size()];
  }
  if (!blind.empty() && comm.rank() == 0 && !dir_state.warned_not_shared) {
    std::vector<int> proxies;
    for (int r : blind) proxies.push_back(ps.writer_of[r]);
    proxies.erase(std::unique(proxies.begin(), proxies.end()), proxies.end());
    DTRAIN_LOG_WARN(
        "OUTPUT_DIR '{}' is not visible from {} (a node-local disk, not shared between "
        "nodes?): their shards are written by {} instead, with their per-rank state sent "
        "over the communicator. Saves are slower (fewer ranks write, more bytes each) and "
        "asynchronous saves run synchronously. Put OUTPUT_DIR on a filesystem every node "
        "mounts to avoid this.",
        save_dir, rank_list(blind), rank_list(proxies));
  }
  dir_state.warned_not_shared = dir_state.warned_not_shared || !blind.empty();
}

// Rank 0: every rank's manifest (indexed by shard) from the reports, and the slowest
// write; throws listing the ranks that failed (`index_error`: rank 0's failure to begin
// checkpoint.h5).
std::vector<ShardManifest> manifests_of(const std::vector<ShardReport>& reports,
                                        const std::string& index_error, double& slowest) {
  std::string failures;
  for (size_t r = 0; r < reports.size(); ++r) {
    if (!reports[r].error.empty()) failures += fmt::format("; rank {}: {}", r, reports[r].error);
  }
  if (!index_error.empty() && reports[0].error.empty()) failures += "; rank 0: " + index_error;
  if (!failures.empty()) throw CheckpointError("writing shards failed" + failures + " (nothing was committed)");
  const size_t world = reports.size();
  std::vector<ShardManifest> manifests(world);
  std::vector<bool> have(world, false);
  for (const auto& report : reports) {
    slowest = std::max(slowest, report.write_seconds);
    for (const auto& [shard, manifest] : report.shards) {
      DTRAIN_CHECK_T(CheckpointError, shard >= 0 && static_cast<size_t>(shard) < world,
                     "internal: a report names shard {} of {}", shard, world);
      manifests[shard] = manifest;
      have[shard] = true;
    }
  }
  for (size_t s = 0; s < world; ++s) {
    DTRAIN_CHECK_T(CheckpointError, have[s], "internal: no rank wrote shard {}", s);
  }
  return manifests;
}

// Rank 0, after every shard was written: finishes checkpoint.h5 with `index`, renames
// the directory into place and moves the last_checkpoint tag to it, durably.
void finish_and_rename(PendingSave& ps, const CheckpointIndex& index, const std::string& save_dir) {
  // Hidden: removed with the other leftovers if a crash leaves it.
  const std::string tag_tmp =
      fmt::format("{}/.{}.tmp-{}", save_dir, save_dir::kLastCheckpoint, save_dir::random_id());
  try {
    // The directory's entries and the tag's new content are made durable while
    // checkpoint.h5 is finished; the tag is renamed into place after the commit.
    Env& env = *ps.env;
    auto dir_synced = std::async(std::launch::async, [&] { env.sync(ps.tmp); });
    auto tag_written = std::async(std::launch::async, [&] { fs::write_file_durable(tag_tmp, ps.name, env); });
    finish_index_file(ps.tmp, ps.planned, index, env);
    dir_synced.get();
    fault::point("ckpt.before_rename", 0);
    save_dir::commit_directory(env, ps.tmp, ps.final_dir);
    tag_written.get();
    fault::point("ckpt.before_last_checkpoint", 0);
    fs::rename_durable(tag_tmp, save_dir + "/" + save_dir::kLastCheckpoint, env);
  } catch (...) {
    // After the commit (the directory renamed, so ps.tmp is gone) the checkpoint stays;
    // only the tag's temporary goes.
    fs::remove_quietly(tag_tmp, *ps.env);
    throw;
  }
}

// Rank 0's part of the commit; returns the slowest write.
double commit_on_root(PendingSave& ps, const std::vector<ShardReport>& reports,
                      const std::string& save_dir) {
  try {
    // Joined before anything below can remove the directory it writes into.
    const bool index_begun = ps.index_begun.valid();
    std::string index_error;
    try {
      if (index_begun) ps.index_begun.get();
    } catch (const std::exception& e) {
      index_error = e.what();
    }
    double slowest = 0.0;
    const auto manifests = manifests_of(reports, index_error, slowest);
    const int world = static_cast<int>(reports.size());
    CheckpointIndex index = build_index(ps.state, manifests, world, ps.iteration);
    index.created = ps.planned.created;
    index.versions = ps.planned.versions;
    // What a load will check, checked before committing (e.g. ranks whose replicated
    // state differed in shape give pieces that do not tile).
    index.validate(fmt::format("index of '{}'", ps.final_dir));
    fault::point("ckpt.after_shards", 0);
    DTRAIN_CHECK_T(CheckpointError, index_begun, "internal: {} was not begun", kIndexFile);
    finish_and_rename(ps, index, save_dir);
    return slowest;
  } catch (...) {
    // Before the commit nothing of the save stays (after it, ps.tmp is gone).
    fs::remove_quietly(ps.tmp, *ps.env);
    throw;
  }
}

}  // namespace

bool PendingSave::shared() const {
  for (size_t s = 0; s < writer_of.size(); ++s) {
    if (writer_of[s] != static_cast<int>(s)) return false;
  }
  return true;
}

void PendingSave::begin_index(const CollectedState& live, const std::vector<Piece>& plan, int world,
                              const std::string& config_yaml) {
  planned = plan_index(live, plan, world, iteration);
  stamp_index(planned);
  index_begun = std::async(std::launch::async, [this, config_yaml] {
    run_as_background_thread();
    return begin_index_file(tmp, planned, config_yaml);
  });
}

std::unique_ptr<PendingSave> begin(dist::Communicator& comm, Env& env, const std::string& save_dir,
                                   const std::string& name, int64_t iteration, SaveDirState& dir_state) {
  auto ps = std::make_unique<PendingSave>();
  ps->env = &env;
  ps->t0 = std::chrono::steady_clock::now();
  ps->name = name;
  ps->final_dir = save_dir + "/" + name;
  ps->iteration = iteration;
  // Rank 0 creates the hidden temporary directory and tells everyone its name.
  ps->tmp = dist::on_root<CheckpointError>(comm, fmt::format("saving checkpoint '{}'", ps->final_dir), [&] {
    save_dir::validate_name(name);
    fs::create_directories_durable(save_dir, env);
    save_dir::refuse_to_replace_foreign(env, ps->final_dir);
    if (!dir_state.cleaned_stale) save_dir::remove_stale_temporaries(env, save_dir);
    return save_dir::create_temporary(env, save_dir, name);
  });
  dir_state.cleaned_stale = true;
  assign_writers(comm, *ps, save_dir, dir_state);
  return ps;
}

ShardReport write_shards(dist::Communicator& comm, PendingSave& ps, const std::string& config_yaml) {
  const int rank = comm.rank(), world = comm.size();
  const auto tw = std::chrono::steady_clock::now();
  ShardReport report;
  report.error = ps.error;
  // Per-rank state of ranks that do not see the directory goes to their shard's writer
  // (a collective call: made whatever happened before).
  std::vector<TensorPack> packs;
  if (!ps.shared()) {
    const bool blind = ps.writer_of[rank] != rank;
    packs = dist::all_gather(comm, blind && report.error.empty() ? TensorPack{ps.state.per_rank} : TensorPack{});
  }
  if (!report.error.empty()) return report;
  try {
    const auto plan = plan_shards(ps.state.replicated_meta(), world);
    if (rank == 0) ps.begin_index(ps.state, plan, world, config_yaml);
    fault::point("ckpt.before_shard", rank);
    for (int s = 0; s < world; ++s) {
      if (ps.writer_of[s] != rank) continue;
      const std::string path = ps.tmp + "/" + shard_file_name(s, world);
      if (s == rank) {
        report.shards[s] = write_shard(path, s, ps.state, plan, during_shard_fault(rank), *ps.env);
      } else {
        // The replicated state is the same on every rank: this rank's copy serves.
        CollectedState other;
        other.replicated = ps.state.replicated;
        other.per_rank = std::move(packs[s].tensors);
        report.shards[s] = write_shard(path, s, other, plan, nullptr, *ps.env);
      }
    }
  } catch (const std::exception& e) {
    report.error = e.what();
  }
  report.write_seconds = seconds_since(tw);
  return report;
}

void start_async_write(dist::Communicator& comm, PendingSave& ps, const CollectedState& live,
                       CollectedState& buffers, AsyncShardWriter& writer,
                       const std::string& config_yaml) {
  const int rank = comm.rank(), world = comm.size();
  try {
    // The host copy is the only stall; its buffers are reused from the last snapshot
    // (whose write has finished) when the state has the same tensors. Only the rows
    // this rank writes are copied.
    const auto plan = plan_shards(live.replicated_meta(), world);
    ps.state = snapshot(live, &buffers, &plan, rank);
    buffers = ps.state;
    if (rank == 0) ps.begin_index(live, plan, world, config_yaml);
    fault::point("ckpt.before_shard", rank);
    writer.start(ps.tmp + "/" + shard_file_name(rank, world), rank, ps.state, plan,
                 during_shard_fault(rank), *ps.env);
  } catch (const std::exception& e) {
    ps.error = e.what();  // reported, on every rank, by the commit
  }
}

ShardReport finish_async_write(dist::Communicator& comm, const PendingSave& ps, AsyncShardWriter& writer) {
  ShardReport report;
  report.error = ps.error;
  if (!report.error.empty()) return report;
  try {
    report.shards[comm.rank()] = writer.wait();
  } catch (const std::exception& e) {
    report.error = e.what();
  }
  report.write_seconds = writer.last_write_seconds();
  return report;
}

double commit(dist::Communicator& comm, PendingSave& ps, const std::string& save_dir,
              const ShardReport& mine) {
  // Every rank reports to rank 0, in one all-gather; rank 0 commits and tells every rank
  // the slowest shard write, or the error.
  const auto reports = dist::all_gather(comm, mine);
  const std::string slowest =
      dist::on_root<CheckpointError>(comm, fmt::format("saving checkpoint '{}'", ps.final_dir), [&] {
        return fmt::format("{}", commit_on_root(ps, reports, save_dir));
      });
  return std::stod(slowest);
}

}  // namespace dtrain::checkpoint::save_protocol
