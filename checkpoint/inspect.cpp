// Reading whole tensors of a checkpoint directory and verifying it (see inspect.h).
#include "checkpoint/inspect.h"

#include <algorithm>
#include <exception>
#include <filesystem>
#include <set>
#include <utility>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "checkpoint/h5/h5.h"
#include "runtime/base/error.h"

namespace dtrain::checkpoint {
namespace stdfs = std::filesystem;

namespace {

// "a, b, c and 4 more" of the tensor names.
std::string some_names(const std::vector<std::string>& names) {
  constexpr size_t kShown = 4;
  std::vector<std::string> shown(names.begin(), names.begin() + std::min(kShown, names.size()));
  std::string s = fmt::format("{}", fmt::join(shown, ", "));
  if (names.size() > kShown) s += fmt::format(" and {} more", names.size() - kShown);
  return s;
}

std::vector<std::string> shard_files_in(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("shard-", 0) == 0) names.push_back(n);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Checks the index file: present, a dtrain checkpoint of this format version, parseable,
// attributes consistent with the index. Appends problems; returns whether it can be used.
bool check_index(const std::string& dir, CheckpointIndex* index, std::vector<std::string>& problems) {
  const std::string path = dir + "/" + kIndexFile;
  if (!stdfs::exists(path)) {
    const auto shards = shard_files_in(dir);
    problems.push_back(fmt::format(
        "the index '{}' is missing{}", path,
        shards.empty() ? std::string()
                       : fmt::format(" (shard files present: {}; the save never committed or "
                                     "the index was deleted)", some_names(shards))));
    return false;
  }
  int64_t attr_world = -1, attr_iteration = 0;
  try {
    h5::File file = h5::File::open(path);
    const std::string format = file.has_attr("format") ? file.get_string_attr("format") : "";
    if (format != kFormatName) {
      problems.push_back(fmt::format("'{}' is not a dtrain checkpoint index: its 'format' "
                                     "attribute is '{}', expected '{}'",
                                     path, format, kFormatName));
      return false;
    }
    if (file.has_attr("format_version")) {
      const int64_t version = file.get_int_attr("format_version");
      if (version != kFormatVersion) {
        problems.push_back(fmt::format("'{}': checkpoint format version {} is not supported "
                                       "(this dtrain reads version {})",
                                       path, version, kFormatVersion));
        return false;
      }
    }
    if (file.has_attr("world_size")) attr_world = file.get_int_attr("world_size");
    if (file.has_attr("iteration")) attr_iteration = file.get_int_attr("iteration");
    file.close();
    *index = load_index(dir);
  } catch (const std::exception& e) {
    problems.push_back(e.what());
    return false;
  }
  if (attr_world != index->world_size || attr_iteration != index->iteration) {
    problems.push_back(fmt::format("'{}': root attributes (world_size {}, iteration {}) disagree "
                                   "with the index (world_size {}, iteration {})",
                                   path, attr_world, attr_iteration, index->world_size,
                                   index->iteration));
  }
  return true;
}

// Checks that checkpoint.h5 has the virtual dataset of every tensor (replicated: whole;
// per-rank: one per rank), which lets h5py read whole tensors without dtrain.
void check_virtual_datasets(const std::string& dir, const CheckpointIndex& index,
                            std::vector<std::string>& problems) {
  try {
    h5::File file = h5::File::open(dir + "/" + kIndexFile);
    for (const auto& t : index.tensors) {
      std::vector<std::string> paths;
      if (!t.per_rank) paths.push_back("/" + t.name);
      for (const auto& p : t.pieces) {
        if (t.per_rank) paths.push_back("/" + per_rank_path(p.shard, t.name));
      }
      for (const auto& vpath : paths) {
        if (!file.exists(vpath)) {
          problems.push_back(fmt::format("'{}/{}' has no virtual dataset '{}' for tensor '{}'",
                                         dir, kIndexFile, vpath, t.name));
        }
      }
    }
  } catch (const std::exception& e) {
    problems.push_back(e.what());
  }
}

}  // namespace

CheckpointIndex load_index(const std::string& dir) {
  return CheckpointIndex::from_json(read_index_text(dir), dir + "/" + kIndexFile);
}

std::string per_rank_path(int rank, const std::string& name) {
  return fmt::format("ranks/{:05d}/{}", rank, name);
}

at::Tensor read_piece_tensor(ShardReader& reader, const TensorRecord& record,
                             const PieceRecord& piece, const std::string& dir) {
  at::Tensor dst =
      at::empty(piece.shape, at::TensorOptions().dtype(dtype_from_name(record.dtype, dir)));
  reader.read_piece(record, piece, dst);
  return dst;
}

at::Tensor read_full_tensor(ShardReader& reader, const TensorRecord& record,
                            const std::string& dir) {
  at::Tensor full =
      at::empty(record.shape, at::TensorOptions().dtype(dtype_from_name(record.dtype, dir)));
  for (const auto& p : record.pieces) {
    // Pieces are row ranges: each reads straight into its (contiguous) rows of `full`.
    at::Tensor dst = full.dim() == 0 ? full : full.narrow(0, p.row_start, p.row_count);
    reader.read_piece(record, p, dst);
  }
  return full;
}

std::map<std::string, at::Tensor> read_all_tensors(const std::string& dir) {
  const CheckpointIndex index = load_index(dir);
  ShardReader reader(dir, index.world_size);
  std::map<std::string, at::Tensor> out;
  for (const auto& t : index.tensors) {
    if (!t.per_rank) {
      out[t.name] = read_full_tensor(reader, t, dir);
      continue;
    }
    for (const auto& p : t.pieces) {
      out[per_rank_path(p.shard, t.name)] = read_piece_tensor(reader, t, p, dir);
    }
  }
  return out;
}

std::vector<std::string> verify_shards(const std::string& dir, const CheckpointIndex& index,
                                       int only_shard, VerifyStats* stats) {
  VerifyStats unused;
  if (stats == nullptr) stats = &unused;
  auto in_scope = [&](int shard) { return only_shard < 0 || shard == only_shard; };
  std::vector<std::string> problems;

  // Shard files: each must exist and open; otherwise one problem for the file, naming
  // the tensors it holds, instead of one per piece.
  std::map<int, std::vector<std::string>> held;
  for (const auto& t : index.tensors) {
    for (const auto& p : t.pieces) {
      auto& names = held[p.shard];
      if (names.empty() || names.back() != t.name) names.push_back(t.name);
    }
  }
  std::set<int> unusable;
  for (int r = 0; r < index.world_size; ++r) {
    if (!in_scope(r)) continue;
    const std::string path = dir + "/" + shard_file_name(r, index.world_size);
    const std::string holds = held[r].empty() ? std::string("no tensor pieces")
                                              : "pieces of " + some_names(held[r]);
    if (!stdfs::exists(path)) {
      problems.push_back(fmt::format("shard file '{}' is missing (it holds {})", path, holds));
      unusable.insert(r);
      continue;
    }
    try {
      h5::File::open(path).close();
    } catch (const std::exception& e) {
      problems.push_back(fmt::format("shard file '{}' cannot be opened (it holds {}): {}", path,
                                     holds, e.what()));
      unusable.insert(r);
    }
  }

  // Every piece: shape and checksum.
  ShardReader reader(dir, index.world_size);
  for (const auto& t : index.tensors) {
    bool counted = only_shard < 0;
    if (counted) ++stats->tensors;
    for (const auto& p : t.pieces) {
      if (!in_scope(p.shard)) continue;
      if (!counted) {
        ++stats->tensors;
        counted = true;
      }
      if (unusable.count(p.shard)) continue;
      try {
        read_piece_tensor(reader, t, p, dir);
        ++stats->pieces;
        stats->bytes += p.bytes;
      } catch (const std::exception& e) {
        std::string what = e.what();
        if (what.find(t.name) == std::string::npos) {
          what = fmt::format("tensor '{}' rows [{}, {}) in '{}': {}", t.name, p.row_start,
                             p.row_start + p.row_count, shard_file_name(p.shard, index.world_size),
                             what);
        }
        problems.push_back(what);
      }
    }
  }
  return problems;
}

std::vector<std::string> verify_checkpoint(const std::string& dir, VerifyStats* stats) {
  VerifyStats unused;
  if (stats == nullptr) stats = &unused;
  std::vector<std::string> problems;
  try {
    CheckpointIndex index;
    if (!check_index(dir, &index, problems)) return problems;
    stats->index_ok = true;
    stats->world_size = index.world_size;
    stats->iteration = index.iteration;
    for (auto& p : verify_shards(dir, index, -1, stats)) problems.push_back(std::move(p));
    check_virtual_datasets(dir, index, problems);
  } catch (const std::exception& e) {
    problems.push_back(e.what());  // e.g. out of memory for a huge piece
  }
  return problems;
}

}  // namespace dtrain::checkpoint
