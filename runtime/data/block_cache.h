// A small, bounded, least-recently-used cache of immutable blocks of a file's rows
// (tensors), keyed by block number: what the lazy HDF5 datasets keep of recently read
// data so that sequential reads, repeats and overlapping token windows do not go back
// to the file.
//
//   BlockCache cache(4 << 20);                         // at most 4 MiB of blocks
//   if (auto b = cache.get(17)) use(*b);               // a hit: now most recently used
//   else cache.put(17, read_block(17));                // evicts the oldest beyond 4 MiB
//
// Thread-safe: every method takes an internal mutex (held only for the map update,
// never while a block is read or copied). Blocks are shared: a block handed out by
// get() stays valid while the caller holds it, even after eviction.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>

#include <ATen/core/Tensor.h>

namespace dtrain::data {

class BlockCache {
 public:
  using Block = std::shared_ptr<const at::Tensor>;

  // A cache of at most `capacity_bytes` of blocks (0: caches nothing).
  explicit BlockCache(int64_t capacity_bytes) : capacity_(capacity_bytes) {}
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // The block `key`, marked most recently used, or nullptr when not cached.
  Block get(int64_t key);
  // Stores `block` (its nbytes() count against the capacity) as the most recently used,
  // replacing a block of the same key, then evicts least recently used blocks until the
  // total fits. A block larger than the capacity is not stored.
  void put(int64_t key, Block block);

  int64_t capacity_bytes() const { return capacity_; }
  // Bytes of the blocks held now.
  int64_t size_bytes() const;
  // Blocks held now.
  int64_t num_blocks() const;
  // get() calls that found / did not find their block, since construction.
  int64_t hits() const;
  int64_t misses() const;

 private:
  using Entry = std::pair<int64_t, Block>;  // key, block; most recent first in lru_
  void erase_locked(std::list<Entry>::iterator it);

  const int64_t capacity_;
  mutable std::mutex mutex_;
  std::list<Entry> lru_;
  std::unordered_map<int64_t, std::list<Entry>::iterator> index_;
  int64_t bytes_ = 0;
  int64_t hits_ = 0;
  int64_t misses_ = 0;
};

}  // namespace dtrain::data
