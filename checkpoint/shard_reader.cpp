// Reading pieces from shard files (see format.h, ShardReader).
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "checkpoint/format.h"
#include "checkpoint/h5_boundary.h"
#include "runtime/base/error.h"
#include "runtime/base/fs.h"
#include "runtime/base/logging.h"
#include "runtime/h5/h5.h"

namespace dtrain::checkpoint {
namespace {

// What a shard's head (metadata and small datasets) is read ahead as, at most.
constexpr int64_t kShardHeadBytes = int64_t{4} << 20;

// The dataset of `piece` of `tensor` in the shard `file` (at `path`), its stored shape
// checked against the index's.
h5::Dataset open_piece(h5::File& file, const std::string& path, const TensorRecord& tensor,
                       const PieceRecord& piece) {
  h5::Dataset ds = file.open_own_dataset("/" + tensor.name);
  const std::vector<int64_t> stored = ds.shape();
  int64_t elements = 1;
  for (int64_t d : stored) elements *= d;
  DTRAIN_CHECK_T(CheckpointError, stored == piece.shape,
                 "'{}': tensor '{}' has shape [{}] in the shard but the index says [{}] "
                 "(truncated or mismatched shard)",
                 path, tensor.name, fmt::join(stored, ", "), fmt::join(piece.shape, ", "));
  // A null dataspace has the shape [] of a 0-d tensor but no element.
  DTRAIN_CHECK_T(CheckpointError, ds.num_elements() == elements,
                 "'{}': tensor '{}' has a null dataspace (no element) in the shard but the index says "
                 "shape [{}] ({} element(s); damaged or mismatched shard)",
                 path, tensor.name, fmt::join(piece.shape, ", "), elements);
  return ds;
}

}  // namespace

ShardReader::ShardReader(std::string dir, int world_size, bool allow_symlinked_shards)
    : dir_(std::move(dir)), world_size_(world_size), allow_symlinked_shards_(allow_symlinked_shards) {}

ShardReader::~ShardReader() = default;

ShardReader::Shard& ShardReader::shard(const TensorRecord& tensor, const PieceRecord& piece) {
  auto it = files_.find(piece.shard);
  if (it != files_.end()) return it->second;
  const std::string path = path_of(piece);
  DTRAIN_CHECK_T(CheckpointError, std::filesystem::exists(path),
                 "shard '{}' is missing (it holds part of tensor '{}')", path, tensor.name);
  if (check_own_file(path, dir_, allow_symlinked_shards_)) {
    std::error_code ec;
    DTRAIN_LOG_WARN_RANK("shard '{}' is a symbolic link to '{}', read because "
                         "CHECKPOINT.ALLOW_SYMLINKED_SHARDS is on",
                         path, std::filesystem::canonical(path, ec).string());
  }
  Shard s;
  try {
    s.file = std::make_unique<h5::File>(h5::File::open(path));
  } catch (const std::exception& e) {
    throw CheckpointError(fmt::format("shard '{}' cannot be opened (it holds part of tensor "
                                      "'{}'; damaged or truncated?): {}",
                                      path, tensor.name, e.what()));
  }
  struct stat st {};
  DTRAIN_CHECK_T(CheckpointError, ::fstat(s.file->posix_fd(), &st) == 0, "cannot stat shard '{}': {}",
                 path, std::strerror(errno));
  // Pieces must lie inside both the file and what HDF5 allocated in it.
  s.size = std::min(static_cast<int64_t>(st.st_size), as_checkpoint_error([&] { return s.file->allocated_end(); }));
  // The head of a shard dtrain wrote holds every object header and the small datasets
  // (write_shard, shard_layout_order): have the kernel read it in one go, not a random 4 KiB
  // read for each header HDF5 looks at (~0.1 ms each on a cold disk). Advisory.
  (void)::posix_fadvise(s.file->posix_fd(), 0, std::min<int64_t>(s.size, kShardHeadBytes),
                        POSIX_FADV_WILLNEED);
  return files_.emplace(piece.shard, std::move(s)).first->second;
}

int64_t ShardReader::locate(const TensorRecord& tensor, const PieceRecord& piece, at::ScalarType dtype) {
  auto known = located_.find({piece.shard, tensor.name});
  if (known != located_.end() && known->second.dtype == dtype && known->second.shape == piece.shape) {
    return known->second.offset;
  }
  Shard& s = shard(tensor, piece);
  const std::string path = path_of(piece);
  const int64_t offset = as_checkpoint_error([&] {
    h5::Dataset ds = open_piece(*s.file, path, tensor, piece);
    const std::optional<int64_t> raw = ds.raw_offset(dtype);
    if (!raw) return int64_t{-1};
    const int64_t bytes = ds.num_elements() * static_cast<int64_t>(c10::elementSize(dtype));
    DTRAIN_CHECK_T(CheckpointError, *raw <= s.size && bytes <= s.size - *raw,
                   "'{}': tensor '{}' ({} bytes) is stored at offset {}, past the end of the "
                   "file ({} bytes used; truncated or damaged shard)",
                   path, tensor.name, bytes, *raw, s.size);
    return *raw;
  });
  located_[{piece.shard, tensor.name}] = Located{dtype, piece.shape, offset};
  return offset;
}

ShardReader::Location ShardReader::where(const TensorRecord& tensor, const PieceRecord& piece,
                                         at::ScalarType dtype) {
  const int64_t offset = locate(tensor, piece, dtype);
  if (offset < 0) return {};
  return {as_checkpoint_error([&] { return files_.at(piece.shard).file->posix_fd(); }), offset};
}

void ShardReader::read_located(const TensorRecord& tensor, const PieceRecord& piece, const Location& at,
                               at::Tensor& dst) const {
  const std::string path = path_of(piece);
  DTRAIN_CHECK(at.offset >= 0 && at.fd >= 0 && dst.device().is_cpu() && dst.is_contiguous() &&
                   dst.sizes().vec() == piece.shape,
               "internal: reading tensor '{}' from no location or into a destination of shape [{}]", tensor.name,
               fmt::join(dst.sizes(), ","));
  const size_t bytes = dst.nbytes();
  const size_t got = as_checkpoint_error(
      [&] { return fs::pread_upto(at.fd, static_cast<uint64_t>(at.offset), dst.data_ptr(), bytes, path); },
      [&] { return fmt::format("reading tensor '{}'", tensor.name); });
  DTRAIN_CHECK_T(CheckpointError, got == bytes,
                 "'{}': tensor '{}' ends early: {} of its {} bytes at offset {} are in the file "
                 "(truncated shard)",
                 path, tensor.name, got, bytes, at.offset);
}

void ShardReader::read_piece(const TensorRecord& tensor, const PieceRecord& piece, at::Tensor& dst,
                             bool verify) {
  const std::string path = path_of(piece);
  DTRAIN_CHECK_T(CheckpointError, dst.is_contiguous() && dst.sizes().vec() == piece.shape,
                 "internal: destination for '{}' has shape {} but the piece has {}", tensor.name,
                 fmt::join(dst.sizes(), ","), fmt::join(piece.shape, ","));
  const Location at = dst.device().is_cpu() ? where(tensor, piece, dst.scalar_type()) : Location{};
  if (at.offset >= 0) {
    read_located(tensor, piece, at, dst);
  } else {
    Shard& s = shard(tensor, piece);
    as_checkpoint_error([&] {
      open_piece(*s.file, path, tensor, piece).read_into(dst);
    });
  }
  if (verify) verify_piece(path, tensor, piece, dst);
}

std::string ShardReader::path_of(const PieceRecord& piece) const {
  return dir_ + "/" + shard_file_name(piece.shard, world_size_);
}

}  // namespace dtrain::checkpoint
