#include "checkpoint/piece_verifier.h"

#include "checkpoint/format.h"

namespace dtrain::checkpoint {

PieceVerifier::PieceVerifier() : worker_([this] { work(); }) {}

PieceVerifier::~PieceVerifier() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

void PieceVerifier::add(std::string path, const TensorRecord& tensor, const PieceRecord& piece,
                        at::Tensor data) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back({std::move(path), &tensor, &piece, std::move(data)});
  }
  cv_.notify_all();
}

void PieceVerifier::check() {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return (queue_.empty() && !busy_) || error_; });
  if (error_) {
    std::exception_ptr e = error_;
    error_ = nullptr;
    queue_.clear();  // the worker is idle: it sets error_ only once done with an item
    std::rethrow_exception(e);
  }
}

void PieceVerifier::work() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || (!queue_.empty() && !error_); });
    if (stopping_) return;
    Item item = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    std::exception_ptr failed;
    try {
      verify_piece(item.path, *item.tensor, *item.piece, item.data);
    } catch (...) {
      failed = std::current_exception();
    }
    item.data.reset();  // the last reference may go here, off the lock
    lock.lock();
    busy_ = false;
    if (failed && !error_) error_ = failed;
    cv_.notify_all();
  }
}

}  // namespace dtrain::checkpoint
