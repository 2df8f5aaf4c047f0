// Bucketed, overlapped gradient averaging and parameter/buffer broadcast (see
// data_parallel.h).
#include "runtime/engine/data_parallel.h"

#include <chrono>
#include <unordered_set>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "runtime/base/error.h"
#include "runtime/base/logging.h"

namespace dtrain::engine {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// A contiguous tensor of `sizes` over flat[offset:]: it shares flat's storage but is not
// an autograd view, so that the in-place detach_() of zero_grad works on it.
at::Tensor slot_view(const at::Tensor& flat, int64_t offset, at::IntArrayRef sizes) {
  at::NoGradGuard no_grad;
  at::Tensor view = at::empty({0}, flat.options());
  view.set_(flat.storage(), flat.storage_offset() + offset, sizes,
            c10::contiguous_strides(sizes));
  return view;
}

bool is_view_of(const at::Tensor& grad, const at::Tensor& view) {
  return grad.defined() && grad.data_ptr() == view.data_ptr() && grad.sizes() == view.sizes() &&
         grad.strides() == view.strides() && grad.scalar_type() == view.scalar_type();
}

}  // namespace

DataParallel::DataParallel(std::shared_ptr<torch::nn::Module> module, dist::Communicator& comm,
                           DataParallelOptions options)
    : module_(std::move(module)), comm_(comm), options_(options) {
  // Each trainable tensor once, also when registered under two names (tied weights):
  // its one gradient is reduced once.
  std::unordered_set<const c10::TensorImpl*> seen;
  for (auto& p : module_->parameters()) {
    if (p.requires_grad() && seen.insert(p.unsafeGetTensorImpl()).second) params_.push_back(p);
  }
  // One device, hence one thread running the gradient hooks (communicator.h's contract).
  for (const auto& p : params_) {
    DTRAIN_CHECK(p.device() == params_.front().device(),
                 "DataParallel: the trainable parameters are on more than one device ({} and "
                 "{}); put the whole model on one device",
                 params_.front().device().str(), p.device().str());
  }
  const auto cap = static_cast<int64_t>(options_.bucket_cap_mb * 1024.0 * 1024.0);
  slot_.resize(params_.size());
  ready_.assign(params_.size(), 0);
  // Reverse order: the last layers' gradients are ready first in backward.
  Bucket current;
  at::ScalarType current_type = at::ScalarType::Undefined;
  auto flush = [&] {
    if (current.params.empty()) return;
    int64_t numel = 0;
    for (size_t k = 0; k < current.params.size(); ++k) {
      current.offsets.push_back(numel);
      slot_[current.params[k]] = {buckets_.size(), k};
      numel += params_[current.params[k]].numel();
    }
    current.flat = at::zeros({numel}, params_[current.params.front()].options());
    current.world_size = at::scalar_tensor(comm_.size(), current.flat.options());
    for (size_t k = 0; k < current.params.size(); ++k) {
      current.views.push_back(slot_view(current.flat, current.offsets[k],
                                        params_[current.params[k]].sizes()));
    }
    buckets_.push_back(std::move(current));
    current = Bucket{};
  };
  for (size_t k = params_.size(); k-- > 0;) {
    const at::Tensor& p = params_[k];
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    if (!current.params.empty() &&
        (p.scalar_type() != current_type || current.bytes + bytes > cap)) {
      flush();
    }
    current_type = p.scalar_type();
    current.params.push_back(k);
    current.bytes += bytes;
    total_bytes_ += bytes;
  }
  flush();

  if (options_.overlap && comm_.size() > 1) {
    self_ = std::make_shared<DataParallel*>(this);
    for (size_t i = 0; i < params_.size(); ++i) {
      auto acc = torch::autograd::impl::grad_accumulator(params_[i]);
      DTRAIN_CHECK(acc != nullptr, "DataParallel: parameter {} has no gradient accumulator", i);
      acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
          [self = self_, i](const torch::autograd::variable_list& outputs,
                            const torch::autograd::variable_list& /*inputs*/) {
            if (*self) (*self)->on_grad_ready(i);  // null once this DataParallel is gone
            return outputs;
          }));
      accumulators_.push_back(std::move(acc));  // the hook lives as long as the node
    }
  }
  DTRAIN_LOG_DEBUG("DataParallel: {} parameters in {} buckets, {} bytes per reduce, overlap {}",
                   params_.size(), buckets_.size(), total_bytes_, !accumulators_.empty());
  sync_params_and_buffers();
}

DataParallel::~DataParallel() {
  // The accumulator nodes (and their hooks) live as long as the parameters: detach the
  // hooks from this object, which a later backward through the model must not touch.
  armed_ = false;
  if (self_) *self_ = nullptr;
  for (auto& b : buckets_) {
    if (b.work) {
      try {
        b.work->wait();
      } catch (...) {
      }
    }
  }
}

void DataParallel::sync_params_and_buffers() {
  if (comm_.size() == 1) return;
  at::NoGradGuard no_grad;
  for (auto& p : module_->parameters()) comm_.broadcast(p, 0);
  for (auto& b : module_->buffers()) comm_.broadcast(b, 0);
}

void DataParallel::sync_buffers() {
  if (!options_.broadcast_buffers || comm_.size() == 1) return;
  at::NoGradGuard no_grad;
  for (auto& b : module_->buffers()) comm_.broadcast(b, 0);
}

void DataParallel::prepare_for_backward() {
  if (comm_.size() == 1) return;
  std::fill(ready_.begin(), ready_.end(), 0);
  for (auto& b : buckets_) {
    b.pending = b.params.size();
    b.launched = false;
    b.work.reset();
  }
  next_launch_ = 0;
  last_overlapped_ = 0;
  any_launched_ = false;
  armed_ = !accumulators_.empty();
}

void DataParallel::on_grad_ready(size_t param) {
  if (!armed_) return;
  DTRAIN_CHECK(!ready_[param],
               "DataParallel: parameter {} (shape {}) received a second gradient in one step; "
               "its first one is already being reduced. Call prepare_for_backward() and "
               "reduce_gradients() around each backward",
               param, c10::str(params_[param].sizes()));
  ready_[param] = 1;
  const auto [bi, k] = slot_[param];
  Bucket& b = buckets_[bi];
  at::NoGradGuard no_grad;
  fill_slot(b, k, params_[param]);
  --b.pending;
  launch_ready_buckets();
  progress();
}

void DataParallel::fill_slot(Bucket& b, size_t k, at::Tensor& param) {
  // Divided by the world size in the bucket (as PyTorch DDP's default hook does), so
  // the all-reduce is a plain sum with no division pass after it.
  at::Tensor& view = b.views[k];
  const at::Tensor& grad = param.grad();
  if (is_view_of(grad, view)) {
    view.div_(b.world_size);  // backward accumulated into the bucket
    return;
  }
  if (grad.defined()) {
    at::div_out(view, grad, b.world_size);
  } else {
    view.zero_();
  }
  if (options_.gradient_as_bucket_view) param.mutable_grad() = view;
}

void DataParallel::launch_ready_buckets() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    Bucket& b = buckets_[next_launch_++];
    if (!any_launched_) {
      any_launched_ = true;
      first_launch_ = Clock::now();
    }
    b.work = comm_.all_reduce_async(b.flat, dist::ReduceOp::kSum);  // pre-divided
    b.launched = true;
    if (armed_) ++last_overlapped_;
  }
}

void DataParallel::progress() {
  // Non-blocking collectives advance only inside MPI calls: test the oldest one.
  for (auto& b : buckets_) {
    if (b.launched && b.work) {
      b.work->is_completed();
      break;
    }
  }
}

void DataParallel::reduce_gradients() {
  const auto t0 = Clock::now();
  if (comm_.size() == 1) {
    last_reduce_s_ = last_allreduce_s_ = 0.0;
    return;
  }
  at::NoGradGuard no_grad;
  if (!armed_) prepare_for_backward();  // no overlap: nothing is in flight yet
  armed_ = false;
  // Gradients the hooks did not see (no overlap, or parameters unused in this step).
  for (auto& b : buckets_) {
    if (b.launched) continue;
    for (size_t k = 0; k < b.params.size(); ++k) {
      const size_t i = b.params[k];
      if (ready_[i]) continue;
      ready_[i] = 1;
      fill_slot(b, k, params_[i]);
      --b.pending;
    }
  }
  const int overlapped = last_overlapped_;
  launch_ready_buckets();
  last_overlapped_ = overlapped;
  for (auto& b : buckets_) {
    b.work->wait();
    b.work.reset();
    if (options_.gradient_as_bucket_view) continue;  // the gradients are the bucket
    for (size_t k = 0; k < b.params.size(); ++k) {
      at::Tensor& p = params_[b.params[k]];
      if (p.grad().defined()) {
        p.mutable_grad().copy_(b.views[k]);
      } else {
        p.mutable_grad() = b.views[k].clone();
      }
    }
  }
  const auto t1 = Clock::now();
  last_reduce_s_ = seconds_between(t0, t1);
  last_allreduce_s_ = seconds_between(first_launch_, t1);
}

}  // namespace dtrain::engine
