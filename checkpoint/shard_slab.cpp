// Shard files written through a shared mapping (see shard_slab.h).
#include "checkpoint/shard_slab.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <xxhash.h>

#include "runtime/base/error.h"
#include "runtime/h5/h5.h"

namespace dtrain::checkpoint {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "shard slabs copy tensor bytes as the file's little-endian types");

namespace {

// Pieces smaller than this are copied with one memcpy (copy_'s own cost would dominate).
constexpr int64_t kSerialCopyBytes = int64_t{256} << 10;
// An upper bound of HDF5's metadata per dataset of a shard file (object header, links).
constexpr int64_t kHeaderBytesPerItem = 4 << 10;

// Whether `t`'s `bytes` bytes in memory are its values as `dtype`: a dense, contiguous
// CPU tensor with storage, no conjugate or negative bit.
bool plain_cpu_bytes(const at::Tensor& t, at::ScalarType dtype, int64_t bytes) {
  return t.device().is_cpu() && t.layout() == at::kStrided && t.has_storage() && t.scalar_type() == dtype &&
         t.is_contiguous() && !t.is_conj() && !t.is_neg() && static_cast<int64_t>(t.nbytes()) == bytes &&
         t.data_ptr() != nullptr;
}

}  // namespace

std::shared_ptr<ShardSlab> ShardSlab::create(const std::string& path, const std::vector<ShardItem>& items) {
  std::shared_ptr<ShardSlab> slab(new ShardSlab());
  try {
    h5::File file = h5::File::create(path, shard_file_options());
    slab->entries_.resize(items.size());
    for (const size_t i : shard_layout_order(items)) {  // entries_ stay in item order
      const at::Tensor& t = items[i].data;
      h5::Dataset d = file.create_allocated(items[i].name, t.scalar_type(), t.sizes().vec());
      Entry e{items[i].name, t.scalar_type(), t.sizes().vec(), d.storage_offset(),
              static_cast<int64_t>(t.nbytes())};
      DTRAIN_CHECK_T(CheckpointError, e.bytes == 0 || e.offset >= 0,
                     "'{}': HDF5 placed no file space for dataset '{}'", path, items[i].name);
      slab->entries_[i] = std::move(e);
    }
    file.close();
  } catch (const CheckpointError&) {
    throw;
  } catch (const std::exception& e) {
    throw CheckpointError(fmt::format("creating shard file '{}': {}", path, e.what()));
  }
  slab->map(path);
  return slab;
}

std::shared_ptr<ShardSlab> ShardSlab::adopt(const std::string& path, const std::vector<ShardItem>& items) {
  std::shared_ptr<ShardSlab> slab(new ShardSlab());
  // The file checked is the file mapped: opened once, and HDF5's view of the path must
  // be this very file (no other one renamed there in between).
  slab->fd_ = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  DTRAIN_CHECK_T(CheckpointError, slab->fd_ >= 0, "cannot open '{}': {}", path, std::strerror(errno));
  struct stat st {};
  DTRAIN_CHECK_T(CheckpointError, ::fstat(slab->fd_, &st) == 0 && S_ISREG(st.st_mode),
                 "shard file '{}' cannot be reused: not a regular file, or cannot stat it", path);
  slab->entries_ = existing_entries(path, items, st);
  slab->map(path);
  DTRAIN_CHECK_T(CheckpointError, static_cast<int64_t>(slab->size_) == st.st_size,
                 "shard file '{}' changed size while it was taken over", path);
  return slab;
}

std::vector<ShardSlab::Entry> ShardSlab::existing_entries(const std::string& path, const std::vector<ShardItem>& items,
                                                          const struct stat& checked) {
  try {
    h5::File file = h5::File::open(path);
    struct stat st {};
    DTRAIN_CHECK_T(CheckpointError,
                   ::fstat(file.posix_fd(), &st) == 0 && st.st_dev == checked.st_dev && st.st_ino == checked.st_ino &&
                       st.st_size == checked.st_size,
                   "it was replaced while being checked");
    const int64_t end = std::min(static_cast<int64_t>(st.st_size), file.allocated_end());
    std::vector<Entry> entries;
    for (const auto& item : items) {
      const at::Tensor& t = item.data;
      const h5::Dataset d = file.open_own_dataset(item.name);
      DTRAIN_CHECK_T(CheckpointError, d.shape() == t.sizes().vec(), "dataset '{}' has shape [{}], not [{}]",
                     item.name, fmt::join(d.shape(), ","), fmt::join(t.sizes(), ","));
      Entry e{item.name, t.scalar_type(), t.sizes().vec(), 0, static_cast<int64_t>(t.nbytes())};
      DTRAIN_CHECK_T(CheckpointError, d.type().equals(h5::datatype_for(e.dtype)), "dataset '{}' holds {}, not {}",
                     item.name, d.type().describe(), c10::toString(e.dtype));
      const std::optional<int64_t> offset = d.raw_offset(e.dtype);
      DTRAIN_CHECK_T(CheckpointError, e.bytes == 0 || offset.has_value(),
                     "dataset '{}' is not stored as contiguous, allocated {} data", item.name, c10::toString(e.dtype));
      if (e.bytes > 0) e.offset = *offset;
      // Address 0 is HDF5's superblock: no data of a file HDF5 wrote starts there.
      DTRAIN_CHECK_T(CheckpointError, (e.bytes == 0 || e.offset > 0) && e.offset <= end && e.bytes <= end - e.offset,
                     "dataset '{}' ({} bytes at offset {}) ends past the file's {} bytes", item.name, e.bytes,
                     e.offset, end);
      entries.push_back(std::move(e));
    }
    check_nothing_else(file, items);
    check_disjoint_and_bounded(entries, st.st_size);
    return entries;
  } catch (const std::exception& e) {
    throw CheckpointError(fmt::format("shard file '{}' cannot be reused: {}", path, e.what()));
  }
}

void ShardSlab::check_nothing_else(const h5::File& file, const std::vector<ShardItem>& items) {
  std::map<std::string, std::set<std::string>> children;  // group ("" the root) -> its items' links
  for (const auto& item : items) {
    std::string group;
    for (size_t begin = 0; begin <= item.name.size();) {
      const size_t end = std::min(item.name.find('/', begin), item.name.size());
      const std::string name = item.name.substr(begin, end - begin);
      children[group].insert(name);
      group += (group.empty() ? "" : "/") + name;
      begin = end + 1;
    }
  }
  // Only the groups on the items' paths are listed: nothing else is followed.
  for (const auto& [group, expected] : children) {
    for (const auto& name : group.empty() ? file.list() : file.open_group(group).list()) {
      DTRAIN_CHECK_T(CheckpointError, expected.count(name) > 0,
                     "it holds '{}{}', which the state has not (a file of another state's layout)",
                     group.empty() ? "" : group + "/", name);
    }
  }
}

void ShardSlab::check_disjoint_and_bounded(std::vector<Entry> entries, int64_t file_bytes) {
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.offset < b.offset; });
  int64_t data_end = 0, data_bytes = 0, aligned = 0;
  const Entry* previous = nullptr;
  for (const Entry& e : entries) {
    if (e.bytes == 0) continue;
    DTRAIN_CHECK_T(CheckpointError, previous == nullptr || e.offset >= data_end,
                   "datasets '{}' and '{}' overlap", previous ? previous->name : "", e.name);
    data_end = e.offset + e.bytes;
    data_bytes += e.bytes;
    aligned += packed_at_front(e.bytes) ? 0 : 1;
    previous = &e;
  }
  // What create() could make of them: the data, each large dataset's alignment padding
  // and each dataset's header. A larger file would have the mapping (and its
  // allocation) take more of the tier than a new file would.
  const int64_t alignment = static_cast<int64_t>(shard_file_options().alignment);
  const int64_t bound = data_bytes + (aligned + 1) * alignment + kHeaderBytesPerItem * static_cast<int64_t>(entries.size());
  DTRAIN_CHECK_T(CheckpointError, file_bytes <= bound,
                 "it holds {} bytes, more than a new file for its {} datasets ({} bytes of data) would (at most {})",
                 file_bytes, entries.size(), data_bytes, bound);
}

void ShardSlab::map(const std::string& path) {
  if (fd_ < 0) fd_ = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  DTRAIN_CHECK_T(CheckpointError, fd_ >= 0, "cannot open '{}': {}", path, std::strerror(errno));
  struct stat st {};
  DTRAIN_CHECK_T(CheckpointError, ::fstat(fd_, &st) == 0, "cannot stat '{}': {}", path, std::strerror(errno));
  int64_t end = st.st_size;
  for (const auto& e : entries_) end = std::max(end, e.offset + e.bytes);
  // Reserves every page now: a full file system fails here, not as a SIGBUS in a copy.
  const int err = ::posix_fallocate(fd_, 0, end);
  DTRAIN_CHECK_T(CheckpointError, err == 0, "cannot allocate {} bytes for '{}': {}", end, path,
                 std::strerror(err));
  size_ = static_cast<size_t>(end);
  dev_ = st.st_dev;
  ino_ = st.st_ino;
  if (size_ == 0) return;
  void* m = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, 0);
  DTRAIN_CHECK_T(CheckpointError, m != MAP_FAILED, "cannot map '{}' ({} bytes): {}", path, size_,
                 std::strerror(errno));
  map_ = m;
  // The first access to each page of a new mapping can cost far more than MAP_POPULATE
  // suggests: ~5 us per 4 KiB page on the VM measured here (100 ms for 80 MB, with no
  // page fault counted), against ~1 ms on bare metal. Paid here, by whoever maps (the
  // background thread for a file created ahead), not by the snapshot's copy.
  const long page = ::sysconf(_SC_PAGESIZE);
  const auto* bytes = static_cast<const volatile unsigned char*>(m);
  unsigned char sum = 0;
  for (size_t at = 0; at < size_; at += static_cast<size_t>(page > 0 ? page : 4096)) sum ^= bytes[at];
  (void)sum;  // the volatile reads are the point
}

ShardSlab::~ShardSlab() {
  if (map_ != nullptr) ::munmap(map_, size_);
  if (fd_ >= 0) ::close(fd_);
}

bool ShardSlab::fits(const std::vector<ShardItem>& items) const {
  if (items.size() != entries_.size()) return false;
  for (size_t i = 0; i < items.size(); ++i) {
    const auto& e = entries_[i];
    const at::Tensor& t = items[i].data;
    if (e.name != items[i].name || e.dtype != t.scalar_type() || e.shape != t.sizes().vec()) return false;
  }
  return true;
}

bool ShardSlab::is_file_at(const std::string& path) const {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_dev == dev_ && st.st_ino == ino_ &&
         static_cast<size_t>(st.st_size) == size_;
}

void ShardSlab::fill(const std::vector<ShardItem>& items) {
  DTRAIN_CHECK(fits(items), "internal: a shard slab filled with other tensors than it was made for");
  for (size_t i = 0; i < items.size(); ++i) {
    const Entry& e = entries_[i];
    if (e.bytes == 0) continue;
    const at::Tensor& src = items[i].data;
    char* to = static_cast<char*>(map_) + e.offset;
    if (e.bytes < kSerialCopyBytes && plain_cpu_bytes(src, e.dtype, e.bytes)) {
      // Small pieces (most of a model's): a memcpy, without a TensorIterator each.
      // Larger ones go through copy_, which spreads them over the intra-op threads.
      std::memcpy(to, src.data_ptr(), static_cast<size_t>(e.bytes));
      continue;
    }
    at::Tensor dst = at::from_blob(to, e.shape, at::TensorOptions().dtype(e.dtype).device(at::kCPU));
    dst.copy_(src.detach());
  }
}

std::vector<ShardItem> ShardSlab::layout() const {
  std::vector<ShardItem> items;
  items.reserve(entries_.size());
  for (const auto& e : entries_) {
    items.push_back({e.name, at::empty(e.shape, at::TensorOptions().dtype(e.dtype).device(at::kMeta)), std::nullopt});
  }
  return items;
}

std::vector<uint64_t> ShardSlab::hashes() const {
  std::vector<uint64_t> out;
  out.reserve(entries_.size());
  for (const auto& e : entries_) {
    const char* p = e.bytes == 0 ? "" : static_cast<const char*>(map_) + e.offset;
    out.push_back(XXH64(p, static_cast<size_t>(e.bytes), 0));
  }
  return out;
}

}  // namespace dtrain::checkpoint
