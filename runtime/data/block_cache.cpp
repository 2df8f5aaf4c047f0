// The least-recently-used block cache of the lazy HDF5 datasets (see block_cache.h).
#include "runtime/data/block_cache.h"

namespace dtrain::data {

BlockCache::Block BlockCache::get(int64_t key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = index_.find(key);
  if (it == index_.end()) {
    ++misses_;
    return nullptr;
  }
  ++hits_;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->second;
}

void BlockCache::put(int64_t key, Block block) {
  if (!block) return;
  const int64_t bytes = static_cast<int64_t>(block->nbytes());
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = index_.find(key);
  if (it != index_.end()) erase_locked(it->second);
  if (bytes > capacity_) return;
  lru_.emplace_front(key, std::move(block));
  index_[key] = lru_.begin();
  bytes_ += bytes;
  while (bytes_ > capacity_) erase_locked(std::prev(lru_.end()));
}

void BlockCache::erase_locked(std::list<Entry>::iterator it) {
  bytes_ -= static_cast<int64_t>(it->second->nbytes());
  index_.erase(it->first);
  lru_.erase(it);
}

int64_t BlockCache::size_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return bytes_;
}

int64_t BlockCache::num_blocks() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(lru_.size());
}

int64_t BlockCache::hits() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return hits_;
}

int64_t BlockCache::misses() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return misses_;
}

}  // namespace dtrain::data
