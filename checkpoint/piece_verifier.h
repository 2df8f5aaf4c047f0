// Checking the xxHash64 of pieces on a second thread while the caller reads the next
// ones, so that a load takes about as long as its reads (hashing 0.4 GB takes ~30 ms
// here, a third of a cold read of it).
#pragma once

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <thread>

#include <ATen/ATen.h>

#include "checkpoint/index.h"

namespace dtrain::checkpoint {

// One caller thread adds pieces as it reads them; a worker thread hashes them in order.
// `tensor` and `piece` must outlive the verifier; `data` is kept alive by it and must not
// change until check() returns.
class PieceVerifier {
 public:
  PieceVerifier();
  ~PieceVerifier();  // stops the worker; pieces not yet hashed are dropped
  PieceVerifier(const PieceVerifier&) = delete;
  PieceVerifier& operator=(const PieceVerifier&) = delete;

  void add(std::string path, const TensorRecord& tensor, const PieceRecord& piece, at::Tensor data);
  // Waits until every added piece is hashed; throws the first mismatch (the pieces after
  // it are not checked). The verifier can be used again afterwards.
  void check();

 private:
  struct Item {
    std::string path;
    const TensorRecord* tensor;
    const PieceRecord* piece;
    at::Tensor data;
  };
  void work();

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool busy_ = false;      // the worker is hashing an item it took off the queue
  bool stopping_ = false;  // the destructor runs
  std::exception_ptr error_;
  std::thread worker_;  // last: started once the members above exist
};

}  // namespace dtrain::checkpoint
