// Carrying out a load of a dtrain checkpoint directory (Checkpointer::load_directory),
// in phases: agree on who can read it, read the index, plan the reads (load_plan.h),
// prepare the destination tensors, read, relay what some ranks cannot read, and hand
// each owner its state. Every phase that can fail on some ranks ends in an agreement,
// so every rank throws the same error.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "checkpoint/checkpointer.h"
#include "checkpoint/load_plan.h"
#include "checkpoint/messages.h"
#include "checkpoint/piece_locator.h"
#include "checkpoint/piece_verifier.h"
#include "runtime/base/error.h"
#include "runtime/base/fs.h"
#include "runtime/base/logging.h"
#include "runtime/dist/agree.h"

namespace dtrain::checkpoint {
namespace stdfs = std::filesystem;

namespace {

// Identifies the checkpoint directory `dir` as this kernel sees it: the boot id plus the
// directory's device and inode. Processes with the same key read the same files through
// the same page cache. "" when it cannot tell (then no one is assumed to share).
std::string same_files_key(const std::string& dir) {
  const std::string boot = fs::boot_id();
  struct stat st {};
  if (boot.empty() || ::stat(dir.c_str(), &st) != 0) return "";
  return fmt::format("{} {}:{}", boot, static_cast<uint64_t>(st.st_dev),
                     static_cast<uint64_t>(st.st_ino));
}

// Splits `prefix/rest` entries of a StateDict into rest -> value.
StateDict sub_state(const StateDict& all, const std::string& prefix) {
  StateDict out;
  const std::string p = prefix + "/";
  for (auto it = all.lower_bound(p); it != all.end() && it->first.rfind(p, 0) == 0; ++it) {
    out[it->first.substr(p.size())] = it->second;
  }
  return out;
}

// Moves the `prefix/rest` entries out of `all` into rest -> value.
StateDict take_sub_state(StateDict& all, const std::string& prefix) {
  StateDict out;
  const std::string p = prefix + "/";
  auto it = all.lower_bound(p);
  while (it != all.end() && it->first.rfind(p, 0) == 0) {
    out[it->first.substr(p.size())] = std::move(it->second);
    it = all.erase(it);
  }
  return out;
}

// Whether a load can read stored data of `dtype` and `shape` straight into `t`: a
// contiguous CPU tensor of exactly that dtype and shape (a narrow on dim 0 of it, one
// piece's rows, is then contiguous too).
bool fits_in_place(const at::Tensor& t, at::ScalarType dtype, const std::vector<int64_t>& shape) {
  return t.defined() && t.device().is_cpu() && t.layout() == at::kStrided &&
         t.scalar_type() == dtype && t.sizes() == c10::IntArrayRef(shape) && t.is_contiguous() &&
         !t.is_inference();
}

// Per-rank ints and floats are stored as 0-d tensors (format.h); gives them back their
// type where the owner's current state has a number under the same key.
void restore_scalar_types(StateDict& loaded, const StateDict& current) {
  for (auto& [key, value] : loaded) {
    auto cur = current.find(key);
    const at::Tensor* t = std::get_if<at::Tensor>(&value);
    if (cur == current.end() || t == nullptr || t->dim() != 0) continue;
    if (std::holds_alternative<int64_t>(cur->second) && t->scalar_type() == at::kLong) {
      value = t->item<int64_t>();
    } else if (std::holds_alternative<double>(cur->second) && t->scalar_type() == at::kDouble) {
      value = t->item<double>();
    }
  }
}

}  // namespace

// One load of one directory: what it loads, where, and the state between its phases.
class Checkpointer::DirectoryLoad {
 public:
  // local: `dir` is a local snapshot (local_tier.h), differs between ranks and holds
  // checkpoint.h5 and this rank's shard: each rank reads its own shard and the
  // communicator spreads the rest. At another world size, local->server gives by shard
  // the rank that reads it (shard_server_; empty: each shard's own rank).
  DirectoryLoad(Checkpointer& owner, const std::string& dir, const std::optional<std::vector<std::string>>& only,
                const LocalRestore* local)
      : c_(owner),
        comm_(owner.comm_),
        dir_(dir),
        only_(only),
        own_shards_(local != nullptr),
        shard_server_(local != nullptr && local->world != owner.comm_.size() ? local->server : std::vector<int>{}),
        index_reader_(local != nullptr ? local->index_reader : -1),
        what_(fmt::format("loading checkpoint '{}'", dir)) {}

  StateDict run() {
    const auto t0 = std::chrono::steady_clock::now();
    agree_on_readers();
    read_index();
    plan_ = plan_load(index_, readers_, comm_.rank(), [this](const std::string& n) { return wanted(n); });
    dist::all_or_none<CheckpointError>(comm_, what_, [&] { prepare_targets(); });
    read_pieces();
    relay_pieces();
    dist::all_or_none<CheckpointError>(comm_, what_, [&] { hand_over(); });
    StateDict extra = sub_state(all_, "extra");
    extra["iteration"] = index_.iteration;
    const int64_t read_total = comm_.size() > 1 ? comm_.all_reduce_int(bytes_read_, dist::ReduceOp::kSum) : bytes_read_;
    c_.last_load_bytes_read_ = read_total;
    if (comm_.rank() == 0) {
      DTRAIN_LOG_INFO("Loaded checkpoint {} (iteration {}, saved by {} ranks) in {:.3f} s; {:.1f} MiB read "
                      "from storage by {} rank(s) ({})",
                      dir_, index_.iteration, index_.world_size,
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                      static_cast<double>(read_total) / (1 << 20), readers_.count,
                      !shard_server_.empty() ? "each shard read once on a node holding it, resharded"
                      : readers_.own_shards  ? "each rank reads its own shard"
                      : plan_.every_rank_reads ? "every rank reads what it needs"
                                               : "each piece read once and broadcast");
    }
    return extra;
  }

 private:
  bool included(const std::string& key) const {
    return !only_ || std::find(only_->begin(), only_->end(), key) != only_->end();
  }
  // What this load uses: the model, the extras, and the checkpointables it loads. The
  // entries of other owners (left out by `only`, or unknown to this Checkpointer) are
  // neither read nor verified; `dtrain ckpt verify` checks every piece.
  bool wanted(const std::string& name) const {
    const std::string owner = name.substr(0, name.find('/'));
    if (owner == "model" || owner == "extra") return true;
    return c_.checkpointables_.count(owner) > 0 && included(owner);
  }

  // Which ranks can read the checkpoint (node-local disks, or a directory only some
  // nodes mount): those read, the others receive over the communicator. With it, which
  // ranks read the very same files and load the same owners from them.
  void agree_on_readers() {
    Visibility mine;
    mine.readable = stdfs::exists(dir_ + "/" + kIndexFile);
    if (own_shards_) {
      if (shard_server_.empty()) {
        mine.readable = mine.readable && stdfs::exists(dir_ + "/" + shard_file_name(comm_.rank(), comm_.size()));
      } else {  // only the servers (and the index's reader): another rank's node may hold
                // another snapshot of that name
        mine.readable = mine.readable && (comm_.rank() == index_reader_ || std::find(shard_server_.begin(),
                                                                                      shard_server_.end(),
                                                                                      comm_.rank()) != shard_server_.end());
      }
      readers_ = find_readers(dist::all_gather(comm_, mine), comm_.rank(), dir_);
      readers_.own_shards = true;
      readers_.shard_server = shard_server_;
      for (const int server : shard_server_) {
        DTRAIN_CHECK_T(CheckpointError, server >= 0 && server < comm_.size() && readers_.can_read[server],
                       "'{}': rank {}, which was to read a shard of it, cannot read '{}'", dir_, server, kIndexFile);
      }
      if (index_reader_ >= 0) {  // the other copies of the index were found damaged
        DTRAIN_CHECK_T(CheckpointError, index_reader_ < comm_.size() && readers_.can_read[index_reader_],
                       "'{}': rank {}, which was to read its index, cannot read '{}'", dir_, index_reader_, kIndexFile);
        readers_.index_root = index_reader_;
      }
      return;
    }
    if (mine.readable) {
      const std::string key = same_files_key(dir_);
      std::string owners;  // what `wanted` depends on, besides the collective `only`
      for (const auto& [name, c] : c_.checkpointables_) {
        owners += name + (c.scope == Scope::kPerRank ? ":p;" : ":r;");
      }
      if (!key.empty()) mine.files = key + "\n" + owners;
    }
    readers_ = find_readers(dist::all_gather(comm_, mine), comm_.rank(), dir_, c_.options_.load_strategy);
    if (!readers_.everyone() && comm_.rank() == 0) {
      DTRAIN_LOG_WARN("Checkpoint '{}' is readable on {} of {} ranks; the others receive it over "
                      "the communicator",
                      dir_, readers_.count, readers_.world());
    }
  }

  // Read on one rank; a copy that cannot be read or parsed counts as that rank's failed
  // read (read_failure_: a local snapshot is retried with that node's copy avoided). An
  // index that disagrees with the local tier's listing counts too.
  void read_index() {
    try {
      const std::string text = dist::on_rank<CheckpointError>(comm_, readers_.index_root, what_,
                                                              [&] { return read_index_text(dir_); });
      index_ = CheckpointIndex::from_json(text, dir_ + "/" + kIndexFile);
      DTRAIN_CHECK_T(CheckpointError,
                     shard_server_.empty() || static_cast<int64_t>(shard_server_.size()) == index_.world_size,
                     "'{}' holds the shards of {} ranks, not of {} as its local tier listed", dir_,
                     index_.world_size, shard_server_.size());
    } catch (const CheckpointError&) {
      if (comm_.rank() == readers_.index_root) c_.read_failure_ = ReadFailure::kIndex;
      throw;
    }
  }

  // Tensors that pieces can be read into in place: the model's parameters and buffers,
  // and what the replicated checkpointables being loaded offer (Stateful::load_targets,
  // e.g. the optimizer's existing state).
  std::map<std::string, at::Tensor> live_tensors() const {
    std::map<std::string, at::Tensor> live;
    for (const auto& [k, v] : ModuleState(c_.model_).state_dict()) live["model/" + k] = std::get<at::Tensor>(v);
    for (const auto& [key, c] : c_.checkpointables_) {
      if (c.scope != Scope::kReplicated || !included(key)) continue;
      for (const auto& [k, v] : c.state->load_targets()) {
        if (auto t = std::get_if<at::Tensor>(&v)) live[key + "/" + k] = *t;
      }
    }
    return live;
  }

  // Where each wanted replicated tensor goes: a live tensor when it is a contiguous CPU
  // tensor of exactly the stored dtype and shape, else a new buffer (which ModuleState
  // copies, converting dtype, or the owner adopts). Done, with everything that can be
  // checked without the data, before anything is read: these errors leave the model and
  // the checkpointables untouched.
  void prepare_targets() {
    const auto live = live_tensors();
    for (const auto& t : index_.tensors) {
      if (t.per_rank || !wanted(t.name)) continue;
      auto it = live.find(t.name);
      if (it != live.end() && fits_in_place(it->second, dtype_from_name(t.dtype, dir_), t.shape)) {
        tensors_[t.name] = it->second;
        in_place_.push_back(it->second);
      } else {
        tensors_[t.name] = empty_tensor_for(t, t.shape, dir_);
      }
    }
    for (const auto& [name, t] : tensors_) all_[name] = t;
    for (const auto& [name, v] : index_.scalars) all_[name] = v;
    if (c_.options_.strict || c_.resuming_) {
      const LoadReport mismatch = ModuleState(c_.model_).compare(sub_state(all_, "model"));
      DTRAIN_CHECK_T(ConfigError, mismatch.clean(), "checkpoint '{}' does not match the model ({}):\n{}",
                     dir_, c_.resuming_ ? "a resume needs every tensor to match" : "CHECKPOINT.STRICT is on",
                     mismatch.table());
    }
    for (const auto& [key, c] : c_.checkpointables_) {
      if (!included(key)) continue;
      DTRAIN_CHECK_T(CheckpointError, c.scope == Scope::kPerRank || !sub_state(all_, key).empty(),
                     "checkpoint '{}' has no '{}' state", dir_, key);
    }
  }

  at::Tensor destination(const PieceRead& r) const {
    const TensorRecord& t = index_.tensors[r.tensor];
    const PieceRecord& p = t.pieces[r.piece];
    at::Tensor full = tensors_.at(t.name);
    return full.dim() == 0 ? full : full.narrow(0, p.row_start, p.row_count);
  }

  // Reading straight into live tensors has a cost when the load fails while reading (a
  // damaged, truncated or missing shard): part of the model (and of the optimizer state
  // offered by load_targets) may already be overwritten. The load then throws the same
  // CheckpointError on every rank, and resume_or_load goes on to load an older
  // checkpoint in full; a caller that catches the error must not train on. Keeping the
  // model intact would need a second copy of everything, which is what made loads slow.
  void read_pieces() {
    for (auto& t : in_place_) t.unsafeGetTensorImpl()->bump_version();  // as copy_ would
    dist::all_or_none<CheckpointError>(comm_, what_, [&] {
      try {
        ShardReader reader(dir_, index_.world_size, c_.options_.allow_symlinked_shards);
        PieceVerifier verifier;  // hashes each piece while the next one is read
        read_replicated(reader, verifier);
        for (const auto& r : plan_.own_per_rank) {
          per_rank_[index_.tensors[r.tensor].name] = read_whole(reader, verifier, r);
        }
        for (const auto& r : plan_.relayed_per_rank) {
          if (r.reader == comm_.rank()) relayed_[{r.tensor, r.piece}] = read_whole(reader, verifier, r);
        }
        verifier.check();
      } catch (...) {
        c_.read_failure_ = ReadFailure::kPieces;
        throw;
      }
    });
  }

  // Reads one piece into `dst`: from `at`, where the locator found it (pread(2)), or,
  // with `at` null, through read_piece, which locates it again and reads it through HDF5
  // or throws why it cannot. An earlier piece's damage is the first error reported.
  void read_one(ShardReader& reader, PieceVerifier& verifier, const PieceRead& r, at::Tensor& dst, bool verify,
                const ShardReader::Location* at) {
    const TensorRecord& t = index_.tensors[r.tensor];
    const PieceRecord& p = t.pieces[r.piece];
    try {
      if (at != nullptr) {
        reader.read_located(t, p, *at, dst);
      } else {
        reader.read_piece(t, p, dst, /*verify=*/false);
      }
    } catch (const CheckpointError&) {
      verifier.check();
      throw;
    }
    if (verify) verifier.add(reader.path_of(p), t, p, dst);
    bytes_read_ += p.bytes;
  }

  // This rank's reads of replicated pieces in file order as write_shard lays a shard
  // out: the small pieces (packed behind the metadata at the front), then the large ones
  // front to back. The locator opens each piece's dataset on its own thread while the
  // pieces before it are read.
  void read_replicated(ShardReader& reader, PieceVerifier& verifier) {
    std::vector<PieceRead> mine;
    for (const auto& r : plan_.reads) {
      if (r.reader == comm_.rank()) mine.push_back(r);
    }
    follow_layout_order(index_, mine);
    PieceLocator locator(reader, index_, mine,
                         [&](const TensorRecord& t) { return tensors_.at(t.name).scalar_type(); });
    std::vector<size_t> later;  // of this run: not located (HDF5 layout, or an error)
    for (size_t i = 0; i < mine.size(); ++i) {
      at::Tensor dst = destination(mine[i]);
      const ShardReader::Location at = locator.wait(i);
      if (at.offset >= 0 && dst.device().is_cpu()) {
        read_one(reader, verifier, mine[i], dst, mine[i].verify, &at);
      } else {
        later.push_back(i);
      }
      if (later.empty() || (i + 1 < mine.size() && same_run(index_, mine[i], mine[i + 1]))) continue;
      // The run's end: its pieces left go through read_piece, which needs the reader to
      // itself: the locator is done first.
      locator.finish();
      for (size_t j : later) {
        at::Tensor left = destination(mine[j]);
        read_one(reader, verifier, mine[j], left, mine[j].verify, nullptr);
      }
      later.clear();
    }
  }  // joins the locator: the reader is this thread's alone again

  // A per-rank piece, read (and verified) into a new tensor.
  at::Tensor read_whole(ShardReader& reader, PieceVerifier& verifier, const PieceRead& r) {
    const TensorRecord& t = index_.tensors[r.tensor];
    at::Tensor dst = empty_tensor_for(t, t.pieces[r.piece].shape, dir_);
    read_one(reader, verifier, r, dst, /*verify=*/true, nullptr);
    return dst;
  }

  // What some ranks cannot read: the reader broadcasts it (per-rank pieces: the owner
  // keeps them), in the plan's order, the same on every rank.
  void relay_pieces() {
    const int rank = comm_.rank();
    for (const auto& r : plan_.relayed_per_rank) {
      const TensorRecord& t = index_.tensors[r.tensor];
      const PieceRecord& p = t.pieces[r.piece];
      at::Tensor buf = rank == r.reader ? relayed_.at({r.tensor, r.piece}) : empty_tensor_for(t, p.shape, dir_);
      if (buf.numel() > 0) comm_.broadcast(buf, r.reader);
      if (rank == p.shard) per_rank_[t.name] = buf;
    }
    relayed_.clear();
    if (!plan_.every_rank_reads && comm_.size() > 1) {
      for (const auto& r : plan_.reads) {
        at::Tensor dst = destination(r);
        if (dst.numel() > 0) comm_.broadcast(dst, r.reader);
      }
    }
    tensors_.clear();
    in_place_.clear();
  }

  // Hands each owner its part (errors may differ between ranks, e.g. for per-rank
  // state; the caller agrees on them).
  void hand_over() {
    const int rank = comm_.rank();
    LoadReport report = ModuleState(c_.model_).load_with_report(sub_state(all_, "model"));
    if (!report.clean() && rank == 0) {
      DTRAIN_LOG_WARN("Some model parameters or buffers were not loaded from '{}':\n{}", dir_,
                      report.table());
    }
    for (const auto& [key, c] : c_.checkpointables_) {
      if (!included(key)) continue;
      // Moved out: the new buffers are handed over (adopt_state_dict), nobody else keeps them.
      StateDict s = take_sub_state(c.scope == Scope::kPerRank ? per_rank_ : all_, key);
      if (c.scope == Scope::kPerRank && s.empty()) {
        if (rank == 0 || rank >= index_.world_size) {
          DTRAIN_LOG_WARN_RANK("Checkpoint '{}' (from {} ranks) has no '{}' state for rank {}; "
                               "keeping this rank's current state",
                               dir_, index_.world_size, key, rank);
        }
        continue;
      }
      if (c.scope == Scope::kPerRank) {
        StateDict current = c.state->state_dict();
        restore_scalar_types(s, current);
        if (c_.resuming_ && c_.per_rank_undo_.count(key) == 0) {  // a resume may try another
          for (auto& entry : current) {
            if (auto* t = std::get_if<at::Tensor>(&entry.second)) *t = t->clone();  // may alias live storage
          }
          c_.per_rank_undo_.emplace(key, std::move(current));
        }
      }
      try {
        c.state->adopt_state_dict(std::move(s));
      } catch (const ConfigError& e) {  // incompatible with this run: not damage
        throw ConfigError(fmt::format("loading '{}' state from '{}': {}", key, dir_, e.what()));
      } catch (const std::exception& e) {
        throw CheckpointError(fmt::format("loading '{}' state from '{}': {}", key, dir_, e.what()));
      }
    }
  }

  Checkpointer& c_;
  dist::Communicator& comm_;
  const std::string& dir_;
  const std::optional<std::vector<std::string>>& only_;
  const bool own_shards_;
  const std::vector<int> shard_server_;
  const int index_reader_;  // -1: the first rank that can read the index
  const std::string what_;
  int64_t bytes_read_ = 0;  // by this rank, from the files
  Readers readers_;
  CheckpointIndex index_;
  LoadPlan plan_;
  std::map<std::string, at::Tensor> tensors_;  // replicated: where each tensor goes
  std::vector<at::Tensor> in_place_;           // those of tensors_ that are live tensors
  StateDict all_;                              // what the owners get: tensors_ and the scalars
  StateDict per_rank_;                         // this rank's per-rank state
  std::map<std::pair<size_t, size_t>, at::Tensor> relayed_;  // per-rank pieces this rank relays
};

StateDict Checkpointer::load_directory(const std::string& dir,
                                       const std::optional<std::vector<std::string>>& only,
                                       const LocalRestore* local) {
  StateDict extra = DirectoryLoad(*this, dir, only, local).run();
  loaded_from_ = dir;
  return extra;
}

}  // namespace dtrain::checkpoint
