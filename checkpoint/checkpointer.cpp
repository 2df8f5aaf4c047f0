// Checkpointer: the commit protocol, collective loads, retention (see checkpointer.h).
#include "checkpoint/checkpointer.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <future>
#include <limits>
#include <random>
#include <regex>
#include <sstream>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/version.h>

#include "runtime/h5/h5.h"
#include "checkpoint/interop/weights.h"
#include "checkpoint/remote.h"
#include "runtime/base/error.h"
#include "runtime/dist/agree.h"
#include "runtime/base/fault.h"
#include "runtime/base/fs.h"
#include "runtime/base/logging.h"

namespace dtrain::checkpoint {
namespace stdfs = std::filesystem;

namespace {

constexpr const char* kLastCheckpoint = "last_checkpoint";

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The name in save_dir/last_checkpoint (trailing newlines/spaces dropped), "" if none.
// The tag is ours: never followed as a symbolic link, at most 4 KiB, and it must name a
// plain directory of save_dir (not "../other/model_final"); throws CheckpointError
// naming the tag otherwise.
std::string last_checkpoint_name(const std::string& save_dir) {
  const std::string tag = save_dir + "/" + kLastCheckpoint;
  std::error_code ec;
  if (stdfs::symlink_status(tag, ec).type() == stdfs::file_type::not_found) return "";
  fs::ReadOptions options;
  options.max_bytes = 4096;
  options.no_follow = true;
  std::string name = fs::read_file(tag, options);
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  DTRAIN_CHECK_T(CheckpointError,
                 !name.empty() && name[0] != '.' && name.find('/') == std::string::npos &&
                     name.find('\0') == std::string::npos && name != kLastCheckpoint,
                 "'{}' does not name a checkpoint directory of '{}' (it must hold a plain, "
                 "non-hidden directory name, e.g. model_0004999)",
                 tag, save_dir);
  return name;
}

std::string random_id() {
  std::random_device rd;
  return fmt::format("{:08x}{:04x}", rd(), static_cast<unsigned>(::getpid()) & 0xffff);
}


void validate_name(const std::string& name) {
  DTRAIN_CHECK_T(CheckpointError,
                 !name.empty() && name[0] != '.' && name.find('/') == std::string::npos &&
                     name != kLastCheckpoint,
                 "invalid checkpoint name '{}': it must be a plain, non-hidden directory name",
                 name);
}

// Moves `dir` out of sight, then deletes it: never a half-deleted dir under its name.
void remove_dir_safely(const std::string& dir) {
  const std::string hidden = fs::parent_dir(dir) + "/." + stdfs::path(dir).filename().string() +
                             ".deleting-" + random_id();
  fs::rename_durable(dir, hidden);
  std::error_code ec;
  stdfs::remove_all(hidden, ec);
}

// Renames the finished temporary directory to `final_dir`, replacing an existing one
// atomically where the filesystem supports RENAME_EXCHANGE.
void commit_directory(const std::string& tmp, const std::string& final_dir) {
  if (stdfs::exists(final_dir)) {
#ifdef RENAME_EXCHANGE
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0) {
      fs::fsync_path(fs::parent_dir(final_dir));
      std::error_code ec;
      stdfs::remove_all(tmp, ec);  // now holds the replaced checkpoint
      return;
    }
#endif
    remove_dir_safely(final_dir);  // filesystems without RENAME_EXCHANGE (NFS)
  }
  fs::rename_durable(tmp, final_dir);
}

bool is_committed_checkpoint(const stdfs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] != '.' && stdfs::is_directory(p) &&
         stdfs::exists(p / kIndexFile);
}

// Throws unless `final_dir` is free or a committed checkpoint of ours that a save may
// replace: a file, a symbolic link or a directory without checkpoint.h5 of the same name
// is the user's, and is never deleted by a save.
void refuse_to_replace_foreign(const std::string& final_dir) {
  std::error_code ec;
  const auto status = stdfs::symlink_status(final_dir, ec);
  if (ec || status.type() == stdfs::file_type::not_found) return;
  const bool ours = status.type() == stdfs::file_type::directory &&
                    stdfs::symlink_status(final_dir + "/" + kIndexFile, ec).type() ==
                        stdfs::file_type::regular;
  DTRAIN_CHECK_T(CheckpointError, ours,
                 "refusing to save over '{}': it exists and is not a dtrain checkpoint (it is {}); "
                 "a save replaces only a committed checkpoint of its own. Move it away or choose "
                 "another OUTPUT_DIR; nothing was written",
                 final_dir,
                 status.type() == stdfs::file_type::symlink     ? "a symbolic link"
                 : status.type() == stdfs::file_type::directory ? "a directory without " + std::string(kIndexFile)
                 : status.type() == stdfs::file_type::regular   ? "a regular file"
                                                                : "not a directory");
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

// Identifies the checkpoint directory `dir` as this kernel sees it: the boot id plus the
// directory's device and inode. Processes with the same key read the same files through
// the same page cache. "" when it cannot tell (then no one is assumed to share).
std::string same_files_key(const std::string& dir) {
  std::string boot;
  try {
    boot = fs::read_file("/proc/sys/kernel/random/boot_id");
  } catch (const std::exception&) {
    return "";
  }
  while (!boot.empty() && (boot.back() == '\n' || boot.back() == ' ')) boot.pop_back();
  struct stat st {};
  if (boot.empty() || ::stat(dir.c_str(), &st) != 0) return "";
  return fmt::format("{} {}:{}", boot, static_cast<uint64_t>(st.st_dev),
                     static_cast<uint64_t>(st.st_ino));
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

// Checkpoint directories newest first: by the iteration stored in their checkpoint.h5
// (unreadable ones last), then "*_final" before others, then by name, descending. Names
// alone would put e.g. a manual "backup" (iteration 6) after model_0000004.
std::vector<std::string> order_by_recency(const std::vector<std::string>& dirs) {
  struct Entry {
    std::string dir;
    int64_t iteration;
    bool final;
  };
  std::vector<Entry> entries;
  for (const auto& d : dirs) {
    int64_t iteration = std::numeric_limits<int64_t>::min();
    try {
      iteration = h5::File::open(d + "/" + kIndexFile).get_int_attr("iteration");
    } catch (const std::exception&) {
      // Damaged: tried last, where loading it reports why.
    }
    const bool final = d.size() >= 6 && d.compare(d.size() - 6, 6, "_final") == 0;
    entries.push_back({d, iteration, final});
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    if (a.iteration != b.iteration) return a.iteration > b.iteration;
    if (a.final != b.final) return a.final;
    return a.dir > b.dir;
  });
  std::vector<std::string> out;
  for (auto& e : entries) out.push_back(std::move(e.dir));
  return out;
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
      options_(std::move(options)) {
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

struct Checkpointer::PendingSave {
  std::string name;
  std::string final_dir;
  std::string tmp;  // the hidden temporary directory the shards are written into
  int64_t iteration = -1;
  CollectedState state;  // what the index describes (names, dtypes, shapes, scalars)
  std::chrono::steady_clock::time_point t0;
  std::string error;  // an error of this rank before its shard write started
  // writer_of[s]: the rank that writes shard s: s itself when it sees the temporary
  // directory, otherwise one of the ranks that do (OUTPUT_DIR not shared).
  std::vector<int> writer_of;
  bool shared() const {
    for (size_t s = 0; s < writer_of.size(); ++s) {
      if (writer_of[s] != static_cast<int>(s)) return false;
    }
    return true;
  }
  // Rank 0: the index as the shard plan fixes it, and checkpoint.h5 being begun with it
  // on a thread of its own while the shards are written. Declared last: destroyed
  // (joined) first, before what the thread reads.
  CheckpointIndex planned;
  std::future<void> index_begun;

  void begin_index(const CollectedState& live, const std::vector<Piece>& plan, int world,
                   const std::string& config_yaml) {
    planned = plan_index(live, plan, world, iteration);
    stamp_index(planned);
    index_begun = std::async(std::launch::async, [this, config_yaml] {
      return begin_index_file(tmp, planned, config_yaml);
    });
  }
};

namespace {

// Tensors as bytes, to send over the communicator: a JSON header line (name, dtype,
// shape of each) followed by their data.
std::string pack_tensors(const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  nlohmann::json header = nlohmann::json::array();
  std::string data;
  for (const auto& [name, t] : tensors) {
    const at::Tensor c = t.cpu().contiguous();
    header.push_back({{"name", name}, {"dtype", h5::dtype_name(c.scalar_type())},
                      {"shape", c.sizes().vec()}});
    data.append(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  }
  return header.dump() + "\n" + data;
}

std::vector<std::pair<std::string, at::Tensor>> unpack_tensors(const std::string& bytes) {
  const size_t eol = bytes.find('\n');
  DTRAIN_CHECK_T(CheckpointError, eol != std::string::npos, "internal: malformed tensor pack");
  const auto header = nlohmann::json::parse(bytes.substr(0, eol));
  std::vector<std::pair<std::string, at::Tensor>> out;
  size_t offset = eol + 1;
  for (const auto& e : header) {
    const std::string name = e.at("name").get<std::string>();
    at::Tensor t = at::empty(e.at("shape").get<std::vector<int64_t>>(),
                             at::TensorOptions().dtype(dtype_from_name(
                                 e.at("dtype").get<std::string>(), "tensor pack")));
    const size_t n = static_cast<size_t>(t.numel()) * t.element_size();
    DTRAIN_CHECK_T(CheckpointError, offset + n <= bytes.size(),
                   "internal: tensor pack too short for '{}'", name);
    std::memcpy(t.data_ptr(), bytes.data() + offset, n);
    offset += n;
    out.emplace_back(name, t);
  }
  return out;
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

}  // namespace

Checkpointer::~Checkpointer() {
  if (pending_) {
    DTRAIN_LOG_WARN("The asynchronous save of checkpoint {} was not committed (training "
                    "stopped before it was); nothing of it is visible",
                    pending_->final_dir);
    abandon_async();
  }
}

std::unique_ptr<Checkpointer::PendingSave> Checkpointer::begin_save(const std::string& name,
                                                                    const StateDict& extra) {
  auto ps = std::make_unique<PendingSave>();
  ps->t0 = std::chrono::steady_clock::now();
  ps->name = name;
  ps->final_dir = save_dir_ + "/" + name;
  if (auto it = extra.find("iteration"); it != extra.end()) {
    if (auto i = std::get_if<int64_t>(&it->second)) ps->iteration = *i;
  }
  // Rank 0 creates the hidden temporary directory and tells everyone its name.
  ps->tmp = dist::on_root<CheckpointError>(comm_, fmt::format("saving checkpoint '{}'", ps->final_dir), [&] {
    validate_name(name);
    stdfs::create_directories(save_dir_);
    refuse_to_replace_foreign(ps->final_dir);
    if (!cleaned_stale_) {
      // Leftovers of crashed saves/deletes by earlier runs (never committed).
      for (const auto& e : stdfs::directory_iterator(save_dir_)) {
        const std::string n = e.path().filename().string();
        if (n[0] == '.' && (n.find(".tmp-") != std::string::npos ||
                            n.find(".deleting-") != std::string::npos)) {
          std::error_code ec;
          stdfs::remove_all(e.path(), ec);
        }
      }
    }
    std::string dir = save_dir_ + "/." + name + ".tmp-" + random_id();
    DTRAIN_CHECK_T(CheckpointError, stdfs::create_directory(dir), "cannot create '{}'", dir);
    return dir;
  });
  cleaned_stale_ = true;

  // Which ranks see the directory rank 0 just created (node-local disks do not): each
  // shard of a rank that does not is written by one that does.
  const int world = comm_.size();
  std::error_code ec;
  const auto seen = comm_.all_gather_bytes(stdfs::is_directory(ps->tmp, ec) ? "1" : "0");
  std::vector<int> seeing, blind;
  for (int r = 0; r < world; ++r) (seen[r] == "1" ? seeing : blind).push_back(r);
  DTRAIN_CHECK_T(CheckpointError, !seeing.empty(),
                 "saving checkpoint '{}': no rank sees the directory '{}' that rank 0 created",
                 ps->final_dir, ps->tmp);
  ps->writer_of.resize(world);
  for (int r = 0, next = 0; r < world; ++r) {
    ps->writer_of[r] = seen[r] == "1" ? r : seeing[next++ % seeing.size()];
  }
  if (!blind.empty() && comm_.rank() == 0 && !warned_not_shared_) {
    std::vector<int> proxies;
    for (int r : blind) proxies.push_back(ps->writer_of[r]);
    proxies.erase(std::unique(proxies.begin(), proxies.end()), proxies.end());
    DTRAIN_LOG_WARN(
        "OUTPUT_DIR '{}' is not visible from {} (a node-local disk, not shared between "
        "nodes?): their shards are written by {} instead, with their per-rank state sent "
        "over the communicator. Saves are slower (fewer ranks write, more bytes each) and "
        "asynchronous saves run synchronously. Put OUTPUT_DIR on a filesystem every node "
        "mounts to avoid this.",
        save_dir_, rank_list(blind), rank_list(proxies));
  }
  warned_not_shared_ = warned_not_shared_ || !blind.empty();
  return ps;
}

std::map<int, ShardManifest> Checkpointer::write_shards(PendingSave& ps, const StateDict& extra,
                                                        std::string& error) {
  const int rank = comm_.rank(), world = comm_.size();
  std::map<int, ShardManifest> written;
  try {
    ps.state = collect(extra);
  } catch (const std::exception& e) {
    error = e.what();
  }
  // Per-rank state of ranks that do not see the directory goes to their shard's writer
  // (a collective call: made whatever happened above).
  std::vector<std::string> packs;
  if (!ps.shared()) {
    const bool blind = ps.writer_of[rank] != rank;
    packs = comm_.all_gather_bytes(blind && error.empty() ? pack_tensors(ps.state.per_rank) : "");
  }
  if (!error.empty()) return written;
  try {
    const auto plan = plan_shards(ps.state.replicated_meta(), world);
    if (rank == 0) ps.begin_index(ps.state, plan, world, options_.config_yaml);
    fault::point("ckpt.before_shard", rank);
    for (int s = 0; s < world; ++s) {
      if (ps.writer_of[s] != rank) continue;
      const std::string path = ps.tmp + "/" + shard_file_name(s, world);
      if (s == rank) {
        written[s] = write_shard(path, s, ps.state, plan, during_shard_fault(rank));
      } else {
        // The replicated state is the same on every rank: this rank's copy serves.
        CollectedState other;
        other.replicated = ps.state.replicated;
        if (!packs[s].empty()) other.per_rank = unpack_tensors(packs[s]);
        written[s] = write_shard(path, s, other, plan);
      }
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  return written;
}

void Checkpointer::commit_save(PendingSave& ps, const std::string& error,
                               const std::map<int, ShardManifest>& written, double write_s) {
  const int rank = comm_.rank(), world = comm_.size();
  // Every rank reports to rank 0, in one all-gather, how long its shard write took and
  // the shards it wrote, or its error: "+<seconds>" then a line "<shard> <manifest>" per
  // shard (manifests are one-line JSON), or "-<error>".
  std::string report = "-" + error;
  if (error.empty()) {
    report = fmt::format("+{}", write_s);
    for (const auto& [s, m] : written) report += fmt::format("\n{} {}", s, m.to_json());
  }
  auto reports = comm_.all_gather_bytes(report);

  // Rank 0 finishes checkpoint.h5 (begun while the shards were written), renames the
  // directory, updates last_checkpoint, and tells every rank the slowest shard write.
  const std::string slowest = dist::on_root<CheckpointError>(comm_, fmt::format("saving checkpoint '{}'", ps.final_dir), [&] {
    std::string failures;
    for (size_t r = 0; r < reports.size(); ++r) {
      if (reports[r][0] == '-') failures += fmt::format("; rank {}: {}", r, reports[r].substr(1));
    }
    // Joined before anything below can remove the directory it writes into.
    const bool index_begun = ps.index_begun.valid();
    try {
      if (index_begun) ps.index_begun.get();
    } catch (const std::exception& e) {
      if (reports[0][0] == '+') failures += fmt::format("; rank 0: {}", e.what());
    }
    if (!failures.empty()) {
      std::error_code ec;
      stdfs::remove_all(ps.tmp, ec);
      throw CheckpointError("writing shards failed" + failures + " (nothing was committed)");
    }
    double slowest_write = 0.0;
    // Hidden: removed with the other leftovers if a crash leaves it.
    const std::string tag_tmp = fmt::format("{}/.{}.tmp-{}", save_dir_, kLastCheckpoint, random_id());
    try {
      std::vector<ShardManifest> manifests(world);
      std::vector<bool> have(world, false);
      for (size_t r = 0; r < reports.size(); ++r) {
        std::istringstream lines(reports[r].substr(1));
        std::string line;
        std::getline(lines, line);
        slowest_write = std::max(slowest_write, std::stod(line));
        while (std::getline(lines, line)) {
          const size_t space = line.find(' ');
          const int shard = std::stoi(line.substr(0, space));
          manifests.at(shard) = ShardManifest::from_json(
              line.substr(space + 1), fmt::format("rank {} (shard {})", r, shard));
          have.at(shard) = true;
        }
      }
      for (int s = 0; s < world; ++s) {
        DTRAIN_CHECK_T(CheckpointError, have[s], "internal: no rank wrote shard {}", s);
      }
      CheckpointIndex index = build_index(ps.state, manifests, world, ps.iteration);
      index.created = ps.planned.created;
      index.versions = ps.planned.versions;
      // What a load will check, checked before committing (e.g. ranks whose replicated
      // state differed in shape give pieces that do not tile).
      index.validate(fmt::format("index of '{}'", ps.final_dir));
      fault::point("ckpt.after_shards", rank);
      DTRAIN_CHECK_T(CheckpointError, index_begun, "internal: {} was not begun", kIndexFile);
      // The directory's entries and the last_checkpoint tag's new content are made durable
      // while checkpoint.h5 is finished; the tag is renamed into place after the commit.
      auto dir_synced = std::async(std::launch::async, [&] { fs::fsync_path(ps.tmp); });
      auto tag_written = std::async(std::launch::async, [&] { fs::write_file_durable(tag_tmp, ps.name); });
      finish_index_file(ps.tmp, ps.planned, index);
      dir_synced.get();
      fault::point("ckpt.before_rename", rank);
      commit_directory(ps.tmp, ps.final_dir);
      tag_written.get();
      fault::point("ckpt.before_last_checkpoint", rank);
      fs::rename_durable(tag_tmp, save_dir_ + "/" + kLastCheckpoint);
    } catch (...) {
      // Before the commit: nothing of the save stays. After it (the directory renamed,
      // so ps.tmp is gone): the checkpoint stays, only the tag's temporary goes.
      std::error_code ec;
      if (stdfs::exists(ps.tmp)) stdfs::remove_all(ps.tmp, ec);
      stdfs::remove(tag_tmp, ec);
      throw;
    }
    return fmt::format("{}", slowest_write);
  });
  last_write_s_ = std::stod(slowest);
  ++commits_;
  last_save_s_ = seconds_since(ps.t0);
}

void Checkpointer::save(const std::string& name, const StateDict& extra) {
  check_collective("save", name);
  finish_async();
  save_now(begin_save(name, extra), extra);
}

void Checkpointer::save_now(std::unique_ptr<PendingSave> ps, const StateDict& extra) {
  // Every rank writes and fsyncs its shard (and those of ranks that cannot see the
  // directory), straight from the live tensors.
  std::string error;
  const auto tw = std::chrono::steady_clock::now();
  const auto written = write_shards(*ps, extra, error);
  commit_save(*ps, error, written, seconds_since(tw));
  last_stall_s_ = last_save_s_;
  if (comm_.rank() == 0) {
    DTRAIN_LOG_INFO("Saved checkpoint {} in {:.3f} s (slowest shard write {:.3f} s)",
                    ps->final_dir, last_save_s_, last_write_s_);
  }
}

void Checkpointer::save_async(const std::string& name, const StateDict& extra) {
  check_collective("save_async", name);
  finish_async();  // at most one in flight
  auto ps = begin_save(name, extra);
  if (!ps->shared()) {
    // Some ranks' shards are written by others (OUTPUT_DIR not shared; begin_save
    // warned): written now, from the live state.
    save_now(std::move(ps), extra);
    return;
  }
  const int rank = comm_.rank(), world = comm_.size();
  if (!writer_) writer_ = std::make_unique<AsyncShardWriter>();
  try {
    // The host copy is the only stall; its buffers are reused from the last snapshot
    // (whose write has finished) when the state has the same tensors.
    // Only the rows this rank writes are copied.
    const CollectedState live = collect(extra);
    const auto plan = plan_shards(live.replicated_meta(), world);
    ps->state = snapshot(live, &snapshot_buffers_, &plan, rank);
    snapshot_buffers_ = ps->state;
    if (rank == 0) ps->begin_index(live, plan, world, options_.config_yaml);
    fault::point("ckpt.before_shard", rank);
    writer_->start(ps->tmp + "/" + shard_file_name(rank, world), rank, ps->state, plan,
                   during_shard_fault(rank));
  } catch (const std::exception& e) {
    ps->error = e.what();  // reported, on every rank, by the commit
  }
  last_stall_s_ = seconds_since(ps->t0);
  pending_ = std::move(ps);
  if (rank == 0) {
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
  std::unique_ptr<PendingSave> ps = std::move(pending_);
  std::map<int, ShardManifest> written;
  std::string error = ps->error;
  double write_s = 0.0;
  if (error.empty()) {
    try {
      written[comm_.rank()] = writer_->wait();
    } catch (const std::exception& e) {
      error = e.what();
    }
    write_s = writer_->last_write_seconds();
  }
  commit_save(*ps, error, written, write_s);
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

StateDict Checkpointer::load_directory(const std::string& dir,
                                       const std::optional<std::vector<std::string>>& only) {
  const auto t0 = std::chrono::steady_clock::now();
  const int rank = comm_.rank(), world = comm_.size();
  const std::string what = fmt::format("loading checkpoint '{}'", dir);
  // Which ranks can read the checkpoint (node-local disks, or a directory only some
  // nodes mount): those read, the others receive over the communicator.
  const bool readable = stdfs::exists(dir + "/" + kIndexFile);
  std::vector<char> can_read(world, 0);
  // With it, which ranks read the very same files through the same page cache (see
  // "Verification" below): those whose "1..." strings are equal and identify the files.
  int same_files_ranks = 1, same_files_index = 0;
  {
    std::string mine = "0";
    if (readable) {
      const std::string key = same_files_key(dir);
      std::string owners;  // what `wanted` below depends on, besides the collective `only`
      for (const auto& [key_, c] : checkpointables_) {
        owners += key_ + (c.scope == Scope::kPerRank ? ":p;" : ":r;");
      }
      mine = key.empty() ? "1" : "1" + key + "\n" + owners;
    }
    auto flags = comm_.all_gather_bytes(mine);
    for (int r = 0; r < world; ++r) can_read[r] = !flags[r].empty() && flags[r][0] == '1';
    if (mine.size() > 1) {
      same_files_ranks = 0;
      for (int r = 0; r < world; ++r) {
        if (flags[r] != mine) continue;
        if (r < rank) ++same_files_index;
        ++same_files_ranks;
      }
    }
  }
  const auto first_reader = std::find(can_read.begin(), can_read.end(), 1);
  DTRAIN_CHECK_T(CheckpointError, first_reader != can_read.end(),
                 "'{}' is not a checkpoint: '{}' is missing (no rank can read '{}/{}')", dir,
                 kIndexFile, dir, kIndexFile);
  const int index_root = static_cast<int>(first_reader - can_read.begin());
  const int readers = static_cast<int>(std::count(can_read.begin(), can_read.end(), 1));
  if (readers < world && rank == 0) {
    DTRAIN_LOG_WARN("Checkpoint '{}' is readable on {} of {} ranks; the others receive it over "
                    "the communicator",
                    dir, readers, world);
  }
  const std::string index_text =
      dist::on_rank<CheckpointError>(comm_, index_root, what, [&] { return read_index_text(dir); });
  const CheckpointIndex index =
      CheckpointIndex::from_json(index_text, dir + "/" + kIndexFile);

  // When every rank can read the checkpoint (one node, or a shared file system: the
  // common case), every rank reads each piece it needs itself, from every shard, and
  // nothing is broadcast. N ranks then read the checkpoint N times over, as N processes
  // each calling torch.load would: on one node the page cache makes that about one read
  // of the disk plus N memory copies; over a shared file system each node reads the
  // whole checkpoint (N_nodes times the bytes from the file servers). That is still far
  // cheaper than the alternative measured here, one rank reading each piece and one
  // broadcast per piece to all ranks (bench/README.md). Only when some ranks cannot read
  // is each piece read by one reading rank and broadcast.
  const bool every_rank_reads = readers == world;

  auto included = [&](const std::string& key) {
    return !only || std::find(only->begin(), only->end(), key) != only->end();
  };
  // What this load uses: the model, the extras, and the checkpointables it loads. The
  // entries of other owners (left out by `only`, or unknown to this Checkpointer) are
  // neither read nor verified; `dtrain ckpt verify` checks every piece.
  auto wanted = [&](const std::string& name) {
    const std::string owner = name.substr(0, name.find('/'));
    if (owner == "model" || owner == "extra") return true;
    return checkpointables_.count(owner) > 0 && included(owner);
  };

  // Tensors that pieces can be read into in place: the model's parameters and buffers,
  // and what the replicated checkpointables being loaded offer (Stateful::load_targets,
  // e.g. the optimizer's existing state). Each is used only when it is a contiguous CPU
  // tensor of exactly the stored dtype and shape; every other tensor is read into a new
  // buffer, which ModuleState copies (converting dtype) or the owner adopts.
  std::map<std::string, at::Tensor> live;

  // Which rank reads which piece. Every rank reads all of them when every rank can read;
  // otherwise each piece has one reader: its own shard's rank when the world size is
  // unchanged and it can read, else the least-loaded reading rank so far (by bytes).
  struct Read {
    size_t tensor;
    size_t piece;
    int reader;
    int verifier = 0;  // among the ranks reading the same files (see below)
  };
  std::vector<Read> reads;
  std::vector<int64_t> load(world, 0);
  auto least_loaded_reader = [&] {
    int best = -1;
    for (int r = 0; r < world; ++r) {
      if (can_read[r] && (best < 0 || load[r] < load[best])) best = r;
    }
    return best;
  };
  std::map<std::string, at::Tensor> tensors;  // replicated: where each tensor goes
  std::vector<at::Tensor> in_place;           // those of `tensors` that are live tensors
  std::vector<Read> per_rank_reads;  // per-rank pieces read by a rank other than their owner
  StateDict all;                     // what the owners get: `tensors` and the scalars
  // Planned (and buffers allocated) under all_or_none, with everything that can be checked
  // without the data, before anything is read: these errors leave the model and the
  // checkpointables untouched, and are the same on every rank.
  dist::all_or_none<CheckpointError>(comm_, what, [&] {
    for (const auto& [k, v] : ModuleState(model_).state_dict()) {
      live["model/" + k] = std::get<at::Tensor>(v);
    }
    for (const auto& [key, c] : checkpointables_) {
      if (c.scope != Scope::kReplicated || !included(key)) continue;
      for (const auto& [k, v] : c.state->load_targets()) {
        if (auto t = std::get_if<at::Tensor>(&v)) live[key + "/" + k] = *t;
      }
    }
    for (size_t ti = 0; ti < index.tensors.size(); ++ti) {
      const auto& t = index.tensors[ti];
      if (!wanted(t.name)) continue;
      if (t.per_rank) {
        for (size_t pi = 0; pi < t.pieces.size(); ++pi) {
          const int owner = t.pieces[pi].shard;
          if (owner < world && !can_read[owner]) per_rank_reads.push_back({ti, pi, index_root});
        }
        continue;
      }
      const at::ScalarType dtype = dtype_from_name(t.dtype, dir);
      auto it = live.find(t.name);
      if (it != live.end() && fits_in_place(it->second, dtype, t.shape)) {
        tensors[t.name] = it->second;
        in_place.push_back(it->second);
      } else {
        tensors[t.name] = empty_tensor_for(t, t.shape, dir);
      }
      for (size_t pi = 0; pi < t.pieces.size(); ++pi) {
        int reader = rank;
        if (!every_rank_reads) {
          reader = t.pieces[pi].shard;
          if (index.world_size != world || !can_read[reader]) reader = least_loaded_reader();
          load[reader] += t.pieces[pi].bytes;
        }
        reads.push_back({ti, pi, reader});
      }
    }
    for (const auto& [name, t] : tensors) all[name] = t;
    for (const auto& [name, v] : index.scalars) all[name] = v;
    if (options_.strict || resuming_) {
      const LoadReport mismatch = ModuleState(model_).compare(sub_state(all, "model"));
      DTRAIN_CHECK_T(ConfigError, mismatch.clean(), "checkpoint '{}' does not match the model ({}):\n{}",
                     dir, resuming_ ? "a resume needs every tensor to match" : "CHECKPOINT.STRICT is on",
                     mismatch.table());
    }
    for (const auto& [key, c] : checkpointables_) {
      if (!included(key)) continue;
      DTRAIN_CHECK_T(CheckpointError, c.scope == Scope::kPerRank || !sub_state(all, key).empty(),
                     "checkpoint '{}' has no '{}' state", dir, key);
    }
  });
  // Verification. Every piece that is read is verified (xxHash64) before the load
  // succeeds, but once per set of files and page cache, not once per rank: ranks of one
  // machine reading the same checkpoint directory (same boot, same device and inode; see
  // same_files_key) get the very same bytes from the page cache, so hashing them on each
  // would only multiply the CPU work (it was ~40% of a warm 4-rank load on 2 cores). The
  // pieces, in index order (the order of the shards' bytes), are cut into one contiguous
  // byte range per such rank, as the shards are, and each verifies its range. A damaged
  // piece fails its verifier and, through all_or_none, the load on every rank. Ranks on
  // other machines, or reading another copy, verify everything they read themselves.
  //
  // Order: each rank first reads the range it verifies (so the ranks read different
  // parts of the files at once), then the others' ranges, by then mostly in the page
  // cache. Within a range, pieces stay in index order, their order in the files.
  if (every_rank_reads && same_files_ranks > 1) {
    int64_t total = 0, offset = 0;
    for (const auto& r : reads) total += index.tensors[r.tensor].pieces[r.piece].bytes;
    for (auto& r : reads) {
      r.verifier = total > 0 ? static_cast<int>(offset * same_files_ranks / total) : 0;
      offset += index.tensors[r.tensor].pieces[r.piece].bytes;
    }
    auto turn = [&](const Read& r) {
      return (r.verifier - same_files_index + same_files_ranks) % same_files_ranks;
    };
    std::stable_sort(reads.begin(), reads.end(),
                     [&](const Read& a, const Read& b) { return turn(a) < turn(b); });
  } else {
    for (auto& r : reads) r.verifier = same_files_index;  // verifies all it reads
    if (every_rank_reads && index.world_size > 1) {
      // Rank r starts with shard r*N/world and goes round, so that ranks on different
      // machines first read different files.
      const int first = static_cast<int>(int64_t{rank} * index.world_size / world);
      auto turn = [&](const Read& r) {
        const int shard = index.tensors[r.tensor].pieces[r.piece].shard;
        return ((shard - first) % index.world_size + index.world_size) % index.world_size;
      };
      std::stable_sort(reads.begin(), reads.end(),
                       [&](const Read& a, const Read& b) { return turn(a) < turn(b); });
    }
  }
  auto dst_of = [&](const TensorRecord& t, const PieceRecord& p) {
    at::Tensor full = tensors.at(t.name);
    return full.dim() == 0 ? full : full.narrow(0, p.row_start, p.row_count);
  };


  // Reading (or receiving) straight into live tensors has a cost when the load fails
  // while reading (a damaged, truncated or missing shard): part of the model (and of
  // the optimizer state offered by load_targets) may already be overwritten. The load
  // then throws the same CheckpointError on every rank, and resume_or_load goes on to
  // load an older checkpoint in full; a caller that catches the error must not train
  // on. Keeping the model intact would need a second copy of everything (1x the state
  // in memory and a full extra pass), which is what made loads slow.
  for (auto& t : in_place) t.unsafeGetTensorImpl()->bump_version();  // as copy_ would
  StateDict per_rank;
  std::map<std::pair<size_t, size_t>, at::Tensor> per_rank_sent;
  dist::all_or_none<CheckpointError>(comm_, what, [&] {
    ShardReader reader(dir, index.world_size, options_.allow_symlinked_shards);
    for (const auto& r : reads) {
      if (r.reader != rank) continue;
      const auto& t = index.tensors[r.tensor];
      at::Tensor dst = dst_of(t, t.pieces[r.piece]);
      reader.read_piece(t, t.pieces[r.piece], dst, /*verify=*/r.verifier == same_files_index);
    }
    for (const auto& t : index.tensors) {
      if (!t.per_rank || !readable || !wanted(t.name)) continue;
      for (const auto& p : t.pieces) {
        if (p.shard != rank) continue;
        at::Tensor dst = empty_tensor_for(t, p.shape, dir);
        reader.read_piece(t, p, dst);
        per_rank[t.name] = dst;
      }
    }
    for (const auto& r : per_rank_reads) {
      if (r.reader != rank) continue;
      const auto& t = index.tensors[r.tensor];
      const auto& p = t.pieces[r.piece];
      at::Tensor dst = empty_tensor_for(t, p.shape, dir);
      reader.read_piece(t, p, dst);
      per_rank_sent[{r.tensor, r.piece}] = dst;
    }
  });
  // Per-rank state of ranks that cannot read: the reader broadcasts, the owner keeps it.
  for (const auto& r : per_rank_reads) {
    const auto& t = index.tensors[r.tensor];
    const auto& p = t.pieces[r.piece];
    at::Tensor buf = rank == r.reader
                         ? per_rank_sent.at({r.tensor, r.piece})
                         : empty_tensor_for(t, p.shape, dir);
    if (buf.numel() > 0) comm_.broadcast(buf, r.reader);
    if (rank == p.shard) per_rank[t.name] = buf;
  }
  per_rank_sent.clear();
  if (!every_rank_reads) {
    for (const auto& r : reads) {
      const auto& t = index.tensors[r.tensor];
      at::Tensor dst = dst_of(t, t.pieces[r.piece]);
      if (dst.numel() > 0 && world > 1) comm_.broadcast(dst, r.reader);
    }
  }
  tensors.clear();
  in_place.clear();
  live.clear();

  // Hand each owner its part. Errors (which may differ between ranks, e.g. for per-rank
  // state) are agreed on, so that every rank throws the same.
  dist::all_or_none<CheckpointError>(comm_, what, [&] {
    LoadReport report = ModuleState(model_).load_with_report(sub_state(all, "model"));
    if (!report.clean() && rank == 0) {
      DTRAIN_LOG_WARN("Some model parameters or buffers were not loaded from '{}':\n{}", dir,
                      report.table());
    }
    for (const auto& [key, c] : checkpointables_) {
      if (!included(key)) continue;
      // Moved out: the new buffers are handed over (adopt_state_dict), nobody else keeps them.
      StateDict s = take_sub_state(c.scope == Scope::kPerRank ? per_rank : all, key);
      if (c.scope == Scope::kPerRank && s.empty()) {
        if (rank == 0 || rank >= index.world_size) {
          DTRAIN_LOG_WARN_RANK("Checkpoint '{}' (from {} ranks) has no '{}' state for rank {}; "
                          "keeping this rank's current state",
                          dir, index.world_size, key, rank);
        }
        continue;
      }
      if (c.scope == Scope::kPerRank) restore_scalar_types(s, c.state->state_dict());
      try {
        c.state->adopt_state_dict(std::move(s));
      } catch (const ConfigError& e) {  // incompatible with this run: not damage
        throw ConfigError(fmt::format("loading '{}' state from '{}': {}", key, dir, e.what()));
      } catch (const std::exception& e) {
        throw CheckpointError(fmt::format("loading '{}' state from '{}': {}", key, dir, e.what()));
      }
    }
  });
  StateDict extra = sub_state(all, "extra");
  extra["iteration"] = index.iteration;
  loaded_from_ = dir;
  if (rank == 0) {
    DTRAIN_LOG_INFO("Loaded checkpoint {} (iteration {}, saved by {} ranks) in {:.3f} s", dir,
                    index.iteration, index.world_size, seconds_since(t0));
  }
  return extra;
}

bool Checkpointer::has_checkpoint() {
  check_collective("has_checkpoint", "");
  return dist::on_root<CheckpointError>(comm_, "has_checkpoint", [&] {
           std::error_code ec;  // a tag that is a (dangling) link is there, and damaged
           const auto type = stdfs::symlink_status(save_dir_ + "/" + kLastCheckpoint, ec).type();
           return std::string(type != stdfs::file_type::not_found ? "1" : "0");
         }) == "1";
}

std::string Checkpointer::get_checkpoint_file() {
  check_collective("get_checkpoint_file", "");
  return dist::on_root<CheckpointError>(comm_, "get_checkpoint_file", [&]() -> std::string {
    const std::string name = last_checkpoint_name(save_dir_);
    return name.empty() ? "" : save_dir_ + "/" + name;
  });
}

std::vector<std::string> Checkpointer::get_all_checkpoint_files() {
  check_collective("get_all_checkpoint_files", "");
  std::string joined = dist::on_root<CheckpointError>(comm_, "get_all_checkpoint_files", [&] {
    std::vector<std::string> found;
    if (stdfs::is_directory(save_dir_)) {
      for (const auto& e : stdfs::directory_iterator(save_dir_)) {
        if (is_committed_checkpoint(e.path())) found.push_back(e.path().string());
      }
    }
    std::sort(found.begin(), found.end());
    return fmt::format("{}", fmt::join(found, "\n"));
  });
  std::vector<std::string> out;
  size_t start = 0;
  while (start < joined.size()) {
    size_t end = joined.find('\n', start);
    if (end == std::string::npos) end = joined.size();
    out.push_back(joined.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

StateDict Checkpointer::resume_or_load(const std::string& path, bool resume) {
  if (resume && has_checkpoint()) {
    std::vector<std::string> candidates;
    try {
      candidates.push_back(get_checkpoint_file());
    } catch (const CheckpointError& e) {  // a damaged tag: the newest good checkpoint wins
      if (comm_.rank() == 0) DTRAIN_LOG_WARN("{}; resuming from the newest checkpoint instead", e.what());
    }
    // Fallbacks: the others, newest first (rank 0 orders them; see order_by_recency).
    std::vector<std::string> all = get_all_checkpoint_files();
    const std::string ordered = dist::on_root<CheckpointError>(comm_, "ordering checkpoints", [&] {
      return fmt::format("{}", fmt::join(order_by_recency(all), "\n"));
    });
    all.clear();
    for (size_t start = 0; start < ordered.size();) {
      size_t end = ordered.find('\n', start);
      if (end == std::string::npos) end = ordered.size();
      all.push_back(ordered.substr(start, end - start));
      start = end + 1;
    }
    for (auto& c : all) {
      if (candidates.empty() || c != candidates.front()) candidates.push_back(c);
    }
    std::string failures;
    // A resume continues a run: the model must match the checkpoint exactly.
    resuming_ = true;
    struct Reset {
      bool& flag;
      ~Reset() { flag = false; }
    } reset{resuming_};
    for (const auto& c : candidates) {
      try {
        return load(c);
      } catch (const CheckpointError& e) {  // damage; a ConfigError (incompatible) stops here
        failures += fmt::format("\n  {}: {}", c, e.what());
        if (comm_.rank() == 0) {
          DTRAIN_LOG_WARN("Cannot resume from {} ({}); trying an older checkpoint", c, e.what());
        }
      }
    }
    throw CheckpointError(fmt::format("no valid checkpoint to resume from in '{}':{}", save_dir_, failures));
  }
  if (!path.empty()) {
    load(path, std::vector<std::string>{});
  } else if (resume && comm_.rank() == 0) {
    DTRAIN_LOG_INFO("No checkpoint found in {}; training from scratch", save_dir_);
  }
  return {};
}

void Checkpointer::tag_last_checkpoint(const std::string& name) {
  check_collective("tag_last_checkpoint", name);
  dist::on_root<CheckpointError>(comm_, "tag_last_checkpoint", [&] {
    validate_name(name);
    fs::write_file_atomic(save_dir_ + "/" + kLastCheckpoint, name);
    return std::string();
  });
}

void Checkpointer::remove_checkpoint(const std::string& name) {
  check_collective("remove_checkpoint", name);
  dist::on_root<CheckpointError>(comm_, fmt::format("removing checkpoint '{}/{}'", save_dir_, name), [&] {
    validate_name(name);
    std::string tagged;
    try {
      tagged = last_checkpoint_name(save_dir_);
    } catch (const CheckpointError&) {
      // A damaged tag names nothing; the next save writes it again.
    }
    DTRAIN_CHECK_T(CheckpointError, tagged != name, "refusing to delete '{}': last_checkpoint names it",
                   name);
    remove_dir_safely(save_dir_ + "/" + name);
    return std::string();
  });
}

PeriodicCheckpointer::PeriodicCheckpointer(Checkpointer& checkpointer, int64_t period,
                                           std::optional<int64_t> max_iter, int64_t max_to_keep,
                                           std::string file_prefix, bool async)
    : checkpointer_(checkpointer),
      period_(period),
      max_iter_(max_iter),
      max_to_keep_(max_to_keep),
      prefix_(std::move(file_prefix)),
      async_(async) {
  DTRAIN_CHECK_T(ConfigError, period_ > 0, "checkpoint period must be positive, got {}", period_);
}

void PeriodicCheckpointer::save(const std::string& name, const StateDict& extra) {
  const int64_t before = checkpointer_.commits();
  checkpointer_.save(name, extra);
  prune_if_committed(before);
}

void PeriodicCheckpointer::step(int64_t iteration, const StateDict& extra) {
  const int64_t before = checkpointer_.commits();
  // An asynchronous save whose shards are all written is committed at this boundary.
  checkpointer_.poll_async();
  StateDict state = extra;
  state["iteration"] = iteration;
  const bool last = max_iter_ && iteration >= *max_iter_ - 1;
  if ((iteration + 1) % period_ == 0) {
    const std::string name = fmt::format("{}_{:07d}", prefix_, iteration);
    if (async_ && !last) {
      checkpointer_.save_async(name, state);
    } else {
      checkpointer_.save(name, state);
    }
  }
  if (last) checkpointer_.save(prefix_ + "_final", state);
  prune_if_committed(before);
}

void PeriodicCheckpointer::finish() {
  const int64_t before = checkpointer_.commits();
  checkpointer_.finish_async();
  prune_if_committed(before);
}

void PeriodicCheckpointer::prune_if_committed(int64_t commits_before) {
  if (max_to_keep_ > 0 && checkpointer_.commits() != commits_before) prune();
}

void PeriodicCheckpointer::prune() {
  // Rebuilt from disk every time: survives restarts and other writers' leftovers.
  const std::regex periodic(prefix_ + "_([0-9]{7})");
  std::vector<std::string> names;
  for (const auto& path : checkpointer_.get_all_checkpoint_files()) {
    const std::string n = stdfs::path(path).filename().string();
    if (std::regex_match(n, periodic)) names.push_back(n);
  }
  std::sort(names.begin(), names.end());  // zero-padded: name order is iteration order
  const std::string last = stdfs::path(checkpointer_.get_checkpoint_file()).filename().string();
  const std::string resumed = stdfs::path(checkpointer_.loaded_from()).filename().string();
  // The newest max_to_keep stay; of the older ones, all but those protected go.
  const int64_t excess = static_cast<int64_t>(names.size()) - max_to_keep_;
  for (int64_t i = 0; i < excess; ++i) {
    if (names[i] == last || names[i] == resumed) continue;
    checkpointer_.remove_checkpoint(names[i]);
  }
}

}  // namespace dtrain::checkpoint
