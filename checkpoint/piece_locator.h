// Locating a load's pieces on a second thread while the caller reads the ones already
// located. ShardReader::where opens each piece's dataset (HDF5: ~30-40 ms for the 447
// tensors of a 1 GB gpt state here, a tenth of reading it from memory); done first, the
// reads could not start until every dataset was open.
//
//   PieceLocator locator(reader, index, reads, dtype_of);
//   for (size_t i = 0; i < reads.size(); ++i) {
//     const ShardReader::Location at = locator.wait(i);
//     if (at.offset >= 0) reader.read_located(...); else later.push_back(i);
//   }
//   locator.finish();  // the reader is the caller's alone again
//   for (size_t i : later) reader.read_piece(...);  // through HDF5, or its error
//
// Thread-safety: until finish() returns (or the locator is destroyed), the caller may use
// `reader` only for read_located and path_of.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <ATen/ATen.h>

#include "checkpoint/format.h"
#include "checkpoint/load_plan.h"

namespace dtrain::checkpoint {

class PieceLocator {
 public:
  // The dtype each tensor is read as (its destination's).
  using DtypeOf = std::function<at::ScalarType(const TensorRecord&)>;

  // Starts locating `reads` in order. `reader`, `index` and `dtype_of` must outlive it.
  PieceLocator(ShardReader& reader, const CheckpointIndex& index, std::vector<PieceRead> reads,
               DtypeOf dtype_of);
  ~PieceLocator();  // stops after the piece being located, then joins
  PieceLocator(const PieceLocator&) = delete;
  PieceLocator& operator=(const PieceLocator&) = delete;

  // reads[i]'s location, waiting until it is found. Offset -1 when read_located cannot
  // read it: stored otherwise (read_piece reads it through HDF5), or it could not be
  // located (read_piece, called after finish(), throws why).
  ShardReader::Location wait(size_t i);
  // Waits until every piece is located.
  void finish();

 private:
  void work();

  ShardReader& reader_;
  const CheckpointIndex& index_;
  const std::vector<PieceRead> reads_;
  const DtypeOf dtype_of_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<ShardReader::Location> found_;  // the first done_ are set
  size_t done_ = 0;
  bool stopping_ = false;
  std::thread worker_;  // last: started once the members above exist
};

}  // namespace dtrain::checkpoint
