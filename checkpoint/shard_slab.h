// A rank's shard file of the local tier written through a shared memory mapping
// (local_tier.h, CHECKPOINT.LOCAL.DIR in memory, e.g. /dev/shm): the file is created
// once with every dataset's space allocated (fallocate, so that a full tmpfs is an error
// at creation and never a SIGBUS at a copy), and reused by later snapshots. A snapshot
// copies the rank's rows straight into the mapped file (the stall), and the I/O thread
// only hashes them. Writing through HDF5 instead costs a second copy (host buffer, then
// file) and, for a new tmpfs file, a page allocation per 4 KiB.
//
// The file is an ordinary shard file of format v1: the datasets write_shard writes, in
// its order, contiguous and with its alignment, so readers need not know how it was
// written.
//
//   auto slab = ShardSlab::create(path, items);  // once (HDF5 creates the datasets)
//   slab->fill(items);                            // each snapshot, in the stall
//   auto hashes = slab->hashes();                 // on the I/O thread
//
// Thread-safety: fill and hashes must not overlap; the owner orders them.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "checkpoint/format.h"

namespace dtrain::h5 {
class File;
}  // namespace dtrain::h5

namespace dtrain::checkpoint {

class ShardSlab {
 public:
  // Creates the shard file `path` (which must not exist) holding a dataset for each of
  // `items` (name, dtype and shape; the data is not written), allocates its space and
  // maps it. Throws CheckpointError naming `path` (e.g. the tier is full).
  static std::shared_ptr<ShardSlab> create(const std::string& path, const std::vector<ShardItem>& items);
  // Maps the existing shard file `path` (e.g. an earlier process's, left in the tier)
  // for reuse with `items`: each item's dataset must be there with its dtype (HDF5's
  // native type) and shape, contiguous, allocated, inside the file and overlapping no
  // other item's, no other dataset or group beside them, and the file no larger than a
  // file create() makes for them (checked: the file is not trusted to drive the
  // mapping). Throws CheckpointError naming `path`
  // and what does not fit; the file is left as it was.
  static std::shared_ptr<ShardSlab> adopt(const std::string& path, const std::vector<ShardItem>& items);
  ~ShardSlab();
  ShardSlab(const ShardSlab&) = delete;
  ShardSlab& operator=(const ShardSlab&) = delete;

  // Whether the file has a dataset of the same name, dtype and shape for each item, in
  // order.
  bool fits(const std::vector<ShardItem>& items) const;
  // Whether `path` is this slab's file (same device and inode) at its full size.
  bool is_file_at(const std::string& path) const;
  // Copies each item's data (any device or layout, the dataset's dtype) into its
  // dataset's bytes. Requires fits(items).
  void fill(const std::vector<ShardItem>& items);
  // The xxHash64 of each dataset's bytes, in order.
  std::vector<uint64_t> hashes() const;
  int64_t bytes() const { return static_cast<int64_t>(size_); }
  // Items naming this file's datasets with meta tensors of their dtypes and shapes (no
  // data): what create() needs to make another file like this one, on any thread.
  std::vector<ShardItem> layout() const;
  // The whole file, as mapped (valid while this slab lives).
  std::string_view contents() const { return {static_cast<const char*>(map_), size_}; }

 private:
  struct Entry {
    std::string name;
    at::ScalarType dtype;
    std::vector<int64_t> shape;
    int64_t offset = 0;
    int64_t bytes = 0;
  };
  ShardSlab() = default;
  // The items' datasets in `path`, checked as adopt() says; the file HDF5 opens there
  // must be `checked` (device, inode, size).
  static std::vector<Entry> existing_entries(const std::string& path, const std::vector<ShardItem>& items,
                                             const struct stat& checked);
  // Throws CheckpointError unless the entries' bytes are disjoint and a file of
  // `file_bytes` is no larger than create() could make for them.
  static void check_disjoint_and_bounded(std::vector<Entry> entries, int64_t file_bytes);
  // Throws CheckpointError when a group on the items' paths links anything but them (a
  // dataset the state no longer has would go on in every shard written through it).
  static void check_nothing_else(const h5::File& file, const std::vector<ShardItem>& items);
  // Maps the file (opened at `path` unless fd_ is open already).
  void map(const std::string& path);

  std::vector<Entry> entries_;
  int fd_ = -1;
  void* map_ = nullptr;
  size_t size_ = 0;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

}  // namespace dtrain::checkpoint
