// A rank's mapped shard files of the local tier (see slab_pool.h).
#include "checkpoint/slab_pool.h"

#include <algorithm>
#include <exception>
#include <filesystem>
#include <system_error>
#include <utility>

#include <ATen/ATen.h>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <fmt/format.h>

#include "runtime/base/error.h"
#include "runtime/base/logging.h"

namespace dtrain::checkpoint {

SlabPool::SlabPool(Env& env, std::string spare_path, std::string ahead_path, size_t capacity)
    : env_(env), spare_path_(std::move(spare_path)), ahead_path_(std::move(ahead_path)), capacity_(capacity) {
  DTRAIN_CHECK(capacity_ >= 1, "internal: a slab pool of capacity 0");
}

SlabPool::~SlabPool() {
  // A file created ahead (or left by a creation that failed; also by a takeover that
  // was refused) is no snapshot's, and a new process cannot reuse it. A spare being
  // taken over stays the spare.
  const bool creating = ahead_.valid();
  collect_ahead();
  if (creating) fs::remove_quietly(ahead_path_, env_);
}

std::shared_ptr<ShardSlab> SlabPool::collect_ahead() noexcept {
  if (!ahead_.valid()) return nullptr;
  try {
    return ahead_.get();
  } catch (const std::exception& e) {
    ahead_error_ = e.what();
  } catch (...) {
    ahead_error_ = "unknown error";
  }
  return nullptr;
}

void SlabPool::remove_if_file(const std::string& path) {
  if (env_.type_of(path) == FileType::kRegular) env_.remove_file(path);
}

void SlabPool::keep_newest(std::shared_ptr<ShardSlab> slab) {
  slabs_.erase(std::remove(slabs_.begin(), slabs_.end(), slab), slabs_.end());
  slabs_.push_back(std::move(slab));
  while (slabs_.size() > capacity_) slabs_.erase(slabs_.begin());
}

std::shared_ptr<ShardSlab> SlabPool::take(const std::vector<ShardItem>& items, const std::string& path) {
  const bool adopting = std::exchange(ahead_adopts_, false);
  std::shared_ptr<ShardSlab> ahead = collect_ahead();
  const std::string ahead_error = std::exchange(ahead_error_, {});  // this take's only
  // A takeover ahead gave the spare, or (refused) a file created at the ahead path.
  std::shared_ptr<ShardSlab> adopted_ahead;
  if (adopting && ahead && !ahead->is_file_at(ahead_path_)) adopted_ahead = std::exchange(ahead, nullptr);
  std::shared_ptr<ShardSlab> spare;  // one of this pool's files, else an earlier process's
  for (const auto& slab : slabs_) {
    if (slab->fits(items) && slab->is_file_at(spare_path_)) spare = slab;
  }
  if (!spare) {
    // Taken over ahead, if it fits and is still there; one refused ahead (a debug line
    // said why, and it was replaced) is not tried again.
    if (!adopting) {
      spare = adopt_spare(items);
    } else if (adopted_ahead && adopted_ahead->fits(items) && adopted_ahead->is_file_at(spare_path_)) {
      spare = std::move(adopted_ahead);
      ++adopted_ahead_;
    }
    if (spare) ++adopted_;
  }
  if (spare) {
    env_.rename(spare_path_, path);
    remove_if_file(ahead_path_);  // created ahead, or left by a creation that failed
    keep_newest(spare);
    return spare;
  }
  remove_if_file(spare_path_);  // one that does not fit, or is not a shard file
  if (ahead && ahead->fits(items) && ahead->is_file_at(ahead_path_)) {
    env_.rename(ahead_path_, path);
    ++created_ahead_;
    keep_newest(ahead);
    return ahead;
  }
  remove_if_file(ahead_path_);
  std::shared_ptr<ShardSlab> slab;
  try {
    slab = ShardSlab::create(path, items);
  } catch (const CheckpointError& e) {
    if (ahead_error.empty()) throw;
    throw CheckpointError(fmt::format("{} (creating it ahead had failed too: {})", e.what(), ahead_error));
  }
  if (!ahead_error.empty()) DTRAIN_LOG_DEBUG("Shard file '{}' created in the stall: {}", path, ahead_error);
  ++created_in_stall_;
  keep_newest(slab);
  return slab;
}

std::shared_ptr<ShardSlab> SlabPool::adopt_spare(const std::vector<ShardItem>& items) {
  if (env_.type_of(spare_path_) != FileType::kRegular) return nullptr;
  try {
    return ShardSlab::adopt(spare_path_, items);
  } catch (const CheckpointError& e) {
    DTRAIN_LOG_DEBUG("Not reusing the spare shard file: {}", e.what());
    return nullptr;
  }
}

void SlabPool::prepare_next(boost::asio::thread_pool& pool, const std::function<bool()>& spare_coming) noexcept {
  if (slabs_.empty() || ahead_.valid() || slabs_.size() >= capacity_) return;
  try {
    if (spare_coming()) return;
  } catch (const std::exception&) {
    return;
  }
  create_ahead(pool, slabs_.back()->layout());
}

bool SlabPool::prepare_first(boost::asio::thread_pool& pool, const std::vector<ShardItem>& items) noexcept {
  if (!slabs_.empty() || ahead_.valid()) return false;
  try {
    std::vector<ShardItem> layout;
    layout.reserve(items.size());
    for (const auto& item : items) {
      const auto meta = at::TensorOptions().dtype(item.data.scalar_type()).device(at::kMeta);
      layout.push_back({item.name, at::empty(item.data.sizes(), meta), std::nullopt});
    }
    if (env_.type_of(spare_path_) == FileType::kRegular) return adopt_ahead(pool, std::move(layout));
    return create_ahead(pool, std::move(layout));
  } catch (const std::exception& e) {
    ahead_error_ = fmt::format("preparing the first shard file at '{}' or '{}': {}", spare_path_, ahead_path_,
                               e.what());
    return false;
  }
}

bool SlabPool::prepare_takeover(boost::asio::thread_pool& pool) noexcept {
  if (slabs_.empty() || slabs_.size() >= capacity_ || ahead_.valid()) return false;
  try {
    return foreign_spare() && adopt_ahead(pool, slabs_.back()->layout());
  } catch (const std::exception&) {
    return false;  // the take tries in its stall
  }
}

bool SlabPool::foreign_spare() const {
  if (env_.type_of(spare_path_) != FileType::kRegular) return false;
  return std::none_of(slabs_.begin(), slabs_.end(), [&](const auto& s) { return s->is_file_at(spare_path_); });
}

bool SlabPool::create_ahead(boost::asio::thread_pool& pool, std::vector<ShardItem> layout) noexcept {
  try {
    if (env_.type_of(spare_path_) != FileType::kMissing || env_.type_of(ahead_path_) != FileType::kMissing) {
      return false;
    }
    post_ahead(pool, [path = ahead_path_, layout = std::move(layout)] { return ShardSlab::create(path, layout); },
               /*adopts=*/false);
    return true;
  } catch (const std::exception& e) {
    ahead_ = {};
    ahead_error_ = fmt::format("starting to create '{}': {}", ahead_path_, e.what());
    return false;
  }
}

bool SlabPool::adopt_ahead(boost::asio::thread_pool& pool, std::vector<ShardItem> layout) noexcept {
  try {
    post_ahead(
        pool,
        [spare = spare_path_, ahead = ahead_path_, layout = std::move(layout)] {
          try {
            return ShardSlab::adopt(spare, layout);
          } catch (const std::exception& e) {
            DTRAIN_LOG_DEBUG("Not reusing the spare shard file: {}", e.what());
          }
          // Its pages are the tier's memory: removed before a file of this layout is made.
          std::error_code ignored;
          std::filesystem::remove(spare, ignored);
          return ShardSlab::create(ahead, layout);
        },
        /*adopts=*/true);
    return true;
  } catch (const std::exception&) {
    ahead_ = {};
    ahead_adopts_ = false;
    return false;  // the take tries in its stall
  }
}

void SlabPool::post_ahead(boost::asio::thread_pool& pool, std::function<std::shared_ptr<ShardSlab>()> make,
                          bool adopts) {
  std::packaged_task<std::shared_ptr<ShardSlab>()> task(std::move(make));
  ahead_ = task.get_future();
  ahead_adopts_ = adopts;
  boost::asio::post(pool, std::move(task));
}

void SlabPool::settle() noexcept {
  // A creation ahead writes only at the ahead path, which nothing renames to: it goes
  // on (it has the steps up to the next snapshot).
  if (ahead_.valid() && ahead_adopts_) ahead_.wait();
}

void SlabPool::drop(const std::shared_ptr<ShardSlab>& slab) noexcept {
  if (slab) slabs_.erase(std::remove(slabs_.begin(), slabs_.end(), slab), slabs_.end());
}

void SlabPool::release() noexcept {
  collect_ahead();
  ahead_adopts_ = false;
  ahead_error_.clear();
  slabs_.clear();
  fs::remove_quietly(spare_path_, env_);
  fs::remove_quietly(ahead_path_, env_);
}

}  // namespace dtrain::checkpoint
