// The resume side of the node-local tier (see local_tier.h): which snapshot every shard
// of which is on some node (plan_restore), bringing this rank's shard to its node
// (stage), and tidying up after a resume.
#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "checkpoint/local_tier.h"
#include "checkpoint/local_tier_files.h"
#include "checkpoint/save_dir.h"
#include "runtime/base/error.h"
#include "runtime/base/fs.h"
#include "runtime/base/logging.h"
#include "runtime/dist/agree.h"

namespace dtrain::checkpoint {
namespace {

using local_detail::my_partners;
using local_detail::snap_iteration;
using local_detail::snap_name;
using local_detail::whole_file;

// One node's holdings: iteration -> (world size, shards whose file is there), for the
// committed snapshots with a checkpoint.h5. Text: "<iteration> <world> <s>,<s>,...\n".
using Holdings = std::map<int64_t, std::pair<int, std::set<int>>>;

Holdings list_holdings(Env& env, const std::string& job_dir) {
  Holdings out;
  if (env.type_of(job_dir) != FileType::kDirectory) return out;
  static const std::regex shard_re("shard-([0-9]{5})-of-([0-9]{5})\\.h5");
  for (const auto& n : env.children(job_dir)) {
    const int64_t it = snap_iteration(n);
    const std::string dir = job_dir + "/" + n;
    if (it < 0 || env.type_of(dir + "/" + kIndexFile) != FileType::kRegular) continue;
    for (const auto& f : env.children(dir)) {
      std::smatch m;
      if (!std::regex_match(f, m, shard_re) || env.type_of(dir + "/" + f) != FileType::kRegular) continue;
      const int shard = std::stoi(m[1].str()), world = std::stoi(m[2].str());
      auto& h = out[it];
      if (h.second.empty()) h.first = world;
      if (h.first == world && shard < world) h.second.insert(shard);
    }
  }
  return out;
}

std::string encode_holdings(const Holdings& h) {
  std::string out;
  for (const auto& [it, ws] : h) out += fmt::format("{} {} {}\n", it, ws.first, fmt::join(ws.second, ","));
  return out;
}

Holdings decode_holdings(const std::string& text, int from_rank) {
  Holdings out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    int64_t it = -1;
    int world = 0;
    ls >> it >> world;
    DTRAIN_CHECK_T(CheckpointError, !ls.fail() && it >= 0 && world > 0,
                   "internal: rank {} sent a local tier listing that cannot be read: '{}'", from_rank, line);
    std::string shards;
    ls >> shards;
    auto& h = out[it];
    h.first = world;
    std::istringstream ss(shards);
    for (std::string s; std::getline(ss, s, ',');) h.second.insert(std::stoi(s));
  }
  return out;
}

// "rank 3" / "ranks 0, 1".
std::string ranks_text(const std::vector<int>& ranks) {
  return fmt::format("{} {}", ranks.size() == 1 ? "shard" : "shards", fmt::join(ranks, ", "));
}

// A staging payload: checkpoint.h5 and one shard file, in one string.
std::string pack_files(const std::string& index, const std::string& shard) {
  return fmt::format("{}\n", index.size()) + index + shard;
}

std::pair<std::string, std::string> unpack_files(const std::string& payload, int from_rank) {
  const size_t nl = payload.find('\n');
  DTRAIN_CHECK_T(CheckpointError, nl != std::string::npos && nl < 20,
                 "internal: rank {} sent a local snapshot that cannot be read", from_rank);
  const uint64_t n = std::stoull(payload.substr(0, nl));
  DTRAIN_CHECK_T(CheckpointError, n <= payload.size() - nl - 1,
                 "internal: rank {} sent a truncated local snapshot", from_rank);
  return {payload.substr(nl + 1, n), payload.substr(nl + 1 + n)};
}

// shard -> the ranks whose node holds its file, of one snapshot.
using ShardHolders = std::map<int, std::vector<int>>;

// Each shard read by the rank of its number when its node holds it, else by a holder.
LocalRestore serve_own_shards(const ShardHolders& holders, const std::vector<std::string>& node_of) {
  LocalRestore plan;
  const int world = static_cast<int>(holders.size());
  plan.server.resize(world);
  std::vector<int> own;
  std::string others;
  for (int s = 0; s < world; ++s) {
    const auto& h = holders.at(s);
    const bool self = std::find(h.begin(), h.end(), s) != h.end();
    plan.server[s] = self ? s : h[s % h.size()];
    if (self) {
      own.push_back(s);
    } else {
      others += fmt::format("; shard {} from the replica on node '{}' (rank {})", s, node_of[plan.server[s]],
                            plan.server[s]);
    }
  }
  plan.description = own.empty() ? others.substr(2)
                                 : fmt::format("{} from their ranks' own node{}", ranks_text(own), others);
  return plan;
}

// A snapshot of another world size: each shard read once, by the holder with the fewest
// shards so far (its own rank's number first), and resharded by the load.
LocalRestore serve_resharded(const ShardHolders& holders, const std::vector<std::string>& node_of) {
  LocalRestore plan;
  std::vector<int> served(node_of.size(), 0);
  std::string where;
  for (const auto& [s, h] : holders) {
    int best = h.front();
    for (const int r : h) {
      if (served[r] < served[best] || (served[r] == served[best] && r == s)) best = r;
    }
    ++served[best];
    plan.server.push_back(best);
    where += fmt::format("{}shard {} on node '{}' (rank {})", where.empty() ? "" : "; ", s, node_of[best], best);
  }
  plan.description = fmt::format("a snapshot of {} ranks, resharded to {}: {}", holders.size(), node_of.size(), where);
  return plan;
}

// `holders` without the ranks of the nodes whose copy of a shard was found damaged;
// false if a shard has no holder left.
bool drop_damaged(ShardHolders& holders, const std::map<int, std::set<std::string>>& damaged,
                  const std::vector<std::string>& node_of) {
  for (auto& [s, h] : holders) {
    const auto bad = damaged.find(s);
    if (bad == damaged.end()) continue;
    h.erase(std::remove_if(h.begin(), h.end(), [&](int r) { return bad->second.count(node_of[r]) > 0; }), h.end());
    if (h.empty()) return false;
  }
  return true;
}

// The node whose copy of the index rank r reads in `plan`: at the same world size its
// shard's server's (its own, or the one it was staged from); resharded, its own.
const std::string& index_source(const LocalRestore& plan, int r, int world, const std::vector<std::string>& node_of) {
  return node_of[plan.world == world ? plan.server[r] : r];
}

// The first rank that can read `plan`'s index from a node whose copy is not damaged (at
// another world size, a rank on a node holding a shard of it: `holders`); -1: none.
int choose_index_reader(const LocalRestore& plan, const ShardHolders& holders, int world,
                        const std::vector<std::string>& node_of) {
  std::set<int> holding;
  for (const auto& [s, h] : holders) holding.insert(h.begin(), h.end());
  for (int r = 0; r < world; ++r) {
    const bool reads = plan.world == world || holding.count(r) > 0;
    if (reads && plan.bad_index.count(index_source(plan, r, world, node_of)) == 0) return r;
  }
  return -1;
}

}  // namespace

LocalRestore LocalTier::plan_restore(const LocalRestore* failed, ReadFailure failure) {
  require_open();
  finish();
  if (!refused_.empty()) return {};  // the same on every rank: secure() agreed
  const int world = comm_.size();
  // A rank sent nothing to stage is the reader whose copy failed (stage()).
  if (failure == ReadFailure::kNone && staged_nothing_) failure = ReadFailure::kPieces;
  staged_nothing_ = false;
  std::string mine(1, static_cast<char>(failure));
  try {
    mine += encode_holdings(list_holdings(env_, job_dir_));
  } catch (const std::exception& e) {
    DTRAIN_LOG_WARN_RANK("Cannot list the local tier {}: {}", job_dir_, e.what());
  }
  const auto all = comm_.all_gather_bytes(mine);
  // iteration -> the snapshot's world size -> its shards' holders
  std::map<int64_t, std::map<int, ShardHolders>> holders;
  for (int r = 0; r < world; ++r) {
    for (const auto& [it, ws] : decode_holdings(all[r].substr(1), r)) {
      for (int s : ws.second) holders[it][ws.first][s].push_back(r);
    }
  }
  // After a failed load: the copies its failed readers read are damaged. Without any
  // (it failed elsewhere), or a shard or the index with no other copy, an older snapshot
  // serves.
  std::map<int, std::set<std::string>> damaged;
  std::set<std::string> bad_index;
  if (failed != nullptr) {
    damaged = failed->damaged;
    bad_index = failed->bad_index;
    for (size_t s = 0; s < failed->server.size(); ++s) {
      const int reader = failed->world == world ? static_cast<int>(s) : failed->server[s];
      if (all[reader].front() == static_cast<char>(ReadFailure::kPieces)) {
        damaged[static_cast<int>(s)].insert(node_of_[failed->server[s]]);
      }
    }
    for (int r = 0; r < world; ++r) {
      if (all[r].front() == static_cast<char>(ReadFailure::kIndex)) {
        bad_index.insert(index_source(*failed, r, world, node_of_));
      }
    }
    // A copy newly found damaged: the other copies may serve.
    const bool again = damaged != failed->damaged || bad_index != failed->bad_index;
    holders.erase(holders.upper_bound(again ? failed->iteration : failed->iteration - 1), holders.end());
  }
  std::set<int> incomplete;
  for (auto it = holders.rbegin(); it != holders.rend(); ++it) {
    // A complete snapshot of this world size first; of another one, resharded.
    int chosen = 0;
    for (const auto& [w, shards] : it->second) {
      if (static_cast<int>(shards.size()) != w) {
        incomplete.insert(w);
      } else if (chosen == 0 || w == world) {
        chosen = w;
      }
    }
    if (chosen == 0) continue;
    ShardHolders shards = it->second.at(chosen);
    const bool retry = failed != nullptr && it->first == failed->iteration && chosen == failed->world;
    if (retry && !drop_damaged(shards, damaged, node_of_)) continue;
    LocalRestore plan = chosen == world ? serve_own_shards(shards, node_of_) : serve_resharded(shards, node_of_);
    plan.iteration = it->first;
    plan.world = chosen;
    if (retry) {
      plan.damaged = damaged;
      plan.bad_index = bad_index;
      if (!bad_index.empty()) {
        plan.index_reader = choose_index_reader(plan, it->second.at(chosen), world, node_of_);
        if (plan.index_reader < 0) continue;
        plan.description += fmt::format("; the index from node '{}' (rank {})",
                                        index_source(plan, plan.index_reader, world, node_of_), plan.index_reader);
      }
    }
    return plan;
  }
  if (failed == nullptr && !incomplete.empty() && comm_.rank() == 0) {
    DTRAIN_LOG_WARN("The local tier's snapshots (of {} ranks) each lack a shard that no node holds: resuming "
                    "from the persistent tier",
                    fmt::join(incomplete, ", "));
  }
  return {};
}

std::string LocalTier::stage(const LocalRestore& plan) {
  DTRAIN_CHECK(refused_.empty(), "internal: staging a snapshot of a local tier that is not used ({})", refused_);
  const int rank = comm_.rank(), world = comm_.size();
  const std::string snap = job_dir_ + "/" + snap_name(plan.iteration);
  if (plan.world != world) return snap;  // each server reads the shards from its own node's copy
  const std::string staging =
      fmt::format("{}/.restore-{}-r{:05d}.tmp-local", job_dir_, snap_name(plan.iteration), rank);
  std::vector<std::pair<int, int>> pairs;
  for (int s = 0; s < world; ++s) {
    if (plan.server[s] != s) pairs.emplace_back(plan.server[s], s);
  }
  std::string error;
  for (const auto& round : schedule_transfers(pairs)) {
    const auto [dest, source] = my_partners(round, rank);
    std::string payload;
    if (dest >= 0) {
      try {
        payload = pack_files(env_.read_file(snap + "/" + kIndexFile, whole_file()),
                             env_.read_file(snap + "/" + shard_file_name(dest, world), whole_file()));
      } catch (const std::exception& e) {
        error = fmt::format("reading local snapshot files for rank {}: {}", dest, e.what());
      }
    }
    const std::string got = comm_.send_recv_bytes(payload, dest, source);
    if (source < 0) continue;
    // Nothing: the sender could not read its node's copy (and says why); the next plan
    // takes this shard from another node's copy.
    staged_nothing_ = got.empty();
    try {
      DTRAIN_CHECK_T(CheckpointError, !got.empty(), "rank {} sent nothing", source);
      auto [index, shard] = unpack_files(got, source);
      fs::remove_quietly(staging, env_);
      fs::create_directories_durable(staging, env_, DirAccess::kPrivate);
      env_.write_new_file(staging + "/" + kIndexFile, index);
      env_.write_new_file(staging + "/" + shard_file_name(rank, world), shard);
    } catch (const std::exception& e) {
      error = fmt::format("receiving this rank's shard of local snapshot {} from rank {}: {}",
                          plan.iteration, source, e.what());
    }
  }
  dist::all_or_none<CheckpointError>(comm_, "staging a local snapshot", [&] {
    if (!error.empty()) throw CheckpointError(error);
  });
  return plan.server[rank] == rank ? snap : staging;
}

void LocalTier::drop_staging() noexcept {
  if (!refused_.empty()) return;
  try {
    for (const auto& n : env_.children(job_dir_)) {
      if (n.rfind(".restore-", 0) == 0 && n.find(fmt::format("-r{:05d}.", comm_.rank())) != std::string::npos) {
        fs::remove_quietly(job_dir_ + "/" + n, env_);
      }
    }
  } catch (const std::exception& e) {
    DTRAIN_LOG_WARN_RANK("Removing this rank's staged shards from the local tier {}: {}", job_dir_, e.what());
  }
}

void LocalTier::after_resume(int64_t resumed) {
  if (!refused_.empty()) return;
  drop_staging();
  if (!leader_) return;
  try {
    for (const auto& n : env_.children(job_dir_)) {
      if (snap_iteration(n) > resumed) save_dir::remove_dir_safely(env_, job_dir_ + "/" + n);
    }
  } catch (const std::exception& e) {
    DTRAIN_LOG_WARN_RANK("Tidying the local tier {} after the resume: {}", job_dir_, e.what());
  }
}

}  // namespace dtrain::checkpoint
