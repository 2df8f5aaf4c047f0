// Data parallelism over a Communicator: parameters and buffers broadcast from rank 0,
// gradients averaged with bucketed all-reduce (PyTorch DDP's buckets, default 25 MiB),
// overlapped with backward.
//
//   DataParallel dp(model, comm, {/*bucket_cap_mb=*/25, /*broadcast_buffers=*/true,
//                                 /*overlap=*/true});
//   dp.prepare_for_backward();  // arms the per-bucket hooks
//   loss.backward();            // buckets start reducing as their gradients are ready
//   dp.reduce_gradients();      // launches the rest, waits; every rank has the average
//   optimizer.step();
//   dp.sync_buffers();          // BatchNorm statistics equal on every rank again
//
// With overlap, a post-hook on each parameter's gradient accumulator divides the fresh
// gradient by the world size into its bucket; a bucket whose gradients are all in
// starts a non-blocking all-reduce (a sum), in bucket order (every rank issues the same
// collectives in the same order); outstanding reductions are progressed at every hook.
// Without overlap the same non-blocking all-reduce runs after backward, so both paths
// are bitwise equal.
//
// Gradients as bucket views (default, PyTorch DDP's gradient_as_bucket_view): after the
// first step each parameter's .grad() is a view of its slot in the bucket (a plain
// tensor sharing the bucket's storage, not an autograd view, so detach_() works), and
// backward accumulates into it in place. The bucket is then reduced where it is, with
// no copy in or out and no second copy of the gradients in memory. Zeroing gradients in
// place (LibTorch 1.x Optimizer::zero_grad, SimpleTrainer) keeps the views; resetting
// them to undefined (2.x zero_grad(set_to_none)) or replacing them works too: the
// gradient is copied into the bucket and .grad() becomes the view again. Between
// backward and reduce_gradients() a gradient whose bucket was launched holds partial
// sums: read gradients after reduce_gradients(). With gradient_as_bucket_view false the
// gradients are copied into the buckets and the averages back (bitwise equal results).
// After any number of steps every rank's parameters are bitwise identical.
//
// Threads: not thread-safe; call every method from the training thread. The gradient
// hooks issue all_reduce_async() from the thread autograd runs them on (the training
// thread for CPU parameters, autograd's device thread for CUDA ones, while the training
// thread waits in backward()): the Communicator's thread contract (communicator.h)
// allows exactly that. Every parameter must be on one device (one hook thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "runtime/dist/communicator.h"

namespace torch::autograd {
struct Node;
}

namespace dtrain::engine {

struct DataParallelOptions {
  double bucket_cap_mb = 25.0;
  bool broadcast_buffers = true;
  bool overlap = true;
  bool gradient_as_bucket_view = true;
};

class DataParallel {
 public:
  // Buckets the parameters that require grad in reverse registration order (the order
  // backward produces them), one dtype per bucket, each at most bucket_cap_mb (a
  // parameter larger than the cap gets a bucket of its own), then broadcasts all
  // parameters and buffers from rank 0. Throws dtrain::Error when the trainable
  // parameters are on more than one device.
  DataParallel(std::shared_ptr<torch::nn::Module> module, dist::Communicator& comm,
               DataParallelOptions options);
  DataParallel(std::shared_ptr<torch::nn::Module> module, dist::Communicator& comm,
               double bucket_cap_mb, bool broadcast_buffers)
      : DataParallel(std::move(module), comm, {bucket_cap_mb, broadcast_buffers, false}) {}
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // Broadcasts every parameter and buffer from rank 0.
  void sync_params_and_buffers();
  // Arms the overlap hooks for the next backward (no-op without overlap or with one
  // rank). Call after zeroing the gradients and before backward. A parameter whose
  // gradient arrives twice in one armed backward (two backward calls per step) is an
  // error: its first gradient may already be on its way.
  void prepare_for_backward();
  // Averages every gradient over all ranks (a missing gradient counts as zeros):
  // launches the buckets not started during backward and waits for all of them. Every
  // gradient then holds the average (as a view of its bucket by default).
  void reduce_gradients();
  // Broadcasts buffers from rank 0 when broadcast_buffers is on (no-op otherwise).
  void sync_buffers();

  struct Bucket {
    std::vector<size_t> params;  // indices into parameters()
    std::vector<int64_t> offsets;  // element offset of each parameter in `flat`
    at::Tensor flat;             // contiguous 1-D buffer of the bucket's dtype
    std::vector<at::Tensor> views;  // per parameter: its slot, shaped like it (aliases)
    at::Tensor world_size;       // 0-d, the bucket's dtype: what gradients are divided by
    int64_t bytes = 0;
    // Per-backward state.
    size_t pending = 0;          // gradients not yet copied in
    bool launched = false;
    std::shared_ptr<dist::Work> work;
  };
  const std::vector<Bucket>& buckets() const { return buckets_; }
  const std::vector<at::Tensor>& parameters() const { return params_; }
  // Seconds of the last reduce_gradients() call (the exposed, non-overlapped part of
  // the communication) and of all-reduce work overall (launch to completion, summed
  // over buckets, overlapping or not); bytes reduced per step.
  double last_reduce_seconds() const { return last_reduce_s_; }
  double last_allreduce_seconds() const { return last_allreduce_s_; }
  int64_t bytes_per_reduce() const { return total_bytes_; }
  // How many buckets started during the last backward (overlap statistics).
  int last_overlapped_buckets() const { return last_overlapped_; }
  dist::Communicator& comm() { return comm_; }

 private:
  void on_grad_ready(size_t param);
  // Puts param's gradient / world size (zeros when it has none) into bucket slot k: in
  // place when the gradient is the slot's view; otherwise copied, and with
  // gradient_as_bucket_view the gradient becomes the view.
  void fill_slot(Bucket& b, size_t k, at::Tensor& param);
  void launch_ready_buckets();
  void progress();

  std::shared_ptr<torch::nn::Module> module_;
  dist::Communicator& comm_;
  DataParallelOptions options_;
  std::vector<at::Tensor> params_;
  std::vector<std::pair<size_t, size_t>> slot_;  // param -> (bucket, index in bucket)
  std::vector<char> ready_;                      // per param, this backward
  std::vector<Bucket> buckets_;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;  // keep hooks alive
  // What the hooks call through: `this`, reset to null by the destructor, since the
  // hooks cannot be removed and the model (with its accumulators) may outlive us.
  std::shared_ptr<DataParallel*> self_;
  size_t next_launch_ = 0;  // buckets launch strictly in order
  bool armed_ = false;
  std::chrono::steady_clock::time_point first_launch_{};
  bool any_launched_ = false;
  int64_t total_bytes_ = 0;
  double last_reduce_s_ = 0.0;
  double last_allreduce_s_ = 0.0;
  int last_overlapped_ = 0;
};

}  // namespace dtrain::engine
