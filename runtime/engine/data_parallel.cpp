// Bucketed gradient averaging and parameter/buffer broadcast (see data_parallel.h).
#include "runtime/engine/data_parallel.h"

#include <chrono>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "runtime/base/logging.h"

namespace dtrain::engine {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

DataParallel::DataParallel(std::shared_ptr<torch::nn::Module> module, dist::Communicator& comm,
                           double bucket_cap_mb, bool broadcast_buffers)
    : module_(std::move(module)), comm_(comm), broadcast_buffers_(broadcast_buffers) {
  for (auto& p : module_->parameters()) {
    if (p.requires_grad()) params_.push_back(p);
  }
  const auto cap = static_cast<int64_t>(bucket_cap_mb * 1024.0 * 1024.0);
  // Reverse order: the last layers' gradients are ready first in backward.
  Bucket current;
  at::ScalarType current_type = at::ScalarType::Undefined;
  auto flush = [&] {
    if (current.params.empty()) return;
    int64_t numel = 0;
    for (size_t i : current.params) numel += params_[i].numel();
    current.flat = at::zeros({numel}, params_[current.params.front()].options());
    buckets_.push_back(std::move(current));
    current = Bucket{};
  };
  for (size_t k = params_.size(); k-- > 0;) {
    const at::Tensor& p = params_[k];
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    if (!current.params.empty() && (p.scalar_type() != current_type || current.bytes + bytes > cap)) {
      flush();
    }
    current_type = p.scalar_type();
    current.params.push_back(k);
    current.bytes += bytes;
    total_bytes_ += bytes;
  }
  flush();
  DTRAIN_LOG_DEBUG("DataParallel: {} parameters in {} buckets, {} bytes per reduce",
                   params_.size(), buckets_.size(), total_bytes_);
  sync_params_and_buffers();
}

void DataParallel::sync_params_and_buffers() {
  if (comm_.size() == 1) return;
  at::NoGradGuard no_grad;
  for (auto& p : module_->parameters()) comm_.broadcast(p, 0);
  for (auto& b : module_->buffers()) comm_.broadcast(b, 0);
}

void DataParallel::sync_buffers() {
  if (!broadcast_buffers_ || comm_.size() == 1) return;
  at::NoGradGuard no_grad;
  for (auto& b : module_->buffers()) comm_.broadcast(b, 0);
}

void DataParallel::reduce_gradients() {
  const auto t0 = std::chrono::steady_clock::now();
  if (comm_.size() == 1) {
    last_reduce_s_ = last_allreduce_s_ = 0.0;
    return;
  }
  at::NoGradGuard no_grad;
  double allreduce_s = 0.0;
  for (auto& bucket : buckets_) {
    int64_t offset = 0;
    for (size_t i : bucket.params) {
      const at::Tensor& p = params_[i];
      at::Tensor slot = bucket.flat.narrow(0, offset, p.numel());
      const at::Tensor& g = p.grad();
      if (g.defined()) {
        slot.copy_(g.reshape({-1}));
      } else {
        slot.zero_();
      }
      offset += p.numel();
    }
    const auto t1 = std::chrono::steady_clock::now();
    comm_.all_reduce(bucket.flat, dist::ReduceOp::kAvg);
    allreduce_s += seconds_since(t1);
    offset = 0;
    for (size_t i : bucket.params) {
      at::Tensor p = params_[i];
      at::Tensor slot = bucket.flat.narrow(0, offset, p.numel()).view(p.sizes());
      if (p.grad().defined()) {
        p.mutable_grad().copy_(slot);
      } else {
        p.mutable_grad() = slot.clone();
      }
      offset += p.numel();
    }
  }
  last_allreduce_s_ = allreduce_s;
  last_reduce_s_ = seconds_since(t0);
}

}  // namespace dtrain::engine
