// Data parallelism over a Communicator: parameters and buffers broadcast from rank 0,
// gradients averaged with bucketed all-reduce (PyTorch DDP's buckets, default 25 MiB).
//
//   DataParallel dp(model, comm, /*bucket_cap_mb=*/25, /*broadcast_buffers=*/true);
//   loss.backward();
//   dp.reduce_gradients();   // every rank now holds the same averaged gradients
//   optimizer.step();
//   dp.sync_buffers();       // BatchNorm statistics equal on every rank again
//
// After any number of such steps every rank's parameters are bitwise identical (the
// all-reduce gives every rank the same sum, and every rank then does the same math).
// Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "runtime/dist/communicator.h"

namespace dtrain::engine {

class DataParallel {
 public:
  // Buckets the parameters that require grad in reverse registration order (the order
  // backward produces them), one dtype per bucket, each at most bucket_cap_mb (a
  // parameter larger than the cap gets a bucket of its own), then broadcasts all
  // parameters and buffers from rank 0.
  DataParallel(std::shared_ptr<torch::nn::Module> module, dist::Communicator& comm,
               double bucket_cap_mb, bool broadcast_buffers);

  // Broadcasts every parameter and buffer from rank 0.
  void sync_params_and_buffers();
  // Averages every gradient over all ranks (a missing gradient counts as zeros).
  void reduce_gradients();
  // Broadcasts buffers from rank 0 when broadcast_buffers is on (no-op otherwise).
  void sync_buffers();

  struct Bucket {
    std::vector<size_t> params;  // indices into parameters()
    at::Tensor flat;             // contiguous 1-D buffer of the bucket's dtype
    int64_t bytes = 0;
  };
  const std::vector<Bucket>& buckets() const { return buckets_; }
  const std::vector<at::Tensor>& parameters() const { return params_; }
  // Seconds spent in the last reduce_gradients() (copies + all-reduce) and in the
  // all-reduce alone; bytes reduced per call.
  double last_reduce_seconds() const { return last_reduce_s_; }
  double last_allreduce_seconds() const { return last_allreduce_s_; }
  int64_t bytes_per_reduce() const { return total_bytes_; }
  dist::Communicator& comm() { return comm_; }

 private:
  std::shared_ptr<torch::nn::Module> module_;
  dist::Communicator& comm_;
  bool broadcast_buffers_;
  std::vector<at::Tensor> params_;
  std::vector<Bucket> buckets_;
  int64_t total_bytes_ = 0;
  double last_reduce_s_ = 0.0;
  double last_allreduce_s_ = 0.0;
};

}  // namespace dtrain::engine
