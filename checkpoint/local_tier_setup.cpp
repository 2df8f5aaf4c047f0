// The node-local tier's setup (see local_tier.h): the job's identity, the node's id, the
// buddies of each rank, and the tidy-up of a node's tier when a run opens it.
#include "checkpoint/local_tier.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <xxhash.h>

#include "checkpoint/local_tier_files.h"
#include "checkpoint/save_dir.h"
#include "checkpoint/slab_pool.h"
#include "runtime/base/error.h"
#include "runtime/base/file_lock.h"
#include "runtime/base/fs.h"
#include "runtime/base/logging.h"
#include "runtime/dist/agree.h"

namespace dtrain::checkpoint {
namespace {
// Written into a job's directory: the OUTPUT_DIR it belongs to, so that a start of
// another config of the same OUTPUT_DIR can tell its snapshots are stale.
constexpr const char* kJobFile = "job.txt";
constexpr const char* kLockFile = "lock";

// The lock file of the job directory `dir` (LocalTier::lock_job), opened (made where
// missing, private to this user).
std::unique_ptr<FileLock> open_job_lock(const std::string& dir) {
  return std::make_unique<FileLock>(dir + "/" + kLockFile, 0600);
}
}  // namespace

LocalWrite parse_local_write(const std::string& value) {
  if (value == "auto") return LocalWrite::kAuto;
  if (value == "mapped") return LocalWrite::kMapped;
  if (value == "hdf5") return LocalWrite::kHdf5;
  throw ConfigError(fmt::format("CHECKPOINT.LOCAL.WRITE must be auto, mapped or hdf5, got '{}'", value));
}

std::string node_id_from_environment() {
  std::string id;
  if (const char* env = std::getenv("DTRAIN_NODE_ID"); env != nullptr && *env != '\0') {
    id = env;
  } else {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
    id = buf;
  }
  DTRAIN_CHECK_T(ConfigError,
                 id != "." && id != ".." && id.find('/') == std::string::npos && id.size() < 256,
                 "the node id '{}' (DTRAIN_NODE_ID or the host name) must be a plain file name", id);
  return id;
}

// The absolute, normal form of a directory, without a trailing separator, so that
// "out", "./out/" and "/abs/out" name the same job.
std::string absolute_dir(const std::string& dir) {
  std::string abs = std::filesystem::absolute(dir).lexically_normal().string();
  while (abs.size() > 1 && abs.back() == '/') abs.pop_back();
  return abs;
}

std::string expand_user(const std::string& dir) {
  static const std::string kUser = "{user}";
  std::string out = dir;
  const size_t first = out.find(kUser);
  if (first == std::string::npos) return out;
  const std::string name = fs::user_name();
  for (size_t at = first; at != std::string::npos; at = out.find(kUser, at)) {
    out.replace(at, kUser.size(), name);
    at += name.size();
  }
  return out;
}

std::string local_job_key(const std::string& output_dir, const std::string& config_yaml) {
  const std::string abs = absolute_dir(output_dir);
  const std::string id = abs + '\n' + config_yaml;
  return fmt::format("job-{:016x}", XXH64(id.data(), id.size(), 0));
}

std::vector<std::vector<std::pair<int, int>>> schedule_transfers(
    const std::vector<std::pair<int, int>>& pairs) {
  std::vector<std::vector<std::pair<int, int>>> rounds;
  std::vector<std::set<int>> senders, receivers;
  for (const auto& p : pairs) {
    size_t r = 0;
    while (r < rounds.size() && (senders[r].count(p.first) || receivers[r].count(p.second))) ++r;
    if (r == rounds.size()) {
      rounds.emplace_back();
      senders.emplace_back();
      receivers.emplace_back();
    }
    rounds[r].push_back(p);
    senders[r].insert(p.first);
    receivers[r].insert(p.second);
  }
  return rounds;
}

std::string node_id_clash(const std::vector<std::string>& node_of, const std::vector<std::string>& machine_of) {
  std::map<std::string, int> first;  // node id -> its first rank with a known machine
  for (int r = 0; r < static_cast<int>(node_of.size()); ++r) {
    if (machine_of[r].empty()) continue;
    const auto [it, fresh] = first.emplace(node_of[r], r);
    if (!fresh && machine_of[it->second] != machine_of[r]) {
      return fmt::format("ranks {} and {} both give node id '{}' but run on different machines (boot ids {} and "
                         "{}); a node's snapshots would be taken for another's. Set DTRAIN_NODE_ID to a name of "
                         "each node's own (e.g. the host's full name)",
                         it->second, r, node_of[r], machine_of[it->second], machine_of[r]);
    }
  }
  return "";
}

std::vector<std::pair<int, int>> buddy_pairs(const std::vector<std::string>& node_of, int replicas) {
  std::vector<std::string> nodes;              // in order of first rank
  std::map<std::string, std::vector<int>> ranks_on;
  for (int r = 0; r < static_cast<int>(node_of.size()); ++r) {
    if (!ranks_on.count(node_of[r])) nodes.push_back(node_of[r]);
    ranks_on[node_of[r]].push_back(r);
  }
  const int k = static_cast<int>(nodes.size());
  std::vector<std::pair<int, int>> pairs;
  for (int j = 1; j <= std::min(replicas, k - 1); ++j) {
    for (int n = 0; n < k; ++n) {
      const auto& mine = ranks_on[nodes[n]];
      const auto& theirs = ranks_on[nodes[(n + j) % k]];
      for (size_t i = 0; i < mine.size(); ++i) pairs.emplace_back(mine[i], theirs[i % theirs.size()]);
    }
  }
  return pairs;
}

void LocalTier::set_root(const std::string& dir) {
  options_.dir = dir;
  job_dir_ = fmt::format("{}/{}/{}", dir, options_.node_id, local_job_key(options_.output_dir, options_.config_yaml));
}

void LocalTier::make_job_dir() {
  // The root too may have gone (a tidy-up of /dev/shm): one made again by another user
  // in the meantime is refused, as at open.
  fs::create_directories_durable(options_.dir, env_, DirAccess::kPrivate);
  const std::string real = fs::trusted_dir(options_.dir).path;
  DTRAIN_CHECK(real == options_.dir, "the local tier '{}' is now a link to '{}'", options_.dir, real);
  // Each checked before anything is made in it.
  const std::string node_dir = fs::parent_dir(job_dir_);
  fs::create_directories_durable(node_dir, env_, DirAccess::kPrivate);
  fs::check_private_dir(node_dir);
  fs::create_directories_durable(job_dir_, env_, DirAccess::kPrivate);
  job_dir_id_ = fs::check_private_dir(job_dir_);
  // Whose it is, for the tidy-up of another config of this OUTPUT_DIR.
  if (env_.type_of(job_dir_ + "/" + kJobFile) == FileType::kMissing) {
    fs::write_file_atomic(job_dir_ + "/" + kJobFile, absolute_dir(options_.output_dir), env_);
  }
}

void LocalTier::secure() {
  const std::string what = fmt::format("checking who can change the local tier {}", options_.dir);
  const std::string job = std::filesystem::path(job_dir_).filename().string();
  std::string root;
  dist::all_or_none<CheckpointError>(comm_, what, [&] {
    if (!leader_) return;
    try {
      // What this run creates of the root's way (the default root, one per user) is
      // private; what exists is the user's choice and only has to be trusted.
      fs::create_directories_durable(options_.dir, env_, DirAccess::kPrivate);
      const fs::TrustedDir trusted = fs::trusted_dir(options_.dir);
      if (!trusted.warning.empty()) {
        DTRAIN_LOG_WARN_RANK("The local tier {} is used, but {}. On a node shared with other users, set "
                             "CHECKPOINT.LOCAL.DIR to a directory whose parents they cannot write to",
                             options_.dir, trusted.warning);
      }
      root = trusted.path;
      const std::string node_dir = root + "/" + options_.node_id;
      fs::create_directories_durable(node_dir, env_, DirAccess::kPrivate);
      fs::check_private_dir(node_dir);
      if (env_.type_of(node_dir + "/" + job) != FileType::kMissing) fs::check_private_dir(node_dir + "/" + job);
    } catch (const Error& e) {
      throw CheckpointError(fmt::format("{} (node '{}'; set CHECKPOINT.LOCAL.DIR to a directory of your own)",
                                        e.what(), options_.node_id));
    }
  });
  // Every rank uses the real path its node's leader checked, never the links on the way
  // again: they cannot lead elsewhere later.
  dist::all_or_none<CheckpointError>(comm_, what, [&] {
    set_root(leader_ ? root : std::filesystem::canonical(options_.dir).string());
  });
}

void LocalTier::lock_job() {
  const std::string what = fmt::format("locking this job's local tier {}", job_dir_);
  const std::string path = job_dir_ + "/" + kLockFile;
  auto take = [&](FileLock::Mode mode) {
    const FileLock::Outcome got = job_lock_->lock(mode, options_.lock_wait);
    DTRAIN_CHECK_T(CheckpointError, got != FileLock::Outcome::kBusy,
                   "another process still uses node '{}''s local tier of this job ('{}' stayed locked for {} "
                   "ms): a run of the same OUTPUT_DIR and config, or a process of a killed run still alive. "
                   "Its snapshots are neither used nor removed by this run",
                   options_.node_id, path, options_.lock_wait.count());
    if (got == FileLock::Outcome::kUnsupported && mode == FileLock::Mode::kExclusive) {
      DTRAIN_LOG_WARN_RANK("Cannot lock '{}' ({}): the local tier is used without making sure that no other "
                           "process of this job uses it on node '{}'",
                           path, job_lock_->error(), options_.node_id);
    }
  };
  // Every rank joins both agreements, also where it holds the lock already (open() again).
  // The exclusive lock is turned into a shared one (flock converts, not atomically: two
  // runs starting within microseconds of each other could both go on).
  dist::all_or_none<CheckpointError>(comm_, what, [&] {
    if (!leader_ || holds_job_lock()) return;
    // A holder that ended by removing the job's directory (a finished run) left this
    // rank a lock on a file no longer there: taken again on the new one.
    for (int tries = 0; tries < 3 && !(job_lock_ && job_lock_->still_linked()); ++tries) {
      make_job_dir();
      job_lock_ = open_job_lock(job_dir_);
      take(FileLock::Mode::kExclusive);
    }
    DTRAIN_CHECK_T(CheckpointError, job_lock_->still_linked(), "'{}' was removed each time this run locked it",
                   path);
    take(FileLock::Mode::kShared);
  });
  dist::all_or_none<CheckpointError>(comm_, what, [&] {
    if (leader_ || holds_job_lock()) return;
    job_lock_ = open_job_lock(job_dir_);
    take(FileLock::Mode::kShared);
  });
}

bool LocalTier::holds_job_lock() const { return job_lock_ && job_lock_->held() && job_lock_->still_linked(); }

void LocalTier::relock_job() {
  if (holds_job_lock()) return;
  job_lock_ = open_job_lock(job_dir_);
  DTRAIN_CHECK_T(CheckpointError,
                 job_lock_->lock(FileLock::Mode::kShared, std::chrono::milliseconds(0)) != FileLock::Outcome::kBusy,
                 "'{}' is locked by another process", job_lock_->path());
}

void LocalTier::tidy_up(bool resume) {
  dist::all_or_none<CheckpointError>(comm_, fmt::format("preparing the local checkpoint tier {}", job_dir_), [&] {
    if (!leader_) return;
    const std::string node_dir = fs::parent_dir(job_dir_);
    const std::string abs = absolute_dir(options_.output_dir);
    if (env_.type_of(node_dir) == FileType::kDirectory) {
      for (const auto& n : env_.children(node_dir)) {
        const std::string other = node_dir + "/" + n;
        if (other == job_dir_ || n.rfind("job-", 0) != 0) continue;
        std::string owner;
        try {
          owner = env_.read_file(other + "/" + kJobFile, fs::ReadOptions{4096, true});
        } catch (const std::exception&) {
          continue;  // not ours to judge
        }
        if (owner != abs) continue;
        // Not while a run of that config uses it (the lock held until it is removed).
        std::unique_ptr<FileLock> lock;
        try {
          lock = open_job_lock(other);
        } catch (const Error&) {
          continue;  // not ours to judge
        }
        if (lock->lock(FileLock::Mode::kExclusive, std::chrono::milliseconds(0)) == FileLock::Outcome::kBusy) {
          DTRAIN_LOG_INFO_RANK("Keeping the local snapshots of another config of {} in {}: a run of it is using "
                               "them", abs, other);
          continue;
        }
        DTRAIN_LOG_INFO_RANK("Removing local snapshots of another config of {}: {}", abs, other);
        env_.remove_tree(other);
      }
    }
    if (env_.type_of(job_dir_) == FileType::kDirectory) {
      // On a resume, the spares of this node's ranks stay: their next snapshot takes
      // them over (SlabPool::take) instead of creating a file in its stall.
      std::set<std::string> spares;
      for (int r = 0; resume && r < comm_.size(); ++r) {
        if (node_of_[r] == options_.node_id) spares.insert(spare_path(r));
      }
      save_dir::remove_stale_temporaries(env_, job_dir_, [&](const std::string& name) {
        return spares.count(job_dir_ + "/" + name) > 0;
      });
      for (const auto& n : env_.children(job_dir_)) {
        if (!resume && local_detail::snap_iteration(n) >= 0) save_dir::remove_dir_safely(env_, job_dir_ + "/" + n);
      }
    }
    make_job_dir();
  });
}

}  // namespace dtrain::checkpoint
