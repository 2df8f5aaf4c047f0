#include "checkpoint/shard_reader.h"

#include <sys/stat.h>

#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "checkpoint/format.h"
#include "checkpoint/h5_boundary.h"
#include "runtime/base/error.h"
#include "runtime/base/fs.h"
#include "runtime/base/logging.h"
#include "runtime/h5/h5.h"

namespace dtrain::checkpoint {

struct ShardReader::Shard {
  std::string path;
  h5::File file;
  int fd = -1;        // HDF5's own descriptor of the file (sec2 driver)
  int64_t size = -1;  // bytes, when it was opened
};

ShardReader::ShardReader(std::string dir, int world_size, bool allow_symlinked_shards)
    : dir_(std::move(dir)), world_size_(world_size), allow_symlinked_shards_(allow_symlinked_shards) {}

ShardReader::~ShardReader() = default;

ShardReader::Shard& ShardReader::open_shard(const TensorRecord& tensor, const PieceRecord& piece) {
  {
    std::lock_guard<std::mutex> lock(files_mutex_);
    auto it = files_.find(piece.shard);
    if (it != files_.end()) return *it->second;
  }
  const std::string path = path_of(piece);
  DTRAIN_CHECK_T(CheckpointError, std::filesystem::exists(path),
                 "shard '{}' is missing (it holds part of tensor '{}')", path, tensor.name);
  if (check_own_file(path, dir_, allow_symlinked_shards_)) {
    std::error_code ec;
    DTRAIN_LOG_WARN_RANK("shard '{}' is a symbolic link to '{}', read because "
                         "CHECKPOINT.ALLOW_SYMLINKED_SHARDS is on",
                         path, std::filesystem::canonical(path, ec).string());
  }
  std::unique_ptr<Shard> shard;
  try {
    shard.reset(new Shard{path, h5::File::open(path)});
    shard->fd = shard->file.posix_fd();
  } catch (const std::exception& e) {
    throw CheckpointError(fmt::format("shard '{}' cannot be opened (it holds part of tensor "
                                      "'{}'; damaged or truncated?): {}",
                                      path, tensor.name, e.what()));
  }
  struct stat st {};
  if (::fstat(shard->fd, &st) == 0 && S_ISREG(st.st_mode)) shard->size = st.st_size;
  std::lock_guard<std::mutex> lock(files_mutex_);
  return *files_.emplace(piece.shard, std::move(shard)).first->second;
}

const ShardReader::Shard& ShardReader::opened_shard(const PieceRecord& piece) const {
  std::lock_guard<std::mutex> lock(files_mutex_);
  auto it = files_.find(piece.shard);
  DTRAIN_CHECK_T(CheckpointError, it != files_.end(), "internal: shard {} of '{}' is not open",
                 piece.shard, dir_);
  return *it->second;
}

void ShardReader::read_piece(const TensorRecord& tensor, const PieceRecord& piece, at::Tensor& dst,
                             bool verify) {
  const Shard& shard = open_shard(tensor, piece);
  DTRAIN_CHECK_T(CheckpointError, dst.is_contiguous() && dst.sizes().vec() == piece.shape,
                 "internal: destination for '{}' has shape {} but the piece has {}", tensor.name,
                 fmt::join(dst.sizes(), ","), fmt::join(piece.shape, ","));
  as_checkpoint_error([&] {
    h5::Dataset ds = shard.file.open_own_dataset("/" + tensor.name);
    const std::vector<int64_t> stored = ds.shape();
    DTRAIN_CHECK_T(CheckpointError, stored == piece.shape,
                   "'{}': tensor '{}' has shape [{}] in the shard but the index says [{}] "
                   "(truncated or mismatched shard)",
                   shard.path, tensor.name, fmt::join(stored, ", "), fmt::join(piece.shape, ", "));
    ds.read_into(dst);
  });
  if (verify) verify_piece(shard.path, tensor, piece, dst);
}

bool ShardReader::read_piece_raw(const TensorRecord& tensor, const PieceRecord& piece, at::Tensor& dst) {
  // dtrain stores little-endian types: byte for byte what a little-endian host holds.
  constexpr bool kLittleEndian = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
  const int64_t bytes = static_cast<int64_t>(dst.nbytes());
  if (!kLittleEndian || piece.offset < 0 || piece.bytes != bytes || bytes == 0 ||
      !dst.is_contiguous() || dst.sizes().vec() != piece.shape) {
    return false;
  }
  const Shard& shard = open_shard(tensor, piece);
  // The index is untrusted: the range must lie inside the file.
  if (shard.size < 0 || piece.offset > shard.size - bytes) return false;
  // A failed read is left to HDF5, which reads it again and says what is wrong.
  return fs::pread_exact(shard.fd, static_cast<uint64_t>(piece.offset), dst.data_ptr(),
                         static_cast<uint64_t>(bytes))
      .empty();
}

void ShardReader::check_raw_layout(const TensorRecord& tensor, const PieceRecord& piece,
                                   at::ScalarType dtype) const {
  const Shard& shard = opened_shard(piece);
  as_checkpoint_error([&] {
    h5::Dataset ds = shard.file.open_own_dataset("/" + tensor.name);
    const std::optional<int64_t> offset = ds.storage_offset();
    const bool same = offset && *offset == piece.offset && ds.shape() == piece.shape &&
                      ds.type().equals(h5::datatype_for(dtype));
    DTRAIN_CHECK_T(CheckpointError, same,
                   "'{}': tensor '{}' is not stored as the index records it (contiguous {} data "
                   "of shape [{}] at byte {}; HDF5 finds it at {})",
                   shard.path, tensor.name, tensor.dtype, fmt::join(piece.shape, ", "),
                   piece.offset, offset ? std::to_string(*offset) : std::string("no single offset"));
  });
}

std::string ShardReader::path_of(const PieceRecord& piece) const {
  return dir_ + "/" + shard_file_name(piece.shard, world_size_);
}

}  // namespace dtrain::checkpoint
