// The load plan (internal to the checkpointer): which rank reads which piece of a
// checkpoint, in which order, which rank verifies it, and which pieces travel over the
// communicator. A pure function of the index, the ranks' visibility of the files and
// what this load wants; no I/O, no communication (load.cpp carries it out).
//
//   Readers readers = find_readers(visibility, rank, dir);      // after the all-gather
//   LoadPlan plan = plan_load(index, readers, rank, wanted);
//   for (const PieceRead& r : plan.reads) if (r.reader == rank) read(r, r.verify);
//
// The rules:
// - When every rank can read the checkpoint (one node, or a shared file system: the
//   common case), every rank reads each replicated piece it needs itself and nothing is
//   broadcast: N ranks read the files N times, mostly from the page cache (cheaper than
//   one reader and a broadcast per piece; bench/README.md).
// - Otherwise each replicated piece has one reader, which broadcasts it: its own shard's
//   rank when the world size is unchanged and that rank can read, else the reading rank
//   with the fewest bytes so far. Per-rank pieces of ranks that cannot read are read by
//   the index root and broadcast; a rank that can read reads its own.
// - With Readers::shard_server, each shard's pieces are read by its server and
//   broadcast; a per-rank piece is kept by the rank of its shard's number (none when the
//   world is smaller), read by it directly when it is the server.
// - Verification (xxHash64) happens once per set of files and page cache: the ranks
//   that read the very same files (equal Visibility::files) cut the pieces, in index
//   order, into one contiguous byte range each, and each verifies its range, reading it
//   first. Other ranks verify everything they read, starting at shard rank*N/world so
//   that ranks on different machines first read different files.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "checkpoint/index.h"
#include "checkpoint/messages.h"

namespace dtrain::checkpoint {

// CHECKPOINT.LOAD_STRATEGY: when every rank can read a checkpoint, whether every rank
// reads every replicated piece it needs (all_read: N reads of the files, cheap when the
// ranks share a page cache) or each piece is read once, by its shard's rank, and
// broadcast (read_once: the storage serves the bytes once, the interconnect spreads
// them). auto: all_read when every rank reads the very same files (one node), else
// read_once. docs/OPERATIONS.md "Loading on many nodes".
enum class LoadStrategy { kAuto, kAllRead, kReadOnce };
// "auto", "all_read" or "read_once"; anything else is a ConfigError.
LoadStrategy parse_load_strategy(const std::string& value);

// Who can read a checkpoint, from every rank's Visibility.
struct Readers {
  std::vector<bool> can_read;  // by rank
  int index_root = 0;          // the first rank that can read: reads the index
  int count = 0;               // how many ranks can read
  // This rank's group of ranks reading the very same files (itself alone when unknown).
  int same_files_ranks = 1;
  int same_files_index = 0;  // this rank's position in that group
  // Each rank reads only its own shard's pieces (a local snapshot, whose directory
  // differs between ranks; or CHECKPOINT.LOAD_STRATEGY read_once): one reader per
  // piece, which broadcasts it.
  bool own_shards = false;
  // With own_shards, by shard of the checkpoint: the rank that reads it instead of the
  // shard's own (a local snapshot of another world size, resharded: each shard is read
  // on a node that holds it). Empty: each shard's own rank.
  std::vector<int> shard_server;

  int world() const { return static_cast<int>(can_read.size()); }
  bool everyone() const { return count == world(); }
};

// Throws CheckpointError "'<dir>' is not a checkpoint: ..." when no rank can read it.
// With every rank reading, `strategy` decides own_shards (read_once).
Readers find_readers(const std::vector<Visibility>& ranks, int rank, const std::string& dir,
                     LoadStrategy strategy = LoadStrategy::kAllRead);

// One piece to read: index.tensors[tensor].pieces[piece], read by `reader`.
struct PieceRead {
  size_t tensor = 0;
  size_t piece = 0;
  int reader = 0;
  bool verify = true;  // whether this rank verifies it when it reads it
  int turn = 0;        // split_verification's turn: follow_file_order never mixes turns
};

struct LoadPlan {
  bool every_rank_reads = false;
  // The replicated pieces wanted. Every rank reads them all when every_rank_reads, in
  // this rank's order; otherwise in index order on every rank (the order of the
  // broadcasts), each read by its reader.
  std::vector<PieceRead> reads;
  // The per-rank pieces this rank reads for itself (of its own shard).
  std::vector<PieceRead> own_per_rank;
  // Per-rank pieces of ranks that cannot read: read by the index root and broadcast,
  // in index order on every rank.
  std::vector<PieceRead> relayed_per_rank;
};

// Reorders `reads` so that each file is read front to back: every maximal run of
// consecutive reads of the same shard and turn is sorted by `offset(read)`, the piece's
// position in its shard (ShardReader::locate; -1, read through HDF5, sorts first). The
// order of the runs, which spreads ranks over files and verification turns, is kept.
void follow_file_order(const CheckpointIndex& index, std::vector<PieceRead>& reads,
                       const std::function<int64_t(const PieceRead&)>& offset);

// Whether `a` and `b` belong to one run of follow_file_order: the same shard and turn.
bool same_run(const CheckpointIndex& index, const PieceRead& a, const PieceRead& b);

// follow_file_order by the position write_shard gives each piece (shard_layout_order):
// the pieces packed at the front (packed_at_front) first, then the larger ones, each
// group in the order it had (the plan's, which is index order within a run). For a
// shard dtrain wrote that is file order, known without opening a dataset, so a
// PieceLocator can locate the pieces while they are read; for a shard written otherwise
// it is only a slower order.
void follow_layout_order(const CheckpointIndex& index, std::vector<PieceRead>& reads);

// `wanted(name)`: whether this load uses the tensor (its owner is loaded).
LoadPlan plan_load(const CheckpointIndex& index, const Readers& readers, int rank,
                   const std::function<bool(const std::string&)>& wanted);

}  // namespace dtrain::checkpoint
