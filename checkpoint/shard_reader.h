// Reading pieces of a checkpoint's shard files: through HDF5, or at the byte offset the
// writer recorded (PieceRecord::offset), checked against HDF5 afterwards.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <ATen/ATen.h>

#include "checkpoint/index.h"

namespace dtrain::h5 {
class File;
}

namespace dtrain::checkpoint {

// Reads pieces from the shard files of checkpoint directory `dir`, keeping each shard
// file open once opened. One thread reads; check_raw_layout may run on another.
class ShardReader {
 public:
  // allow_symlinked_shards (CHECKPOINT.ALLOW_SYMLINKED_SHARDS): a shard that is a
  // symbolic link to a regular file is read, with a warning naming it and its target.
  ShardReader(std::string dir, int world_size, bool allow_symlinked_shards = false);
  ~ShardReader();
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  // Reads `piece` of `tensor` into `dst` (contiguous, the piece's shape and dtype)
  // through HDF5 and verifies its shape and (when `verify`) its xxHash64. Throws
  // CheckpointError naming the shard file, the tensor and what differs (missing shard,
  // truncated data, checksum mismatch). verify=false is for a caller that verifies the
  // bytes itself (verify_piece, PieceVerifier) or has the same bytes verified elsewhere.
  void read_piece(const TensorRecord& tensor, const PieceRecord& piece, at::Tensor& dst,
                  bool verify = true);

  // Reads the piece with one pread(2) at its recorded offset, without HDF5 opening its
  // dataset (on a cold load those small metadata reads cost ~20% of the time). Returns
  // false, reading nothing, when it cannot: no offset recorded, the range not inside the
  // file, a byte count other than dst's, a big-endian host. The bytes only stand for
  // the tensor once check_raw_layout(tensor, piece, dst.scalar_type()) and the piece's
  // checksum both pass: the index is untrusted, and another HDF5 tool may have moved
  // the data (h5repack) or made the dataset a link to other bytes.
  bool read_piece_raw(const TensorRecord& tensor, const PieceRecord& piece, at::Tensor& dst);
  // Throws CheckpointError naming the shard and tensor unless HDF5 finds the tensor's
  // dataset in this shard file itself (open_own_dataset: no link, virtual or external
  // storage), contiguous, starting at piece.offset, of the piece's shape and of exactly
  // the little-endian type of `dtype`. Thread-safe against the reading thread (for a
  // verifier thread); the shard must have been opened by read_piece_raw.
  void check_raw_layout(const TensorRecord& tensor, const PieceRecord& piece, at::ScalarType dtype) const;

  // The shard file holding `piece`, as errors name it.
  std::string path_of(const PieceRecord& piece) const;

 private:
  struct Shard;
  Shard& open_shard(const TensorRecord& tensor, const PieceRecord& piece);
  const Shard& opened_shard(const PieceRecord& piece) const;

  std::string dir_;
  int world_size_;
  bool allow_symlinked_shards_;
  mutable std::mutex files_mutex_;  // files_ itself; a Shard does not move once made
  std::map<int, std::unique_ptr<Shard>> files_;
};

}  // namespace dtrain::checkpoint
