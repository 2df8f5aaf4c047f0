// The load plan: who reads and verifies which piece (see load_plan.h).
#include "checkpoint/load_plan.h"

#include <algorithm>

#include <fmt/format.h>

#include "checkpoint/format.h"
#include "runtime/base/error.h"

namespace dtrain::checkpoint {
namespace {

// One reader per replicated piece (not every rank can read): the piece's own shard's
// rank when the world size is unchanged and it can read, else the least-loaded reading
// rank so far (by bytes).
void assign_single_readers(const CheckpointIndex& index, const Readers& readers,
                           std::vector<PieceRead>& reads) {
  std::vector<int64_t> load(readers.can_read.size(), 0);
  auto least_loaded = [&] {
    int best = -1;
    for (int r = 0; r < readers.world(); ++r) {
      if (readers.can_read[r] && (best < 0 || load[r] < load[best])) best = r;
    }
    return best;
  };
  for (auto& r : reads) {
    const PieceRecord& p = index.tensors[r.tensor].pieces[r.piece];
    if (!readers.shard_server.empty()) {
      r.reader = readers.shard_server.at(static_cast<size_t>(p.shard));
      continue;
    }
    r.reader = p.shard;
    if (index.world_size != readers.world() || !readers.can_read[r.reader]) r.reader = least_loaded();
    load[r.reader] += p.bytes;
  }
}

// Every rank reads every piece; the ranks reading the same files split the
// verification into contiguous byte ranges, and each reads its own range first.
void split_verification(const CheckpointIndex& index, const Readers& readers,
                        std::vector<PieceRead>& reads) {
  const int n = readers.same_files_ranks;
  auto bytes = [&](const PieceRead& r) { return index.tensors[r.tensor].pieces[r.piece].bytes; };
  int64_t total = 0, offset = 0;
  for (const auto& r : reads) total += bytes(r);
  std::vector<int> verifier(reads.size(), 0);
  for (size_t i = 0; i < reads.size(); ++i) {
    verifier[i] = total > 0 ? static_cast<int>(offset * n / total) : 0;
    offset += bytes(reads[i]);
    reads[i].verify = verifier[i] == readers.same_files_index;
    reads[i].turn = (verifier[i] - readers.same_files_index + n) % n;
  }
  std::vector<size_t> order(reads.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return reads[a].turn < reads[b].turn; });
  std::vector<PieceRead> sorted;
  sorted.reserve(reads.size());
  for (size_t i : order) sorted.push_back(reads[i]);
  reads = std::move(sorted);
}

// Every rank reads and verifies every piece, starting at shard rank*N/world and going
// round, so that ranks on different machines first read different files.
void stagger_by_shard(const CheckpointIndex& index, int rank, int world, std::vector<PieceRead>& reads) {
  const int shards = index.world_size;
  if (shards <= 1) return;
  const int first = static_cast<int>(int64_t{rank} * shards / world);
  auto turn = [&](const PieceRead& r) {
    const int shard = index.tensors[r.tensor].pieces[r.piece].shard;
    return ((shard - first) % shards + shards) % shards;
  };
  std::stable_sort(reads.begin(), reads.end(),
                   [&](const PieceRead& a, const PieceRead& b) { return turn(a) < turn(b); });
}

}  // namespace

LoadStrategy parse_load_strategy(const std::string& value) {
  if (value == "auto") return LoadStrategy::kAuto;
  if (value == "all_read") return LoadStrategy::kAllRead;
  if (value == "read_once") return LoadStrategy::kReadOnce;
  throw ConfigError(fmt::format("CHECKPOINT.LOAD_STRATEGY must be auto, all_read or read_once, got '{}'", value));
}

Readers find_readers(const std::vector<Visibility>& ranks, int rank, const std::string& dir,
                     LoadStrategy strategy) {
  Readers out;
  const int world = static_cast<int>(ranks.size());
  out.can_read.resize(ranks.size());
  out.index_root = -1;
  for (int r = 0; r < world; ++r) {
    out.can_read[r] = ranks[r].readable;
    if (!ranks[r].readable) continue;
    ++out.count;
    if (out.index_root < 0) out.index_root = r;
  }
  DTRAIN_CHECK_T(CheckpointError, out.count > 0,
                 "'{}' is not a checkpoint: '{}' is missing (no rank can read '{}/{}')", dir,
                 kIndexFile, dir, kIndexFile);
  if (out.everyone() && strategy != LoadStrategy::kAllRead) {
    bool one_set_of_files = !ranks.front().files.empty();
    for (const auto& v : ranks) one_set_of_files = one_set_of_files && v.files == ranks.front().files;
    out.own_shards = strategy == LoadStrategy::kReadOnce || !one_set_of_files;
  }
  const Visibility& mine = ranks.at(rank);
  if (mine.readable && !mine.files.empty()) {
    out.same_files_ranks = 0;
    for (int r = 0; r < world; ++r) {
      if (!ranks[r].readable || ranks[r].files != mine.files) continue;
      if (r < rank) ++out.same_files_index;
      ++out.same_files_ranks;
    }
  }
  return out;
}

bool same_run(const CheckpointIndex& index, const PieceRead& a, const PieceRead& b) {
  return index.tensors[a.tensor].pieces[a.piece].shard == index.tensors[b.tensor].pieces[b.piece].shard &&
         a.turn == b.turn;
}

void follow_file_order(const CheckpointIndex& index, std::vector<PieceRead>& reads,
                       const std::function<int64_t(const PieceRead&)>& offset) {
  std::vector<int64_t> where(reads.size());
  for (size_t i = 0; i < reads.size(); ++i) where[i] = offset(reads[i]);
  std::vector<size_t> order(reads.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  for (size_t begin = 0; begin < reads.size();) {
    size_t end = begin + 1;
    while (end < reads.size() && same_run(index, reads[end], reads[begin])) ++end;
    std::stable_sort(order.begin() + begin, order.begin() + end,
                     [&](size_t a, size_t b) { return where[a] < where[b]; });
    begin = end;
  }
  std::vector<PieceRead> sorted;
  sorted.reserve(reads.size());
  for (size_t i : order) sorted.push_back(reads[i]);
  reads = std::move(sorted);
}

void follow_layout_order(const CheckpointIndex& index, std::vector<PieceRead>& reads) {
  follow_file_order(index, reads, [&](const PieceRead& r) -> int64_t {
    return packed_at_front(index.tensors[r.tensor].pieces[r.piece].bytes) ? 0 : 1;
  });
}

LoadPlan plan_load(const CheckpointIndex& index, const Readers& readers, int rank,
                   const std::function<bool(const std::string&)>& wanted) {
  LoadPlan plan;
  plan.every_rank_reads = readers.everyone() && !readers.own_shards;
  for (size_t ti = 0; ti < index.tensors.size(); ++ti) {
    const TensorRecord& t = index.tensors[ti];
    if (!wanted(t.name)) continue;
    for (size_t pi = 0; pi < t.pieces.size(); ++pi) {
      const int shard = t.pieces[pi].shard;
      if (!t.per_rank) {
        plan.reads.push_back({ti, pi, rank, true});
      } else if (!readers.shard_server.empty()) {
        const int server = readers.shard_server.at(static_cast<size_t>(shard));
        if (shard >= readers.world()) continue;  // no such rank now
        if (server != shard) {
          plan.relayed_per_rank.push_back({ti, pi, server, true});
        } else if (shard == rank) {
          plan.own_per_rank.push_back({ti, pi, rank, true});
        }
      } else if (shard == rank && readers.can_read[rank]) {
        plan.own_per_rank.push_back({ti, pi, rank, true});
      } else if (shard < readers.world() && !readers.can_read[shard]) {
        plan.relayed_per_rank.push_back({ti, pi, readers.index_root, true});
      }
    }
  }
  if (!plan.every_rank_reads) {
    assign_single_readers(index, readers, plan.reads);
  } else if (readers.same_files_ranks > 1) {
    split_verification(index, readers, plan.reads);
  } else {
    stagger_by_shard(index, rank, readers.world(), plan.reads);
  }
  return plan;
}

}  // namespace dtrain::checkpoint
