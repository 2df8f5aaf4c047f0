// Format v1 file I/O: shard files, checkpoint.h5 with virtual datasets (see format.h).
#include "checkpoint/format.h"

#include <mpi.h>
#include <fcntl.h>
#include <xxhash.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <future>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/version.h>

#include "checkpoint/h5_boundary.h"
#include "runtime/base/env.h"
#include "runtime/base/error.h"
#include "runtime/base/fs.h"
#include "runtime/base/logging.h"
#include "runtime/h5/h5.h"

namespace dtrain::checkpoint {

using nlohmann::json;

h5::FileOptions shard_file_options() {
  h5::FileOptions o;
  o.alignment = 1 << 20;            // large datasets start on 1 MiB boundaries
  o.alignment_threshold = 64 << 10;  // (TOOLCHAIN.md: threshold 0 aligns tiny ones too)
  o.overwrite = false;
  return o;
}

bool packed_at_front(int64_t bytes) {
  return bytes < static_cast<int64_t>(shard_file_options().alignment_threshold);
}

std::vector<size_t> shard_layout_order(const std::vector<ShardItem>& items) {
  std::vector<size_t> order(items.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_partition(order.begin(), order.end(), [&](size_t i) {
    return packed_at_front(static_cast<int64_t>(items[i].data.nbytes()));
  });
  return order;
}

namespace {

json piece_json(const PieceRecord& p) {
  return {{"shard", p.shard}, {"row_start", p.row_start}, {"row_count", p.row_count},
          {"bytes", p.bytes}, {"xxh64", hex64(p.xxh64)}, {"shape", p.shape}};
}

PieceRecord piece_from_json(const json& j) {
  PieceRecord p;
  p.shard = j.at("shard").get<int>();
  p.row_start = j.at("row_start").get<int64_t>();
  p.row_count = j.at("row_count").get<int64_t>();
  p.bytes = j.at("bytes").get<int64_t>();
  p.xxh64 = std::stoull(j.at("xxh64").get<std::string>(), nullptr, 16);
  p.shape = j.at("shape").get<std::vector<int64_t>>();
  return p;
}

}  // namespace

uint64_t tensor_xxh64(const at::Tensor& t) {
  return XXH64(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size(), 0);
}

void verify_piece(const std::string& path, const TensorRecord& tensor, const PieceRecord& piece,
                  const at::Tensor& data) {
  const uint64_t h = tensor_xxh64(data);
  DTRAIN_CHECK_T(CheckpointError, h == piece.xxh64,
                 "'{}': checksum mismatch for tensor '{}' rows [{}, {}): stored xxh64 {} but "
                 "the data hashes to {} (the shard is damaged)",
                 path, tensor.name, piece.row_start, piece.row_start + piece.row_count,
                 hex64(piece.xxh64), hex64(h));
}

at::ScalarType dtype_from_name(const std::string& name, const std::string& context) {
  static const std::pair<const char*, at::ScalarType> kTypes[] = {
      {"float32", at::kFloat}, {"float64", at::kDouble}, {"float16", at::kHalf},
      {"bfloat16", at::kBFloat16}, {"int8", at::kChar}, {"int16", at::kShort},
      {"int32", at::kInt}, {"int64", at::kLong}, {"uint8", at::kByte}, {"bool", at::kBool}};
  for (const auto& [n, t] : kTypes) {
    if (name == n) return t;
  }
  throw CheckpointError(fmt::format("{}: unknown dtype '{}'", context, name));
}

std::vector<TensorMeta> CollectedState::replicated_meta() const {
  std::vector<TensorMeta> out;
  out.reserve(replicated.size());
  for (const auto& [name, t] : replicated) out.push_back({name, t.scalar_type(), t.sizes().vec()});
  return out;
}

json ShardManifest::to_json_value() const {
  json r = json::array();
  for (const auto& e : replicated) r.push_back({{"tensor", e.tensor}, {"piece", piece_json(e.piece)}});
  json p = json::array();
  for (const auto& [meta, piece] : per_rank) {
    p.push_back({{"tensor", meta.name}, {"dtype", h5::dtype_name(meta.dtype)},
                 {"shape", meta.shape}, {"piece", piece_json(piece)}});
  }
  return json{{"replicated", r}, {"per_rank", p}};
}

ShardManifest ShardManifest::from_json_value(const json& j, const std::string& origin) {
  ShardManifest m;
  try {
    for (const auto& e : j.at("replicated")) {
      m.replicated.push_back({e.at("tensor").get<std::string>(), piece_from_json(e.at("piece"))});
    }
    for (const auto& e : j.at("per_rank")) {
      TensorMeta meta{e.at("tensor").get<std::string>(),
                      dtype_from_name(e.at("dtype").get<std::string>(), origin),
                      e.at("shape").get<std::vector<int64_t>>()};
      m.per_rank.emplace_back(meta, piece_from_json(e.at("piece")));
    }
  } catch (const json::exception& e) {
    throw CheckpointError(fmt::format("{}: malformed shard manifest: {}", origin, e.what()));
  }
  return m;
}

namespace {

// Starts the kernel's writeback of a file every kChunk bytes written, without waiting
// for it. A checkpoint smaller than the dirty-page threshold would otherwise sit in the
// page cache until the final fsync, so that copying into the cache and writing to the
// disk would happen one after the other instead of overlapping.
class EarlyWriteback {
 public:
  explicit EarlyWriteback(int fd) : fd_(fd) {}
  void wrote(int64_t bytes) {
    pending_ += bytes;
    if (pending_ < kChunk) return;
    pending_ = 0;
    // Advisory: errors surface at the fsync that follows.
    (void)::sync_file_range(fd_, 0, 0, SYNC_FILE_RANGE_WRITE);
  }

 private:
  static constexpr int64_t kChunk = int64_t{64} << 20;
  int fd_;
  int64_t pending_ = 0;
};

}  // namespace

std::vector<ShardItem> shard_items(const CollectedState& state, const std::vector<Piece>& plan, int rank,
                                   bool contiguous_cpu) {
  std::vector<ShardItem> items;
  for (const auto& p : plan) {
    if (p.shard != rank) continue;
    const auto& [name, tensor] = state.replicated[p.tensor];
    at::Tensor rows = tensor.dim() == 0 ? tensor : tensor.narrow(0, p.row_start, p.row_count);
    items.push_back({name, contiguous_cpu ? rows.cpu().contiguous() : rows, p});
  }
  for (const auto& [name, tensor] : state.per_rank) {
    items.push_back({name, contiguous_cpu ? tensor.cpu().contiguous() : tensor, std::nullopt});
  }
  return items;
}

ShardManifest shard_manifest(const std::vector<ShardItem>& items, const std::vector<uint64_t>& hashes,
                             int rank) {
  ShardManifest manifest;
  for (size_t i = 0; i < items.size(); ++i) {
    const at::Tensor& t = items[i].data;
    if (const auto& p = items[i].piece) {
      manifest.replicated.push_back(
          {items[i].name, PieceRecord{rank, p->row_start, p->row_count, p->bytes, hashes.at(i), t.sizes().vec()}});
    } else {
      const int64_t bytes = static_cast<int64_t>(t.nbytes());
      manifest.per_rank.emplace_back(
          TensorMeta{items[i].name, t.scalar_type(), t.sizes().vec()},
          PieceRecord{rank, 0, t.dim() ? t.size(0) : 1, bytes, hashes.at(i), t.sizes().vec()});
    }
  }
  return manifest;
}

ShardManifest write_shard(const std::string& path, int rank, const CollectedState& state,
                          const std::vector<Piece>& plan, ShardWriteObserver observer, Env& env) {
  const std::vector<ShardItem> items = shard_items(state, plan, rank, /*contiguous_cpu=*/true);
  // The checksums are computed on a second thread while HDF5 writes (they read the same
  // immutable tensors and call no HDF5).
  std::vector<uint64_t> hashes(items.size());
  auto hashing = std::async(std::launch::async, [&items, &hashes] {
    for (size_t i = 0; i < items.size(); ++i) hashes[i] = tensor_xxh64(items[i].data);
  });
  as_checkpoint_error([&] {
    h5::File file = h5::File::create(path, shard_file_options());
    EarlyWriteback writeback(file.posix_fd());
    const int64_t total = static_cast<int64_t>(items.size());
    // Every dataset is created before any is written: a contiguous dataset gets its file
    // space at its first write, so HDF5 puts all object headers together at the front,
    // then the small datasets' data, then each large one's after the one before.
    const std::vector<size_t> order = shard_layout_order(items);
    std::vector<h5::Dataset> datasets;
    datasets.reserve(order.size());
    for (const size_t i : order) {
      const at::Tensor& t = items[i].data;
      datasets.push_back(file.create_dataset(items[i].name, h5::datatype_for(t.scalar_type()), t.sizes().vec()));
    }
    for (size_t k = 0; k < order.size(); ++k) {
      const at::Tensor& t = items[order[k]].data;
      datasets[k].write(t);
      datasets[k].close();
      writeback.wrote(static_cast<int64_t>(t.nbytes()));
      if (observer) observer(static_cast<int64_t>(k) + 1, total);
    }
    file.close();
  });
  env.sync(path);
  hashing.get();
  return shard_manifest(items, hashes, rank);
}

namespace {

// The index without pieces: attributes, scalars and the replicated tensors, in order.
CheckpointIndex index_skeleton(const CollectedState& state, int world_size, int64_t iteration) {
  CheckpointIndex idx;
  idx.world_size = world_size;
  idx.iteration = iteration;
  idx.scalars = state.scalars;
  for (const auto& [name, t] : state.replicated) {
    idx.tensors.push_back({name, h5::dtype_name(t.scalar_type()), t.sizes().vec(), false, {}});
  }
  return idx;
}

}  // namespace

CheckpointIndex build_index(const CollectedState& state, const std::vector<ShardManifest>& manifests,
                            int world_size, int64_t iteration) {
  CheckpointIndex idx = index_skeleton(state, world_size, iteration);
  std::map<std::string, size_t> position;
  for (size_t i = 0; i < idx.tensors.size(); ++i) position[idx.tensors[i].name] = i;
  for (const auto& m : manifests) {
    for (const auto& e : m.replicated) {
      auto it = position.find(e.tensor);
      DTRAIN_CHECK_T(CheckpointError, it != position.end(),
                     "shard {} wrote tensor '{}' that rank 0 does not have", e.piece.shard, e.tensor);
      idx.tensors[it->second].pieces.push_back(e.piece);
    }
  }
  for (auto& t : idx.tensors) {
    std::sort(t.pieces.begin(), t.pieces.end(),
              [](const PieceRecord& a, const PieceRecord& b) { return a.row_start < b.row_start; });
  }
  for (const auto& m : manifests) {
    for (const auto& [meta, piece] : m.per_rank) {
      auto it = position.find(meta.name);
      if (it == position.end()) {
        position[meta.name] = idx.tensors.size();
        idx.tensors.push_back({meta.name, h5::dtype_name(meta.dtype), meta.shape, true, {}});
        it = position.find(meta.name);
      }
      idx.tensors[it->second].pieces.push_back(piece);
    }
  }
  return idx;
}

namespace {

// The mapping of rows [row_start, row_start + shape[0]) of a virtual dataset of rank
// shape.size() from the whole dataset `dataset` of the shard file `file`.
h5::VirtualMapping rows_from(int64_t row_start, const std::vector<int64_t>& shape,
                             std::string file, std::string dataset) {
  h5::VirtualMapping m{std::move(file), std::move(dataset), std::vector<int64_t>(shape.size(), 0),
                       shape, true};
  if (!shape.empty()) m.start[0] = row_start;
  return m;
}

// Creates the virtual dataset `path` of `dtype` and global `shape`, tagged with its dtype.
void create_virtual_dataset(h5::File& file, const std::string& path, at::ScalarType dtype,
                            const std::vector<int64_t>& shape,
                            const std::vector<h5::VirtualMapping>& maps) {
  h5::Dataset dset = h5::create_virtual_dataset(file, path, h5::datatype_for(dtype), shape, maps);
  dset.set_string_attr("dtype", h5::dtype_name(dtype));
}

}  // namespace

void stamp_index(CheckpointIndex& index) {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  index.created = buf;
  // MPI_Get_library_version may be called before MPI_Init (MPI-3), e.g. by dtrain ckpt.
  char mpi[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
  int len = 0;
  MPI_Get_library_version(mpi, &len);
  std::string mpi_line(mpi, static_cast<size_t>(len));
  mpi_line = mpi_line.substr(0, mpi_line.find_first_of(",\n"));
  index.versions = {{"dtrain", DTRAIN_VERSION},
                    {"torch", TORCH_VERSION},
                    {"hdf5", h5::library_version()},
                    {"mpi", mpi_line}};
}

CheckpointIndex plan_index(const CollectedState& state, const std::vector<Piece>& plan,
                           int world_size, int64_t iteration) {
  CheckpointIndex idx = index_skeleton(state, world_size, iteration);
  for (const auto& p : plan) {
    TensorRecord& t = idx.tensors.at(p.tensor);
    std::vector<int64_t> shape = t.shape;
    if (!shape.empty()) shape[0] = p.row_count;
    t.pieces.push_back(PieceRecord{p.shard, p.row_start, p.row_count, p.bytes, 0, shape});
  }
  return idx;
}

namespace {

void create_tensor_datasets(h5::File& file, const std::string& path, const TensorRecord& t,
                            int world_size) {
  const at::ScalarType dtype = dtype_from_name(t.dtype, path);
  if (!t.per_rank) {
    std::vector<h5::VirtualMapping> maps;
    for (const auto& p : t.pieces) {
      maps.push_back(
          rows_from(p.row_start, p.shape, shard_file_name(p.shard, world_size), "/" + t.name));
    }
    create_virtual_dataset(file, "/" + t.name, dtype, t.shape, maps);
    return;
  }
  for (const auto& p : t.pieces) {
    create_virtual_dataset(file, fmt::format("/ranks/{:05d}/{}", p.shard, t.name), dtype, p.shape,
                           {rows_from(0, p.shape, shard_file_name(p.shard, world_size), "/" + t.name)});
  }
}

}  // namespace

namespace {

// What begin_index_file writes besides the virtual datasets: the root attributes,
// /dtrain/config_yaml and the scalars.
void stamp_index_file(h5::File& file, const CheckpointIndex& planned, const std::string& config_yaml) {
  file.set_string_attr("format", kFormatName);
  file.set_int_attr("format_version", planned.format_version);
  file.set_int_attr("iteration", planned.iteration);
  file.set_int_attr("world_size", planned.world_size);
  file.set_string_attr("created", planned.created);
  for (const auto& [k, v] : planned.versions) file.set_string_attr(k + "_version", v);
  file.write_string("/dtrain/config_yaml", config_yaml);
  for (const auto& [name, value] : planned.scalars) {
    if (auto i = std::get_if<int64_t>(&value)) {
      file.write_tensor(name, at::scalar_tensor(*i, at::kLong));
    } else if (auto d = std::get_if<double>(&value)) {
      file.write_tensor(name, at::scalar_tensor(*d, at::kDouble));
    } else if (auto s = std::get_if<std::string>(&value)) {
      file.write_string(name, *s);
    }
  }
}

// A virtual dataset for each replicated tensor of `planned`.
void add_replicated_mappings(h5::File& file, const std::string& path, const CheckpointIndex& planned) {
  for (const auto& t : planned.tensors) {
    if (!t.per_rank) create_tensor_datasets(file, path, t, planned.world_size);
  }
}

}  // namespace

void begin_index_file(const std::string& dir, const CheckpointIndex& planned, const std::string& config_yaml,
                      const std::string* mappings_image) {
  as_checkpoint_error([&] {
    const std::string path = dir + "/" + kIndexFile;
    if (mappings_image != nullptr) {
      as_checkpoint_error([&] { Env::posix().write_new_file(path, *mappings_image); },
                          [&] { return fmt::format("writing '{}'", path); });
      h5::File file = h5::File::open(path, h5::OpenMode::kReadWrite);
      stamp_index_file(file, planned, config_yaml);
      file.close();
      return;
    }
    h5::FileOptions options;
    options.overwrite = false;
    h5::File file = h5::File::create(path, options);
    stamp_index_file(file, planned, config_yaml);
    add_replicated_mappings(file, path, planned);
    file.close();
  });
}

std::string mapping_difference(const CheckpointIndex& a, const CheckpointIndex& b) {
  if (a.world_size != b.world_size) return "the world size";
  auto replicated = [](const CheckpointIndex& index) {
    std::vector<const TensorRecord*> out;
    for (const auto& t : index.tensors) {
      if (!t.per_rank) out.push_back(&t);
    }
    return out;
  };
  const std::vector<const TensorRecord*> in_a = replicated(a), in_b = replicated(b);
  for (size_t k = 0; k < in_b.size(); ++k) {
    const TensorRecord& t = *in_b[k];
    if (k >= in_a.size()) return fmt::format("tensor '{}'", t.name);
    const TensorRecord& p = *in_a[k];
    bool same = p.name == t.name && p.dtype == t.dtype && p.shape == t.shape && p.pieces.size() == t.pieces.size();
    for (size_t i = 0; same && i < t.pieces.size(); ++i) {
      same = p.pieces[i].shard == t.pieces[i].shard && p.pieces[i].row_start == t.pieces[i].row_start &&
             p.pieces[i].shape == t.pieces[i].shape;
    }
    if (!same) return fmt::format("tensor '{}'", t.name);
  }
  return in_a.size() == in_b.size() ? "" : "the number of tensors";
}

std::string index_mappings_image(const std::string& scratch_path, const CheckpointIndex& planned) {
  return as_checkpoint_error([&] {
    fs::remove_quietly(scratch_path);
    std::string image;
    try {
      h5::FileOptions options;
      options.overwrite = false;  // removed above: whatever is there now is not ours to truncate
      h5::File file = h5::File::create(scratch_path, options);
      add_replicated_mappings(file, scratch_path, planned);
      file.close();
      image = fs::read_file(scratch_path);
    } catch (const Error& e) {
      fs::remove_quietly(scratch_path);
      if (dynamic_cast<const CheckpointError*>(&e) != nullptr) throw;
      throw CheckpointError(fmt::format("making the virtual datasets of checkpoint.h5 at '{}': {}",
                                        scratch_path, e.what()));
    } catch (...) {
      fs::remove_quietly(scratch_path);
      throw;
    }
    fs::remove_quietly(scratch_path);
    return image;
  });
}

void finish_index_file(const std::string& dir, const CheckpointIndex& planned,
                       const CheckpointIndex& index, Env& env) {
  const std::string path = dir + "/" + kIndexFile;
  // The virtual datasets written by begin_index_file must map what the shards hold.
  auto mapping_differs = [&]() -> std::string {
    if (planned.world_size != index.world_size || planned.iteration != index.iteration ||
        planned.created != index.created || planned.versions != index.versions) {
      return "the attributes";
    }
    return mapping_difference(planned, index);
  }();
  DTRAIN_CHECK_T(CheckpointError, mapping_differs.empty(),
                 "internal: '{}' was begun for a layout that differs from what the shards "
                 "hold ({})",
                 path, mapping_differs);
  // Reopened rather than kept open since begin_index_file: closing a file whose
  // virtual datasets were made in this session costs ~10 ms more here.
  as_checkpoint_error([&] {
    h5::File file = h5::File::open(path, h5::OpenMode::kReadWrite);
    for (const auto& t : index.tensors) {
      if (t.per_rank) create_tensor_datasets(file, path, t, index.world_size);
    }
    file.write_string(kIndexDataset, index.to_json(), h5::Group::StringLength::kFixed);
    file.close();
  });
  env.sync(path);
}

void write_index_file(const std::string& dir, const CheckpointIndex& index,
                      const std::string& config_yaml, Env& env) {
  CheckpointIndex planned = index;
  planned.tensors.erase(std::remove_if(planned.tensors.begin(), planned.tensors.end(),
                                       [](const TensorRecord& t) { return t.per_rank; }),
                        planned.tensors.end());
  begin_index_file(dir, planned, config_yaml);
  finish_index_file(dir, planned, index, env);
}

bool check_own_file(const std::string& path, const std::string& dir, bool allow_symlink) {
  std::error_code ec;
  const auto st = std::filesystem::symlink_status(path, ec);
  if (!ec && allow_symlink && st.type() == std::filesystem::file_type::symlink) {
    DTRAIN_CHECK_T(CheckpointError, std::filesystem::status(path, ec).type() ==
                                        std::filesystem::file_type::regular && !ec,
                   "'{}' is a symbolic link to something that is not a regular file", path);
    return true;
  }
  DTRAIN_CHECK_T(CheckpointError, !ec && st.type() == std::filesystem::file_type::regular,
                 "'{}' is {}, not a regular file of checkpoint '{}' (a checkpoint reads only its "
                 "own files)", path,
                 ec ? "unreadable"
                    : st.type() == std::filesystem::file_type::symlink ? "a symbolic link"
                                                                       : "a special file",
                 dir);
  return false;
}

std::string read_index_text(const std::string& dir) {
  const std::string path = dir + "/" + kIndexFile;
  DTRAIN_CHECK_T(CheckpointError, std::filesystem::exists(path),
                 "'{}' is not a checkpoint: '{}' is missing", dir, kIndexFile);
  check_own_file(path, dir);
  return as_checkpoint_error([&] {
    h5::File file = h5::File::open(path);
    DTRAIN_CHECK_T(CheckpointError, file.has_link(kIndexDataset),
                   "'{}' is not a dtrain checkpoint index: no '{}' dataset", path, kIndexDataset);
    return file.open_own_dataset(kIndexDataset).read_string();
  });
}

at::Tensor empty_tensor_for(const TensorRecord& record, const std::vector<int64_t>& shape,
                            const std::string& dir) {
  const at::ScalarType dtype = dtype_from_name(record.dtype, dir);
  auto fail = [&](const std::string& why) {
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;  // validated by CheckpointIndex: no overflow
    return CheckpointError(fmt::format(
        "cannot allocate {} bytes for tensor '{}' (shape [{}], {}) of checkpoint '{}': {}",
        numel * static_cast<int64_t>(c10::elementSize(dtype)), record.name,
        fmt::join(shape, ", "), record.dtype, dir, why));
  };
  try {
    return at::empty(shape, at::TensorOptions().dtype(dtype));
  } catch (const c10::Error& e) {
    throw fail(e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    throw fail("out of memory");
  }
}

}  // namespace dtrain::checkpoint
