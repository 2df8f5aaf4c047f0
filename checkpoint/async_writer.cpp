// Snapshots and the background shard writer (see async_writer.h).
#include "checkpoint/async_writer.h"

#include <chrono>
#include <condition_variable>
#include <mutex>

#include <ATen/ATen.h>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include "runtime/base/error.h"

namespace dtrain::checkpoint {

namespace {

at::Tensor host_copy(const at::Tensor& t) {
  auto options = t.options().device(at::kCPU);
  if (t.is_cuda()) options = options.pinned_memory(true);
  at::Tensor out = at::empty(t.sizes(), options);
  out.copy_(t.detach(), /*non_blocking=*/false);
  return out;
}

}  // namespace

CollectedState snapshot(const CollectedState& state) {
  CollectedState out;
  out.scalars = state.scalars;
  out.replicated.reserve(state.replicated.size());
  for (const auto& [name, t] : state.replicated) out.replicated.emplace_back(name, host_copy(t));
  for (const auto& [name, t] : state.per_rank) out.per_rank.emplace_back(name, host_copy(t));
  return out;
}

struct AsyncShardWriter::Impl {
  boost::asio::thread_pool pool{1};
  std::mutex mu;
  std::condition_variable cv;
};

AsyncShardWriter::AsyncShardWriter() : impl_(std::make_unique<Impl>()) {}

AsyncShardWriter::~AsyncShardWriter() {
  impl_->pool.join();
}

void AsyncShardWriter::start(std::string path, int rank, CollectedState state,
                             std::vector<Piece> plan, ShardWriteObserver observer) {
  DTRAIN_CHECK(!in_flight_, "an asynchronous shard write is already in flight");
  in_flight_ = true;
  finished_.store(false, std::memory_order_release);
  manifest_ = ShardManifest{};
  error_ = nullptr;
  boost::asio::post(impl_->pool, [this, path = std::move(path), rank, state = std::move(state),
                                  plan = std::move(plan), observer = std::move(observer)] {
    const auto t0 = std::chrono::steady_clock::now();
    ShardManifest m;
    std::exception_ptr err;
    try {
      m = write_shard(path, rank, state, plan, observer);
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
