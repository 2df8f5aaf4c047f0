// The node-local checkpoint tier (see local_tier.h).
#include "checkpoint/local_tier.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <xxhash.h>

#include "checkpoint/messages.h"
#include "checkpoint/save_dir.h"
#include "runtime/base/error.h"
#include "runtime/base/fs.h"
#include "runtime/base/logging.h"
#include "runtime/dist/agree.h"

namespace dtrain::checkpoint {
namespace {

constexpr const char* kJobFile = "job.txt";

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string snap_name(int64_t iteration) { return fmt::format("snap-{:010d}", iteration); }

// The iteration of a committed snapshot directory's name, or -1.
int64_t snap_iteration(const std::string& name) {
  static const std::regex re("snap-([0-9]{10})");
  std::smatch m;
  return std::regex_match(name, m, re) ? std::stoll(m[1].str()) : -1;
}

// Whole-file reads of the tier's own shard files (no size limit beyond memory).
fs::ReadOptions whole_file() {
  fs::ReadOptions o;
  o.max_bytes = std::numeric_limits<size_t>::max() / 2;
  o.no_follow = true;
  return o;
}

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

// This rank's dest and source in one round of transfers (-1: none).
std::pair<int, int> my_partners(const std::vector<std::pair<int, int>>& round, int rank) {
  int dest = -1, source = -1;
  for (const auto& [from, to] : round) {
    if (from == rank) dest = to;
    if (to == rank) source = from;
  }
  return {dest, source};
}

}  // namespace

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

namespace {
// The absolute, normal form of a directory, without a trailing separator, so that
// "out", "./out/" and "/abs/out" name the same job.
std::string normal_dir(const std::string& dir) {
  std::string abs = std::filesystem::absolute(dir).lexically_normal().string();
  while (abs.size() > 1 && abs.back() == '/') abs.pop_back();
  return abs;
}
}  // namespace

std::string local_job_key(const std::string& output_dir, const std::string& config_yaml) {
  const std::string abs = normal_dir(output_dir);
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

struct LocalTier::Pending {
  int64_t iteration = -1;
  std::string tmp, final_dir;
  std::string error;  // this rank's error before its write started
  CollectedState state;
  std::chrono::steady_clock::time_point t0;
  CheckpointIndex planned;        // the node leader's
  std::future<void> index_begun;  // last: joined first
};

LocalTier::LocalTier(dist::Communicator& comm, LocalTierOptions options, Env& env)
    : comm_(comm), options_(std::move(options)), env_(env), writer_(std::make_unique<AsyncShardWriter>()) {
  DTRAIN_CHECK_T(ConfigError, options_.period > 0 && options_.keep >= 1 && options_.replicas >= 0 &&
                                  !options_.dir.empty(),
                 "the local tier needs CHECKPOINT.LOCAL.PERIOD > 0 (got {}), LOCAL.KEEP >= 1 (got {}), "
                 "LOCAL.REPLICAS >= 0 (got {}) and a LOCAL.DIR",
                 options_.period, options_.keep, options_.replicas);
  if (options_.node_id.empty()) options_.node_id = node_id_from_environment();
  job_dir_ = fmt::format("{}/{}/{}", options_.dir, options_.node_id,
                         local_job_key(options_.output_dir, options_.config_yaml));
}

LocalTier::~LocalTier() { abandon(); }

void LocalTier::require_open() {
  if (!opened_) open(false);
}

void LocalTier::open(bool resume) {
  node_of_ = comm_.all_gather_bytes(options_.node_id);
  const int rank = comm_.rank();
  leader_ = std::find(node_of_.begin(), node_of_.end(), options_.node_id) - node_of_.begin() == rank;
  const auto pairs = buddy_pairs(node_of_, options_.replicas);
  replication_rounds_ = schedule_transfers(pairs);
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
  // tier that cannot be prepared is a warning: its snapshots fail and say so.
  try {
    tidy_up(resume);
  } catch (const CheckpointError& e) {
    if (rank == 0) DTRAIN_LOG_WARN("{}", e.what());
  }
  opened_ = true;
}

void LocalTier::tidy_up(bool resume) {
  dist::all_or_none<CheckpointError>(comm_, fmt::format("preparing the local checkpoint tier {}", job_dir_), [&] {
    if (!leader_) return;
    const std::string node_dir = fs::parent_dir(job_dir_);
    const std::string abs = normal_dir(options_.output_dir);
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
        DTRAIN_LOG_INFO_RANK("Removing local snapshots of another config of {}: {}", abs, other);
        env_.remove_tree(other);
      }
    }
    if (env_.type_of(job_dir_) == FileType::kDirectory) {
      save_dir::remove_stale_temporaries(env_, job_dir_);
      for (const auto& n : env_.children(job_dir_)) {
        if (!resume && snap_iteration(n) >= 0) save_dir::remove_dir_safely(env_, job_dir_ + "/" + n);
      }
    }
    fs::create_directories_durable(job_dir_, env_);
    if (env_.type_of(job_dir_ + "/" + kJobFile) == FileType::kMissing) {
      fs::write_file_atomic(job_dir_ + "/" + kJobFile, abs, env_);
    }
  });
}

void LocalTier::start(const CollectedState& live, int64_t iteration) {
  require_open();
  if (pending_) commit();  // at most one in flight
  auto p = std::make_unique<Pending>();
  p->t0 = std::chrono::steady_clock::now();
  p->iteration = iteration;
  p->final_dir = job_dir_ + "/" + snap_name(iteration);
  p->tmp = job_dir_ + "/." + snap_name(iteration) + ".tmp-local";
  const int rank = comm_.rank(), world = comm_.size();
  try {
    fs::create_directories_durable(job_dir_, env_);
    env_.create_dir(p->tmp);  // by every rank of the node: whoever comes first
    const auto plan = plan_shards(live.replicated_meta(), world);
    p->state = snapshot(live, &buffers_, &plan, rank);
    buffers_ = p->state;
    if (leader_) {
      p->planned = plan_index(live, plan, world, iteration);
      stamp_index(p->planned);
      Pending* raw = p.get();
      p->index_begun = std::async(std::launch::async, [raw, yaml = options_.config_yaml] {
        begin_index_file(raw->tmp, raw->planned, yaml);
      });
    }
    writer_->start(p->tmp + "/" + shard_file_name(rank, world), rank, p->state, plan, nullptr, env_);
  } catch (const std::exception& e) {
    p->error = e.what();
  }
  last_stall_s_ = seconds_since(p->t0);
  pending_ = std::move(p);
}

bool LocalTier::poll() {
  if (!pending_) return false;
  const int64_t done = !pending_->error.empty() || writer_->done() ? 1 : 0;
  if (comm_.all_reduce_int(done, dist::ReduceOp::kMin) == 0) return false;
  commit();
  return true;
}

void LocalTier::finish() {
  if (pending_) commit();
}

void LocalTier::abandon() noexcept {
  if (!pending_) return;
  if (writer_->in_flight()) {
    try {
      writer_->wait();
    } catch (const std::exception&) {
    }
  }
  pending_.reset();  // joins the index thread; the temporary goes with the next open
}

void LocalTier::replicate(Pending& p, std::string& error) {
  const int rank = comm_.rank(), world = comm_.size();
  for (const auto& round : replication_rounds_) {
    const auto [dest, source] = my_partners(round, rank);
    std::string payload;
    if (dest >= 0 && error.empty()) {
      try {
        payload = env_.read_file(p.tmp + "/" + shard_file_name(rank, world), whole_file());
      } catch (const std::exception& e) {
        error = fmt::format("reading the shard to replicate: {}", e.what());
      }
    }
    const std::string got = comm_.send_recv_bytes(payload, dest, source);
    if (source < 0 || got.empty() || !error.empty()) continue;  // the sender reports its error
    try {
      const std::string path = p.tmp + "/" + shard_file_name(source, world);
      env_.write_new_file(path, got);
      env_.sync(path);  // before the node's rename commits it
    } catch (const std::exception& e) {
      error = fmt::format("storing the replica of rank {}'s shard: {}", source, e.what());
    }
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
  save_dir::commit_directory(env_, p.tmp, p.final_dir);
  prune();
}

void LocalTier::commit() {
  std::unique_ptr<Pending> p = std::move(pending_);
  const auto t0 = std::chrono::steady_clock::now();
  const int rank = comm_.rank();
  ShardReport report;
  report.error = p->error;
  if (report.error.empty()) {
    try {
      report.shards[rank] = writer_->wait();
    } catch (const std::exception& e) {
      report.error = e.what();
    }
  }
  report.write_seconds = writer_->last_write_seconds();
  replicate(*p, report.error);
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
  } catch (const CheckpointError& e) {
    ++failures_;
    if (leader_) {
      if (p->index_begun.valid()) p->index_begun.wait();
      fs::remove_quietly(p->tmp, env_);
    }
    if (rank == 0) {
      DTRAIN_LOG_WARN("Local snapshot of iteration {} failed; training goes on ({} failed so far; the "
                      "persistent tier is unaffected): {}",
                      p->iteration, failures_, e.what());
    }
  }
  last_commit_s_ = seconds_since(t0);
  if (rank == 0) {
    DTRAIN_LOG_DEBUG("Local snapshot of iteration {}: stall {:.4f} s, write {:.4f} s, commit {:.4f} s",
                     p->iteration, last_stall_s_, report.write_seconds, last_commit_s_);
  }
}

void LocalTier::prune() {
  std::vector<std::string> snaps;
  for (const auto& n : env_.children(job_dir_)) {
    if (snap_iteration(n) >= 0) snaps.push_back(n);
  }
  std::sort(snaps.begin(), snaps.end());  // zero-padded: name order is iteration order
  for (int64_t i = 0; i + options_.keep < static_cast<int64_t>(snaps.size()); ++i) {
    save_dir::remove_dir_safely(env_, job_dir_ + "/" + snaps[i]);
  }
}

LocalRestore LocalTier::plan_restore() {
  require_open();
  finish();
  const int world = comm_.size();
  std::string mine;
  try {
    mine = encode_holdings(list_holdings(env_, job_dir_));
  } catch (const std::exception& e) {
    DTRAIN_LOG_WARN_RANK("Cannot list the local tier {}: {}", job_dir_, e.what());
  }
  const auto all = comm_.all_gather_bytes(mine);
  // iteration -> shard -> ranks whose node holds it
  std::map<int64_t, std::map<int, std::vector<int>>> holders;
  std::set<int> other_worlds;
  for (int r = 0; r < world; ++r) {
    for (const auto& [it, ws] : decode_holdings(all[r], r)) {
      if (ws.first != world) {
        other_worlds.insert(ws.first);
        continue;
      }
      for (int s : ws.second) holders[it][s].push_back(r);
    }
  }
  LocalRestore plan;
  for (auto it = holders.rbegin(); it != holders.rend(); ++it) {
    if (static_cast<int>(it->second.size()) != world) continue;
    plan.iteration = it->first;
    plan.server.resize(world);
    std::vector<int> own;
    std::string others;
    for (int s = 0; s < world; ++s) {
      const auto& h = it->second.at(s);
      const bool self = std::find(h.begin(), h.end(), s) != h.end();
      plan.server[s] = self ? s : h[s % h.size()];
      if (self) {
        own.push_back(s);
      } else {
        others += fmt::format("; shard {} from the replica on node '{}' (rank {})", s,
                              node_of_[plan.server[s]], plan.server[s]);
      }
    }
    plan.description = own.empty() ? others.substr(2)
                                   : fmt::format("{} from their ranks' own node{}", ranks_text(own), others);
    break;
  }
  if (plan.iteration < 0 && !other_worlds.empty() && comm_.rank() == 0) {
    DTRAIN_LOG_WARN("The local tier holds snapshots of {} ranks, not {}: resuming from the persistent tier",
                    fmt::join(other_worlds, ", "), world);
  }
  return plan;
}

std::string LocalTier::stage(const LocalRestore& plan) {
  const int rank = comm_.rank(), world = comm_.size();
  const std::string snap = job_dir_ + "/" + snap_name(plan.iteration);
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
    try {
      DTRAIN_CHECK_T(CheckpointError, !got.empty(), "rank {} sent nothing", source);
      auto [index, shard] = unpack_files(got, source);
      fs::remove_quietly(staging, env_);
      fs::create_directories_durable(staging, env_);
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

void LocalTier::after_resume(int64_t resumed) {
  const int rank = comm_.rank();
  try {
    for (const auto& n : env_.children(job_dir_)) {
      if (n.rfind(".restore-", 0) == 0 && n.find(fmt::format("-r{:05d}.", rank)) != std::string::npos) {
        fs::remove_quietly(job_dir_ + "/" + n, env_);
      }
      if (leader_ && snap_iteration(n) > resumed) save_dir::remove_dir_safely(env_, job_dir_ + "/" + n);
    }
  } catch (const std::exception& e) {
    DTRAIN_LOG_WARN_RANK("Tidying the local tier {} after the resume: {}", job_dir_, e.what());
  }
}

void LocalTier::remove_all() {
  finish();
  comm_.barrier();  // every rank of the node is done with the directory
  if (leader_) fs::remove_quietly(job_dir_, env_);
}

}  // namespace dtrain::checkpoint
