// Checkpointer: its public, collective API (checkpointer.h). The save protocol is in
// save_protocol.cpp, loading a directory in load.cpp (planned by load_plan.cpp), foreign
// weight files in foreign_load.cpp, retention in retention.cpp.
#include "checkpoint/checkpointer.h"

#include <chrono>
#include <filesystem>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "checkpoint/interop/weights.h"
#include "checkpoint/messages.h"
#include "checkpoint/remote.h"
#include "checkpoint/save_dir.h"
#include "runtime/base/error.h"
#include "runtime/base/fs.h"
#include "runtime/base/logging.h"
#include "runtime/h5/file.h"
#include "runtime/dist/agree.h"

namespace dtrain::checkpoint {
namespace stdfs = std::filesystem;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int64_t iteration_of(const StateDict& extra) {
  auto it = extra.find("iteration");
  if (it == extra.end()) return -1;
  auto i = std::get_if<int64_t>(&it->second);
  return i ? *i : -1;
}

}  // namespace

Checkpointer::Checkpointer(std::shared_ptr<torch::nn::Module> model, std::string save_dir,
                           dist::Communicator& comm,
                           std::map<std::string, Checkpointable> checkpointables,
                           CheckpointerOptions options)
    : model_(std::move(model)),
      save_dir_(std::move(save_dir)),
      comm_(comm),
      checkpointables_(std::move(checkpointables)),
      options_(std::move(options)),
      env_(options_.env != nullptr ? *options_.env : Env::posix()) {
  if (options_.local) {
    if (options_.local->config_yaml.empty()) options_.local->config_yaml = options_.config_yaml;
    if (options_.local->output_dir.empty()) options_.local->output_dir = save_dir_;
    local_ = std::make_unique<LocalTier>(comm_, *options_.local, env_);
  }
  for (const auto& [key, c] : checkpointables_) {
    DTRAIN_CHECK(key != "model" && key != "extra" && c.state != nullptr,
                 "checkpointable '{}': the names 'model' and 'extra' are reserved and the "
                 "state must not be null", key);
  }
}

void Checkpointer::check_collective(const std::string& what, const std::string& arg) {
  dist::check_collective<CheckpointError>(comm_, "Checkpointer", what, arg);
}

CollectedState Checkpointer::collect(const StateDict& extra) const {
  CollectedState st;
  ModuleState model_state(model_);
  for (auto& [k, v] : model_state.state_dict()) st.replicated.emplace_back("model/" + k, std::get<at::Tensor>(v));
  auto add = [&st](const std::string& prefix, const StateDict& s, Scope scope) {
    for (const auto& [k, v] : s) {
      const std::string name = prefix + "/" + k;
      if (auto t = std::get_if<at::Tensor>(&v)) {
        DTRAIN_CHECK_T(CheckpointError, t->defined(), "state '{}' is an undefined tensor", name);
        (scope == Scope::kReplicated ? st.replicated : st.per_rank).emplace_back(name, *t);
      } else if (scope == Scope::kReplicated) {
        st.scalars[name] = v;
      } else if (auto i = std::get_if<int64_t>(&v)) {
        st.per_rank.emplace_back(name, at::scalar_tensor(*i, at::kLong));
      } else if (auto d = std::get_if<double>(&v)) {
        st.per_rank.emplace_back(name, at::scalar_tensor(*d, at::kDouble));
      } else {
        throw CheckpointError(fmt::format("per-rank state '{}' is a string; only tensors and "
                                          "numbers can differ between ranks", name));
      }
    }
  };
  for (const auto& [key, c] : checkpointables_) add(key, c.state->state_dict(), c.scope);
  add("extra", extra, Scope::kReplicated);
  return st;
}

Checkpointer::~Checkpointer() {
  if (pending_) {
    DTRAIN_LOG_WARN("The asynchronous save of checkpoint {} was not committed (training "
                    "stopped before it was); nothing of it is visible",
                    pending_->final_dir);
    abandon_async();
  }
}

void Checkpointer::committed(const save_protocol::PendingSave& save, double slowest_write) {
  last_write_s_ = slowest_write;
  ++commits_;
  last_save_s_ = seconds_since(save.t0);
}

void Checkpointer::save(const std::string& name, const StateDict& extra) {
  check_collective("save", name);
  finish_async();
  auto ps = save_protocol::begin(comm_, env_, save_dir_, name, iteration_of(extra), dir_state_);
  try {
    ps->state = collect(extra);
  } catch (const std::exception& e) {
    ps->error = e.what();  // reported, on every rank, by the commit
  }
  save_now(std::move(ps));
}

void Checkpointer::save_now(std::unique_ptr<save_protocol::PendingSave> ps) {
  // Every rank writes and fsyncs its shard (and those of ranks that cannot see the
  // directory), straight from the live tensors.
  const ShardReport report = save_protocol::write_shards(comm_, *ps, options_.config_yaml);
  committed(*ps, save_protocol::commit(comm_, *ps, save_dir_, report));
  last_stall_s_ = last_save_s_;
  if (comm_.rank() == 0) {
    DTRAIN_LOG_INFO("Saved checkpoint {} in {:.3f} s (slowest shard write {:.3f} s)",
                    ps->final_dir, last_save_s_, last_write_s_);
  }
}

void Checkpointer::save_async(const std::string& name, const StateDict& extra) {
  check_collective("save_async", name);
  finish_async();  // at most one in flight
  auto ps = save_protocol::begin(comm_, env_, save_dir_, name, iteration_of(extra), dir_state_);
  CollectedState live;
  try {
    live = collect(extra);
  } catch (const std::exception& e) {
    ps->error = e.what();
  }
  if (!ps->shared()) {
    // Some ranks' shards are written by others (OUTPUT_DIR not shared; begin warned):
    // written now, from the live state.
    ps->state = std::move(live);
    save_now(std::move(ps));
    return;
  }
  if (!writer_) writer_ = std::make_unique<AsyncShardWriter>();
  if (ps->error.empty()) {
    save_protocol::start_async_write(comm_, *ps, live, snapshot_buffers_, *writer_, options_.config_yaml);
  }
  last_stall_s_ = seconds_since(ps->t0);
  pending_ = std::move(ps);
  if (comm_.rank() == 0) {
    DTRAIN_LOG_DEBUG("Started asynchronous save of {} (training stalled {:.3f} s)",
                     pending_->final_dir, last_stall_s_);
  }
}

bool Checkpointer::poll_async() {
  if (!pending_) return false;
  const int64_t done = !pending_->error.empty() || writer_->done() ? 1 : 0;
  if (comm_.all_reduce_int(done, dist::ReduceOp::kMin) == 0) return false;
  complete_async();
  return true;
}

void Checkpointer::finish_async() {
  if (pending_) complete_async();
}

void Checkpointer::complete_async() {
  std::unique_ptr<save_protocol::PendingSave> ps = std::move(pending_);
  const ShardReport report = save_protocol::finish_async_write(comm_, *ps, *writer_);
  committed(*ps, save_protocol::commit(comm_, *ps, save_dir_, report));
  if (comm_.rank() == 0) {
    DTRAIN_LOG_INFO("Saved checkpoint {} asynchronously in {:.3f} s (training stalled {:.3f} s; "
                    "slowest shard write {:.3f} s)",
                    ps->final_dir, last_save_s_, last_stall_s_, last_write_s_);
  }
}

void Checkpointer::abandon_async() noexcept {
  if (!pending_) return;
  if (writer_ && writer_->in_flight()) {
    try {
      writer_->wait();
    } catch (const std::exception&) {
      // The save is dropped either way.
    }
  }
  pending_.reset();
}

StateDict Checkpointer::load(const std::string& path,
                             const std::optional<std::vector<std::string>>& only) {
  std::string only_str = only ? fmt::format("{}", fmt::join(*only, ",")) : "*";
  check_collective("load", path + ";" + only_str);
  finish_async();
  // detectron2's "w.pth?matching_heuristics=True".
  const auto [plain, heuristics] = interop::split_matching_query(path);
  if (is_remote(plain)) {
    // Downloaded once per node into the cache (verified), then loaded from there.
    const std::string local = fetch_remote(plain, comm_);
    StateDict extra = load(heuristics ? local + "?matching_heuristics=True" : local, only);
    loaded_from_ = plain;
    return extra;
  }
  if (interop::is_foreign_weights_path(plain)) return load_foreign_file(plain, heuristics, only);
  std::string dir = path;
  if (stdfs::path(path).filename() == kIndexFile) dir = fs::parent_dir(path);
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return load_directory(dir, only);
}

bool Checkpointer::has_checkpoint() {
  check_collective("has_checkpoint", "");
  return dist::on_root<CheckpointError>(comm_, "has_checkpoint", [&] {
           return std::string(save_dir::has_tag(env_, save_dir_) ? "1" : "0");
         }) == "1";
}

std::string Checkpointer::get_checkpoint_file() {
  check_collective("get_checkpoint_file", "");
  return dist::on_root<CheckpointError>(comm_, "get_checkpoint_file", [&]() -> std::string {
    const std::string name = save_dir::tagged_name(env_, save_dir_);
    return name.empty() ? "" : save_dir_ + "/" + name;
  });
}

std::vector<std::string> Checkpointer::get_all_checkpoint_files() {
  check_collective("get_all_checkpoint_files", "");
  const std::string list = dist::on_root<CheckpointError>(comm_, "get_all_checkpoint_files", [&] {
    return NameList{save_dir::committed_checkpoints(env_, save_dir_)}.encode();
  });
  return NameList::decode(list, 0).names;
}

std::vector<std::string> Checkpointer::resume_candidates() {
  const bool tagged = has_checkpoint();
  const std::vector<std::string> all = get_all_checkpoint_files();
  std::vector<std::string> candidates;
  if (!tagged && all.empty()) return candidates;
  if (!tagged) {
    // A crash after a save's commit and before its tag was durable (or a tag deleted
    // by hand): the committed checkpoints are still there.
    if (comm_.rank() == 0) {
      DTRAIN_LOG_WARN("{}/{} is missing, but {} holds committed checkpoints (a crash between a "
                      "save's commit and its tag?); resuming from the newest",
                      save_dir_, save_dir::kLastCheckpoint, save_dir_);
    }
  } else {
    try {
      candidates.push_back(get_checkpoint_file());
    } catch (const CheckpointError& e) {  // a damaged tag: the newest good checkpoint wins
      if (comm_.rank() == 0) DTRAIN_LOG_WARN("{}; resuming from the newest checkpoint instead", e.what());
    }
  }
  // Fallbacks: the others, newest first (rank 0 orders them; see order_by_recency).
  const std::string ordered = dist::on_root<CheckpointError>(comm_, "ordering checkpoints", [&] {
    return NameList{order_by_recency(all)}.encode();
  });
  for (auto& c : NameList::decode(ordered, 0).names) {
    if (candidates.empty() || c != candidates.front()) candidates.push_back(c);
  }
  return candidates;
}

int64_t Checkpointer::persistent_iteration(const std::vector<std::string>& candidates, size_t i) {
  if (i >= candidates.size()) return -1;
  const std::string it = dist::on_root<CheckpointError>(comm_, "reading the checkpoint's iteration", [&] {
    try {
      return std::to_string(h5::File::open(candidates[i] + "/" + kIndexFile).get_int_attr("iteration"));
    } catch (const std::exception&) {
      return std::string("-1");  // damaged: its load says why
    }
  });
  return std::stoll(it);
}

StateDict Checkpointer::resume_or_load(const std::string& path, bool resume) {
  loaded_from_local_ = false;
  if (local_) local_->open(resume);
  const bool tagged = resume && has_checkpoint();
  const std::vector<std::string> candidates = resume ? resume_candidates() : std::vector<std::string>{};
  // A resume continues a run: the model must match the checkpoint exactly.
  resuming_ = true;
  struct Reset {
    bool& flag;
    std::map<std::string, StateDict>& undo;
    ~Reset() {
      flag = false;
      undo.clear();
    }
  } reset{resuming_, per_rank_undo_};
  std::string failures;
  if (resume) {
    if (auto extra = resume_newest(candidates, failures)) return *extra;
  }
  if (tagged || !candidates.empty() || !failures.empty()) {
    throw CheckpointError(fmt::format("no valid checkpoint to resume from in '{}':{}", save_dir_, failures));
  }
  resuming_ = false;
  if (local_) local_->after_resume(-1);
  if (!path.empty()) {
    load(path, std::vector<std::string>{});
  } else if (resume && comm_.rank() == 0) {
    DTRAIN_LOG_INFO("No checkpoint found in {}; training from scratch", save_dir_);
  }
  return {};
}

std::optional<StateDict> Checkpointer::resume_newest(const std::vector<std::string>& candidates,
                                                     std::string& failures) {
  LocalRestore local;
  if (local_) local = local_->plan_restore();
  size_t next = 0;
  int64_t next_iteration = persistent_iteration(candidates, next);
  while (local.iteration >= 0 || next < candidates.size()) {
    // A tie: the local one is faster. A checkpoint whose iteration cannot be read (-1:
    // a damaged index) is tried in its place, not ranked below every snapshot.
    const bool local_first = next == candidates.size() || (next_iteration >= 0 && local.iteration >= next_iteration);
    if (local.iteration >= 0 && local_first) {
      try {
        StateDict extra = load_local(local);
        local_->after_resume(local.iteration);
        return extra;
      } catch (const CheckpointError& e) {  // damage; a ConfigError (incompatible) stops here
        failures += fmt::format("\n  local snapshot of iteration {} ({}): {}", local.iteration, local.description,
                                e.what());
        if (comm_.rank() == 0) {
          DTRAIN_LOG_WARN("Cannot resume from the local snapshot of iteration {} ({}), served as: {}; trying "
                          "another node's copy of a damaged shard, an older snapshot or the persistent tier, newest first",
                          local.iteration, e.what(), local.description);
        }
        local_->drop_staging();
        undo_per_rank();
        local = local_->plan_restore(&local, read_failure_);
      }
      continue;
    }
    try {
      StateDict extra = load(candidates[next]);
      if (local_) local_->after_resume(iteration_of(extra));
      return extra;
    } catch (const CheckpointError& e) {
      failures += fmt::format("\n  {}: {}", candidates[next], e.what());
      if (comm_.rank() == 0) {
        DTRAIN_LOG_WARN("Cannot resume from {} ({}); trying an older checkpoint", candidates[next], e.what());
      }
      undo_per_rank();
    }
    next_iteration = persistent_iteration(candidates, ++next);
  }
  return std::nullopt;
}

void Checkpointer::undo_per_rank() noexcept {
  for (const auto& [key, s] : per_rank_undo_) {
    try {  // on this rank only: a throw here would leave the others in the next collective
      StateDict copy = s;  // the state may keep its tensors; the copy is put back again after another try
      for (auto& entry : copy) {
        if (auto* t = std::get_if<at::Tensor>(&entry.second)) *t = t->clone();
      }
      checkpointables_.at(key).state->load_state_dict(copy);
    } catch (const std::exception& e) {
      DTRAIN_LOG_ERROR("Could not put back this rank's '{}' state after a failed load ({}); a resume "
                       "from a checkpoint without it keeps what the failed load left",
                       key, e.what());
    }
  }
  // Kept until the resume ends: a later try's hand_over copies only keys not held, so
  // each put-back restores the state from before the first try, even after one failed.
}

StateDict Checkpointer::load_local(const LocalRestore& plan) {
  read_failure_ = ReadFailure::kNone;  // staging fails before any read
  finish_async();
  const std::string dir = local_->stage(plan);
  if (comm_.rank() == 0) {
    DTRAIN_LOG_INFO("Resuming from the local snapshot of iteration {} ({}): {}", plan.iteration,
                    local_->options().dir, plan.description);
  }
  StateDict extra = load_directory(dir, std::nullopt, &plan);
  loaded_from_local_ = true;
  return extra;
}

void Checkpointer::snapshot_local(int64_t iteration, const StateDict& extra) {
  check_collective("snapshot_local", std::to_string(iteration));
  DTRAIN_CHECK_T(CheckpointError, local_ != nullptr, "snapshot_local: no local tier (CHECKPOINT.LOCAL.PERIOD is 0)");
  StateDict state = extra;
  state["iteration"] = iteration;
  CollectedState live;
  try {
    live = collect(state);
  } catch (const std::exception& e) {
    // The same on every rank (the state's shape): no snapshot, like a failed one.
    if (comm_.rank() == 0) DTRAIN_LOG_WARN("Local snapshot of iteration {} skipped: {}", iteration, e.what());
    return;
  }
  local_->start(live, iteration);
}

bool Checkpointer::poll_local() { return local_ && local_->poll(); }

void Checkpointer::prepare_local(int64_t iteration) {
  if (!local_) return;
  if (!local_->wants_layout()) {
    local_->prepare_takeover();
    return;
  }
  StateDict state;
  state["iteration"] = iteration;
  try {
    local_->prepare(collect(state));
  } catch (const std::exception& e) {  // the snapshot itself will say what is wrong
    DTRAIN_LOG_DEBUG("No local shard file created ahead: {}", e.what());
  }
}

void Checkpointer::commit_local() {
  if (local_) local_->commit_now();
}

void Checkpointer::finish_local() {
  if (local_) local_->finish();
}

void Checkpointer::abandon_local() noexcept {
  if (local_) local_->abandon();
}

void Checkpointer::end_local() {
  if (local_) local_->remove_all();
}

void Checkpointer::tag_last_checkpoint(const std::string& name) {
  check_collective("tag_last_checkpoint", name);
  dist::on_root<CheckpointError>(comm_, "tag_last_checkpoint", [&] {
    save_dir::write_tag(env_, save_dir_, name);
    return std::string();
  });
}

void Checkpointer::remove_checkpoint(const std::string& name) {
  check_collective("remove_checkpoint", name);
  dist::on_root<CheckpointError>(comm_, fmt::format("removing checkpoint '{}/{}'", save_dir_, name), [&] {
    save_dir::validate_name(name);
    std::string tagged;
    try {
      tagged = save_dir::tagged_name(env_, save_dir_);
    } catch (const CheckpointError&) {
      // A damaged tag names nothing; the next save writes it again.
    }
    DTRAIN_CHECK_T(CheckpointError, tagged != name, "refusing to delete '{}': last_checkpoint names it",
                   name);
    save_dir::remove_dir_safely(env_, save_dir_ + "/" + name);
    return std::string();
  });
}

}  // namespace dtrain::checkpoint
