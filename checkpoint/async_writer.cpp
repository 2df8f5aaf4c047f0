// Snapshots and the background shard writer (see async_writer.h).
#include "checkpoint/async_writer.h"

#include <chrono>
#include <condition_variable>
#include <mutex>

#include <ATen/ATen.h>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include "runtime/base/error.h"
#include "runtime/base/thread_policy.h"

namespace dtrain::checkpoint {

namespace {

using Rows = std::vector<std::pair<int64_t, int64_t>>;  // (row_start, row_count)

// A host copy of `t` (only `rows` of it when given), into `buffer` when it fits (same
// dtype and shape, on the host).
at::Tensor host_copy(const at::Tensor& t, const at::Tensor* buffer, const Rows* rows) {
  at::Tensor out;
  if (buffer != nullptr && buffer->defined() && buffer->device().is_cpu() &&
      buffer->scalar_type() == t.scalar_type() && buffer->sizes() == t.sizes() &&
      buffer->is_contiguous() && (!t.is_cuda() || buffer->is_pinned())) {
    out = *buffer;
  } else {
    auto options = t.options().device(at::kCPU);
    if (t.is_cuda()) options = options.pinned_memory(true);
    out = at::empty(t.sizes(), options);
  }
  const at::Tensor src = t.detach();
  if (rows == nullptr || t.dim() == 0) {
    out.copy_(src, /*non_blocking=*/false);
  } else {
    for (const auto& [start, count] : *rows) {
      if (count > 0) out.narrow(0, start, count).copy_(src.narrow(0, start, count));
    }
  }
  return out;
}

using Named = std::vector<std::pair<std::string, at::Tensor>>;

void copy_all(const Named& from, const Named* reuse, const std::vector<Rows>* rows, Named& to) {
  to.reserve(from.size());
  for (size_t i = 0; i < from.size(); ++i) {
    const at::Tensor* buffer = nullptr;
    if (reuse != nullptr && i < reuse->size() && (*reuse)[i].first == from[i].first) {
      buffer = &(*reuse)[i].second;
    }
    to.emplace_back(from[i].first, host_copy(from[i].second, buffer, rows ? &(*rows)[i] : nullptr));
  }
}

}  // namespace

CollectedState snapshot(const CollectedState& state, const CollectedState* reuse,
                        const std::vector<Piece>* plan, int rank) {
  std::vector<Rows> rows;
  if (plan != nullptr) {
    rows.resize(state.replicated.size());
    for (const auto& p : *plan) {
      if (p.shard == rank) rows.at(p.tensor).emplace_back(p.row_start, p.row_count);
    }
  }
  CollectedState out;
  out.scalars = state.scalars;
  copy_all(state.replicated, reuse ? &reuse->replicated : nullptr, plan ? &rows : nullptr,
           out.replicated);
  copy_all(state.per_rank, reuse ? &reuse->per_rank : nullptr, nullptr, out.per_rank);
  return out;
}

struct AsyncShardWriter::Impl {
  boost::asio::thread_pool pool{1};
  std::mutex mu;
  std::condition_variable cv;
};

AsyncShardWriter::AsyncShardWriter() : impl_(std::make_unique<Impl>()) {
  boost::asio::post(impl_->pool, [] { run_as_background_thread(); });
}

AsyncShardWriter::~AsyncShardWriter() {
  impl_->pool.join();
}

void AsyncShardWriter::start(std::string path, int rank, CollectedState state,
                             std::vector<Piece> plan, ShardWriteObserver observer, Env& env) {
  start_job([path = std::move(path), rank, state = std::move(state), plan = std::move(plan),
             observer = std::move(observer), &env] { return write_shard(path, rank, state, plan, observer, env); });
}

void AsyncShardWriter::start_job(std::function<ShardManifest()> job) {
  DTRAIN_CHECK(!in_flight_, "an asynchronous shard write is already in flight");
  in_flight_ = true;
  finished_.store(false, std::memory_order_release);
  manifest_ = ShardManifest{};
  error_ = nullptr;
  boost::asio::post(impl_->pool, [this, job = std::move(job)] {
    const auto t0 = std::chrono::steady_clock::now();
    ShardManifest m;
    std::exception_ptr err;
    try {
      m = job();
    } catch (...) {
      err = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(impl_->mu);
      manifest_ = std::move(m);
      error_ = err;
      write_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      finished_.store(true, std::memory_order_release);
    }
    impl_->cv.notify_all();
  });
}

ShardManifest AsyncShardWriter::wait() {
  DTRAIN_CHECK(in_flight_, "no asynchronous shard write in flight");
  std::unique_lock<std::mutex> lock(impl_->mu);
  impl_->cv.wait(lock, [this] { return finished_.load(std::memory_order_acquire); });
  in_flight_ = false;
  if (error_) std::rethrow_exception(error_);
  return std::move(manifest_);
}

}  // namespace dtrain::checkpoint
