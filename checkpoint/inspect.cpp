// Reading whole tensors of a checkpoint directory and verifying it (see inspect.h).
#include "checkpoint/inspect.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "checkpoint/h5_boundary.h"
#include "runtime/base/error.h"
#include "runtime/h5/h5.h"

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

// The mapping create_tensor_datasets (format.cpp) writes for piece `p` of `t`, or
// nothing for an empty piece of a tensor that has axes (HDF5 cannot map no elements).
std::optional<h5::VirtualMapping> expected_mapping(const TensorRecord& t, const PieceRecord& p,
                                                   int world_size) {
  const std::vector<int64_t>& shape = t.per_rank ? p.shape : t.shape;
  int64_t numel = 1;
  for (int64_t d : p.shape) numel *= d;  // validated: no overflow
  if (!shape.empty() && numel == 0) return std::nullopt;
  h5::VirtualMapping m{shard_file_name(p.shard, world_size), "/" + t.name,
                       std::vector<int64_t>(shape.size(), 0), p.shape, true};
  if (!t.per_rank && !shape.empty()) m.start[0] = p.row_start;
  return m;
}

std::string describe(const std::vector<h5::VirtualMapping>& maps) {
  std::vector<std::string> parts;
  for (const auto& m : maps) {
    parts.push_back(fmt::format("{}:{}{} -> [{}]+[{}]", m.file, m.dataset,
                                m.source_whole ? "" : " (part of it)", fmt::join(m.start, ","),
                                fmt::join(m.count, ",")));
  }
  return some_names(parts);
}

// Checks one virtual dataset of checkpoint.h5: reached through hard links, of the
// index's shape, mapping exactly `expected` (h5py reads through these mappings, so a
// remapped one would show other data than dtrain loads).
void check_virtual_dataset(const h5::File& file, const std::string& vpath, const TensorRecord& t,
                           const std::vector<int64_t>& shape,
                           std::vector<h5::VirtualMapping> expected,
                           std::vector<std::string>& problems) {
  const std::string where = fmt::format("'{}': virtual dataset '{}' of tensor '{}'",
                                        file.file_name(), vpath, t.name);
  if (!file.has_link(vpath)) {
    problems.push_back(fmt::format("'{}' has no virtual dataset '{}' for tensor '{}'",
                                   file.file_name(), vpath, t.name));
    return;
  }
  try {
    file.require_hard_links(vpath);
    const std::vector<int64_t> actual_shape = file.open_dataset(vpath).shape();
    if (expected.empty() && actual_shape == shape) return;  // no elements: nothing to map
    std::vector<h5::VirtualMapping> actual = h5::virtual_mappings(file, vpath);
    if (actual_shape != shape) {
      problems.push_back(fmt::format("{} has shape [{}], the index says [{}]", where,
                                     fmt::join(actual_shape, ", "), fmt::join(shape, ", ")));
    }
    auto by_start = [](const h5::VirtualMapping& a, const h5::VirtualMapping& b) {
      return std::tie(a.start, a.file, a.dataset) < std::tie(b.start, b.file, b.dataset);
    };
    std::sort(actual.begin(), actual.end(), by_start);
    std::sort(expected.begin(), expected.end(), by_start);
    if (actual != expected) {
      problems.push_back(fmt::format("{} maps {} but the index names {} (remapped: HDF5 tools "
                                     "would read other data than dtrain loads)",
                                     where, describe(actual), describe(expected)));
    }
  } catch (const std::exception& e) {
    problems.push_back(fmt::format("{}: {}", where, e.what()));
  }
}

// Checks that checkpoint.h5 has the virtual dataset of every tensor (replicated: whole;
// per-rank: one per rank), which lets h5py read whole tensors without dtrain, and that
// each maps exactly the pieces the index names.
void check_virtual_datasets(const std::string& dir, const CheckpointIndex& index,
                            std::vector<std::string>& problems) {
  try {
    h5::File file = h5::File::open(dir + "/" + kIndexFile);
    for (const auto& t : index.tensors) {
      if (t.per_rank) {
        for (const auto& p : t.pieces) {
          std::vector<h5::VirtualMapping> expected;
          if (auto m = expected_mapping(t, p, index.world_size)) expected.push_back(*m);
          check_virtual_dataset(file, "/" + per_rank_path(p.shard, t.name), t, p.shape,
                                std::move(expected), problems);
        }
        continue;
      }
      std::vector<h5::VirtualMapping> expected;
      for (const auto& p : t.pieces) {
        if (auto m = expected_mapping(t, p, index.world_size)) expected.push_back(*m);
      }
      check_virtual_dataset(file, "/" + t.name, t, t.shape, std::move(expected), problems);
    }
  } catch (const std::exception& e) {
    problems.push_back(e.what());
  }
}

}  // namespace

CheckpointIndex load_index(const std::string& dir) {
  return CheckpointIndex::from_json(read_index_text(dir), dir + "/" + kIndexFile);
}

std::string read_config_yaml(const std::string& dir) {
  return as_checkpoint_error([&] {
    h5::File file = h5::File::open(dir + "/" + kIndexFile);
    const char* kConfig = "/dtrain/config_yaml";
    return file.has_link(kConfig) ? file.open_own_dataset(kConfig).read_string() : "";
  });
}

std::string per_rank_path(int rank, const std::string& name) {
  return fmt::format("ranks/{:05d}/{}", rank, name);
}

at::Tensor read_piece_tensor(ShardReader& reader, const TensorRecord& record,
                             const PieceRecord& piece, const std::string& dir) {
  at::Tensor dst = empty_tensor_for(record, piece.shape, dir);
  reader.read_piece(record, piece, dst);
  return dst;
}

at::Tensor read_full_tensor(ShardReader& reader, const TensorRecord& record,
                            const std::string& dir) {
  at::Tensor full = empty_tensor_for(record, record.shape, dir);
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
  // Every loop here is bounded by what exists (pieces in the index, files in the
  // directory), not by the index's world_size alone.
  std::set<int> present;
  for (const std::string& name : shard_files_in(dir)) {
    int r = -1, n = -1;
    if (std::sscanf(name.c_str(), "shard-%d-of-%d.h5", &r, &n) == 2 && n == index.world_size &&
        r >= 0 && r < n && name == shard_file_name(r, n)) {
      present.insert(r);
    }
  }
  std::set<int> to_check = present;
  for (const auto& [shard, names] : held) to_check.insert(shard);
  std::set<int> unusable;
  for (int r : to_check) {
    if (!in_scope(r)) continue;
    const std::string path = dir + "/" + shard_file_name(r, index.world_size);
    const std::string holds = held[r].empty() ? std::string("no tensor pieces")
                                              : "pieces of " + some_names(held[r]);
    if (!present.count(r)) {
      problems.push_back(fmt::format("shard file '{}' is missing (it holds {})", path, holds));
      unusable.insert(r);
      continue;
    }
    try {
      check_own_file(path, dir);
      h5::File::open(path).close();
    } catch (const std::exception& e) {
      problems.push_back(fmt::format("shard file '{}' cannot be opened (it holds {}): {}", path,
                                     holds, e.what()));
      unusable.insert(r);
    }
  }
  // Shards that hold no piece and are not there: counted, not listed one by one.
  const int64_t absent = index.world_size - static_cast<int64_t>(to_check.size());
  if (only_shard < 0 && absent > 0) {
    problems.push_back(fmt::format("{} of the {} shard files (holding no tensor pieces) are "
                                   "missing from '{}'", absent, index.world_size, dir));
  } else if (only_shard >= 0 && !to_check.count(only_shard) && only_shard < index.world_size) {
    problems.push_back(fmt::format("shard file '{}/{}' is missing (it holds no tensor pieces)",
                                   dir, shard_file_name(only_shard, index.world_size)));
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

std::vector<std::string> capped_problems(const std::vector<std::string>& problems,
                                         size_t shown) {
  if (problems.size() <= shown) return problems;
  std::vector<std::string> out(problems.begin(), problems.begin() + static_cast<ptrdiff_t>(shown));
  out.push_back(fmt::format("... and {} more problems ({} in all)", problems.size() - shown,
                            problems.size()));
  return out;
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
