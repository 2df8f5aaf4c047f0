// Locating pieces on a second thread (see piece_locator.h).
#include "checkpoint/piece_locator.h"

#include "runtime/base/error.h"

namespace dtrain::checkpoint {

PieceLocator::PieceLocator(ShardReader& reader, const CheckpointIndex& index, std::vector<PieceRead> reads,
                           DtypeOf dtype_of)
    : reader_(reader),
      index_(index),
      reads_(std::move(reads)),
      dtype_of_(std::move(dtype_of)),
      found_(reads_.size()),
      worker_([this] { work(); }) {}

PieceLocator::~PieceLocator() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  worker_.join();
}

ShardReader::Location PieceLocator::wait(size_t i) {
  DTRAIN_CHECK(i < reads_.size(), "internal: PieceLocator::wait({}) of {} pieces", i, reads_.size());
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return done_ > i; });
  return found_[i];
}

void PieceLocator::finish() {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return done_ == reads_.size(); });
}

void PieceLocator::work() {
  for (size_t i = 0; i < reads_.size(); ++i) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_) return;
    }
    const TensorRecord& t = index_.tensors[reads_[i].tensor];
    ShardReader::Location at;
    try {
      at = reader_.where(t, t.pieces[reads_[i].piece], dtype_of_(t));
    } catch (...) {
      at = {};  // read_piece reports it, in its turn
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      found_[i] = at;
      done_ = i + 1;
    }
    cv_.notify_all();
  }
}

}  // namespace dtrain::checkpoint
