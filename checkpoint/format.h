// Reading and writing the files of format v1 (docs/FORMAT.md): one rank's shard file
// and rank 0's checkpoint.h5 (attributes, config, scalars, index, virtual datasets).
//
// These functions do no communication; the commit protocol (checkpointer.cpp) calls
// them. Thread-safe in the sense of HDF5's library lock (runtime/h5/handle.h); the tensors
// passed in must not change while they run.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include "checkpoint/index.h"
#include "checkpoint/shard_plan.h"
#include "runtime/base/env.h"

namespace dtrain::h5 {
class File;          // runtime/h5/file.h
struct FileOptions;  // runtime/h5/file.h
}  // namespace dtrain::h5

namespace dtrain::checkpoint {

// The state of one save, split the way the format stores it.
struct CollectedState {
  // Identical on every rank (model, optimizer, extras): written sharded.
  std::vector<std::pair<std::string, at::Tensor>> replicated;
  // One value per rank (RNG states): each rank writes its own whole.
  std::vector<std::pair<std::string, at::Tensor>> per_rank;
  // int64 / double / string values (identical on every rank): rank 0 writes them.
  std::map<std::string, StateValue> scalars;

  std::vector<TensorMeta> replicated_meta() const;
};

// What one rank wrote: its pieces of the replicated tensors and its per-rank tensors.
struct ShardManifest {
  struct Entry {
    std::string tensor;
    PieceRecord piece;
  };
  std::vector<Entry> replicated;  // one per piece with piece.shard == rank
  std::vector<std::pair<TensorMeta, PieceRecord>> per_rank;
  // As a JSON value, which ShardReport embeds (not as text: that was escaped and
  // parsed twice). from_json_value throws CheckpointError naming `origin` on a
  // malformed one.
  nlohmann::json to_json_value() const;
  static ShardManifest from_json_value(const nlohmann::json& j, const std::string& origin);
};

// One dataset of a rank's shard file, in the order write_shard writes them: the rank's
// pieces of the replicated tensors (by plan order), then its per-rank tensors.
struct ShardItem {
  std::string name;
  at::Tensor data;             // the piece's rows (a view unless copied, see shard_items)
  std::optional<Piece> piece;  // nullopt: a per-rank tensor
};
// `rank`'s items of `state` as `plan` places them. With `contiguous_cpu`, each item's
// data is a contiguous CPU tensor (copied where needed), else a view of `state`.
std::vector<ShardItem> shard_items(const CollectedState& state, const std::vector<Piece>& plan, int rank,
                                   bool contiguous_cpu);
// The manifest of a shard holding `items`, with hashes[i] the xxHash64 of items[i].
ShardManifest shard_manifest(const std::vector<ShardItem>& items, const std::vector<uint64_t>& hashes,
                             int rank);
// How shard files are created: 1 MiB alignment of datasets of 64 KiB and more.
h5::FileOptions shard_file_options();
// The order in which a shard's datasets are created and placed in the file (indices
// into `items`): the small ones (under the alignment threshold) first, then the large
// ones in item order. write_shard creates them all before writing any, so the file holds
// every object header, then the small datasets' data, then the large ones'; a reader
// that follows this order (follow_layout_order, load_plan.h) reads it front to back.
std::vector<size_t> shard_layout_order(const std::vector<ShardItem>& items);
// Whether a dataset of `bytes` is a small one of shard_layout_order: under the alignment
// threshold, packed at the front of the file.
bool packed_at_front(int64_t bytes);

// Called after each dataset written to a shard (progress, fault injection).
using ShardWriteObserver = std::function<void(int64_t datasets_written, int64_t datasets_total)>;

// Writes `rank`'s shard file at `path`: its pieces of state.replicated (as planned by
// `plan`, whose tensor indices refer to state.replicated) and its per-rank tensors, then
// syncs the file through `env`. Returns the manifest with an xxHash64 of every piece.
ShardManifest write_shard(const std::string& path, int rank, const CollectedState& state,
                          const std::vector<Piece>& plan,
                          ShardWriteObserver observer = nullptr, Env& env = Env::posix());

// Builds the index from every rank's manifest (indexed by rank) and the scalars.
CheckpointIndex build_index(const CollectedState& state, const std::vector<ShardManifest>& manifests,
                            int world_size, int64_t iteration);

// Sets index.created (now, ISO 8601 UTC) and index.versions (dtrain, torch, hdf5, mpi)
// to describe the process writing the checkpoint. Needs no MPI_Init.
void stamp_index(CheckpointIndex& index);

// What the index will hold before any shard is written: the replicated tensors' pieces
// as `plan` places them (checksums 0), the scalars, no per-rank tensors.
CheckpointIndex plan_index(const CollectedState& state, const std::vector<Piece>& plan,
                           int world_size, int64_t iteration);

// `dir`/checkpoint.h5 (rank 0) is written in two steps, so that most of it is written
// while the shards are. begin_index_file creates it with what the plan fixes: root
// attributes, /dtrain/config_yaml, each scalar as a scalar dataset and a virtual dataset
// per replicated tensor stitched from the shard files (relative names). Fails if the
// file exists. With `mappings_image` (index_mappings_image of a plan with no
// mapping_difference to `planned`) the file starts as a copy of it, so the virtual datasets are not
// made again (~10-20 ms of HDF5 for a few hundred tensors).
void begin_index_file(const std::string& dir, const CheckpointIndex& planned, const std::string& config_yaml,
                      const std::string* mappings_image = nullptr);
// What makes the virtual datasets of `a`'s and `b`'s checkpoint.h5 differ: the world
// size, or a replicated tensor whose name, dtype, shape or pieces (shards and rows) do
// ("tensor 'model/w'"), or their number; "" when they map the same.
std::string mapping_difference(const CheckpointIndex& a, const CheckpointIndex& b);
// The bytes of an HDF5 file holding only the virtual datasets begin_index_file makes for
// `planned`, made at `scratch_path` (what is there is removed, the file created
// exclusively, then removed).
std::string index_mappings_image(const std::string& scratch_path, const CheckpointIndex& planned);
// finish_index_file checks that `index` (built from every rank's manifest) has the
// layout `planned` had, adds a virtual dataset per per-rank tensor and rank
// (/ranks/RRRRR/<name>) and /dtrain/index (a fixed-length string), then syncs the file
// through `env`.
void finish_index_file(const std::string& dir, const CheckpointIndex& planned,
                       const CheckpointIndex& index, Env& env = Env::posix());
// Both steps at once.
void write_index_file(const std::string& dir, const CheckpointIndex& index,
                      const std::string& config_yaml, Env& env = Env::posix());

// Reads /dtrain/index of `dir`/checkpoint.h5 (JSON text). Throws CheckpointError naming
// the file when it is missing or not a dtrain checkpoint.
std::string read_index_text(const std::string& dir);

// A new tensor of `shape` with the dtype of `record` (read from checkpoint `dir`). When
// it cannot be allocated, throws dtrain::CheckpointError naming the tensor, its size and
// `dir` in one line (not c10's stack trace).
at::Tensor empty_tensor_for(const TensorRecord& record, const std::vector<int64_t>& shape,
                            const std::string& dir);

// Throws dtrain::CheckpointError unless `path` (a file of checkpoint `dir`) is a regular
// file: not a symbolic link (which could name any file elsewhere), FIFO or device. With
// `allow_symlink`, a symbolic link to a regular file passes (the caller warns).
// Returns whether `path` is such a link.
bool check_own_file(const std::string& path, const std::string& dir, bool allow_symlink = false);

// Reads pieces from the shard files of checkpoint directory `dir`, keeping each shard
// file open once opened. A piece stored as a plain contiguous dataset of its dtype (what
// dtrain writes) is read with pread(2) from the offset HDF5 gives, checked against the
// file's size; any other is read through HDF5. Not thread-safe, but for one exception:
// read_located and path_of may run on one thread while where() runs on another.
class ShardReader {
 public:
  // allow_symlinked_shards (CHECKPOINT.ALLOW_SYMLINKED_SHARDS): a shard that is a
  // symbolic link to a regular file is read, with a warning naming it and its target.
  ShardReader(std::string dir, int world_size, bool allow_symlinked_shards = false);
  ~ShardReader();
  // Reads `piece` of `tensor` into `dst` (contiguous, the piece's shape and dtype) and
  // verifies its shape and (when `verify`) its xxHash64. Throws CheckpointError naming
  // the shard file, the tensor and what differs (missing shard, truncated data, checksum
  // mismatch). verify=false is for a caller that verifies the bytes itself
  // (verify_piece, PieceVerifier) or has the same bytes verified elsewhere.
  void read_piece(const TensorRecord& tensor, const PieceRecord& piece, at::Tensor& dst,
                  bool verify = true);
  // Where `piece`'s bytes start in its shard file when read_piece reads them with
  // pread(2) into a tensor of `dtype`, else -1. Opens the shard and checks the stored
  // shape like read_piece (same errors); only metadata is read. A loader that sorts its
  // pieces by (shard, this offset) reads each file front to back.
  int64_t locate(const TensorRecord& tensor, const PieceRecord& piece, at::ScalarType dtype);
  // What locate() found, with the shard's descriptor (valid while this reader lives).
  struct Location {
    int fd = -1;
    int64_t offset = -1;  // -1: no pread(2) location (read_piece reads through HDF5)
  };
  Location where(const TensorRecord& tensor, const PieceRecord& piece, at::ScalarType dtype);
  // Reads `piece` into `dst` (contiguous CPU, the piece's shape and dtype) from a
  // location where() found (offset >= 0), with read_piece's errors; no checksum. It uses
  // nothing where() changes, so one thread may read located pieces while another locates
  // the next ones (PieceLocator).
  void read_located(const TensorRecord& tensor, const PieceRecord& piece, const Location& at,
                    at::Tensor& dst) const;
  // The shard file holding `piece`, as errors name it.
  std::string path_of(const PieceRecord& piece) const;

 private:
  struct Shard {
    std::unique_ptr<h5::File> file;
    int64_t size = 0;  // bytes, when opened: the file's size or HDF5's end, the smaller
  };
  struct Located {  // what locate() found for a piece of this dtype and shape
    at::ScalarType dtype;
    std::vector<int64_t> shape;
    int64_t offset;  // -1: read through HDF5
  };
  Shard& shard(const TensorRecord& tensor, const PieceRecord& piece);

  std::string dir_;
  int world_size_;
  bool allow_symlinked_shards_;
  std::map<int, Shard> files_;
  std::map<std::pair<int, std::string>, Located> located_;  // by (shard, tensor name)
};

// xxHash64 (seed 0) of a contiguous CPU tensor's bytes.
uint64_t tensor_xxh64(const at::Tensor& t);

// Throws CheckpointError naming `path` (the shard file), the tensor and the piece's rows
// unless the bytes of `data` (contiguous, CPU) hash to the piece's xxh64.
void verify_piece(const std::string& path, const TensorRecord& tensor, const PieceRecord& piece,
                  const at::Tensor& data);

// at::ScalarType for a dtype name written by dtype_name() ("float32", "bfloat16", ...).
at::ScalarType dtype_from_name(const std::string& name, const std::string& context);

}  // namespace dtrain::checkpoint
