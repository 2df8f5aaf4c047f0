// CheckpointIndex JSON (de)serialization and validation.
#include "checkpoint/index.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <set>

#include <c10/core/ScalarType.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "checkpoint/format.h"
#include "runtime/base/error.h"

namespace dtrain::checkpoint {

using nlohmann::json;

std::string shard_file_name(int rank, int world_size) {
  return fmt::format("shard-{:05d}-of-{:05d}.h5", rank, world_size);
}

std::string hex64(uint64_t v) { return fmt::format("{:016x}", v); }

const TensorRecord* CheckpointIndex::find_tensor(const std::string& name) const {
  for (const auto& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::string CheckpointIndex::to_json() const {
  // The tensors (most of a large index, and a commit waits for this) are written out
  // directly, ~3x faster than through a json tree; strings are escaped by nlohmann::json.
  auto quoted = [](const std::string& s) { return json(s).dump(); };
  fmt::memory_buffer out;
  auto it = std::back_inserter(out);
  fmt::format_to(it,
                 R"({{"format":{},"format_version":{},"world_size":{},"iteration":{},)"
                 R"("created":{},"versions":{},"tensors":[)",
                 quoted(kFormatName), format_version, world_size, iteration, quoted(created),
                 json(versions).dump());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorRecord& t = tensors[i];
    fmt::format_to(it, R"({}{{"name":{},"dtype":{},"shape":[{}],"per_rank":{},"pieces":[)",
                   i ? "," : "", quoted(t.name), quoted(t.dtype), fmt::join(t.shape, ","),
                   t.per_rank);
    for (size_t k = 0; k < t.pieces.size(); ++k) {
      const PieceRecord& p = t.pieces[k];
      fmt::format_to(it,
                     R"({}{{"shard":{},"row_start":{},"row_count":{},"bytes":{},)"
                     R"("xxh64":"{:016x}","shape":[{}]}})",
                     k ? "," : "", p.shard, p.row_start, p.row_count, p.bytes, p.xxh64,
                     fmt::join(p.shape, ","));
    }
    fmt::format_to(it, "]}}");
  }
  json sc = json::object();
  for (const auto& [k, v] : scalars) {
    if (auto i = std::get_if<int64_t>(&v)) {
      sc[k] = {{"type", "int"}, {"value", *i}};
    } else if (auto d = std::get_if<double>(&v)) {
      sc[k] = {{"type", "float"}, {"value", *d}};
    } else if (auto s = std::get_if<std::string>(&v)) {
      sc[k] = {{"type", "string"}, {"value", *s}};
    }
  }
  fmt::format_to(it, R"(],"scalars":{}}})", sc.dump());
  return fmt::to_string(out);
}

namespace {

// a * b, or nullopt when it overflows int64.
std::optional<int64_t> checked_mul(int64_t a, int64_t b) {
  int64_t out = 0;
  if (__builtin_mul_overflow(a, b, &out)) return std::nullopt;
  return out;
}

// Element count of `shape` (every extent >= 0), or nullopt when it overflows
// int64.
std::optional<int64_t> checked_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    auto next = checked_mul(n, d);
    if (!next) return std::nullopt;
    n = *next;
  }
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

// A tensor name is an HDF5 path below the file's root: "/"-separated, no empty,
// "." or ".." component, no NUL (HDF5 would cut the name there).
void check_tensor_name(const std::string& name, const std::string& origin) {
  auto fail = [&](const char* why) {
    throw CheckpointError(
        fmt::format("{}: tensor name {} {}", origin, nlohmann::json(name).dump(), why));
  };
  if (name.empty()) fail("is empty");
  if (name.size() > 4096) fail("is longer than 4096 bytes");
  if (name.find('\0') != std::string::npos) fail("contains a NUL byte (HDF5 would cut it there)");
  size_t start = 0;
  while (start <= name.size()) {
    const size_t slash = std::min(name.find('/', start), name.size());
    const std::string part = name.substr(start, slash - start);
    if (part.empty() || part == "." || part == "..")
      fail("has an empty, '.' or '..' path component");
    start = slash + 1;
  }
}

// Checks one piece of `t` against the tensor; the context names the tensor and
// shard.
void check_piece(const TensorRecord& t, const PieceRecord& p, int64_t element_size, int world_size,
                 const std::string& origin) {
  const std::string where =
      fmt::format("{}: tensor '{}': piece of shard {}", origin, t.name, p.shard);
  DTRAIN_CHECK_T(CheckpointError, p.shard >= 0 && p.shard < world_size,
                 "{}: tensor '{}' names shard {} of a {}-rank checkpoint", origin, t.name, p.shard,
                 world_size);
  DTRAIN_CHECK_T(CheckpointError, p.row_start >= 0 && p.row_count >= 0,
                 "{} has rows [{}, +{}): row_start and row_count must be >= 0", where, p.row_start,
                 p.row_count);
  // A piece's shape and byte count must agree with the tensor (a damaged index
  // must not make a load read or allocate the wrong amount).
  const auto numel = checked_numel(p.shape);
  const auto bytes = numel ? checked_mul(*numel, element_size) : std::nullopt;
  DTRAIN_CHECK_T(CheckpointError, bytes.has_value(),
                 "{} has shape {}: a negative extent or more than 2^63 bytes", where,
                 shape_str(p.shape));
  DTRAIN_CHECK_T(CheckpointError, p.bytes == *bytes,
                 "{} has shape {} ({} bytes) but records {} bytes", where, shape_str(p.shape),
                 *bytes, p.bytes);
  const int64_t own_rows = p.shape.empty() ? 1 : p.shape[0];
  if (t.per_rank) {
    DTRAIN_CHECK_T(CheckpointError, p.row_start == 0 && p.row_count == own_rows,
                   "{} (a per-rank value of shape {}) records rows [{}, +{}), "
                   "expected [0, +{})",
                   where, shape_str(p.shape), p.row_start, p.row_count, own_rows);
    return;
  }
  std::vector<int64_t> expected = t.shape;
  if (!expected.empty()) expected[0] = p.row_count;
  DTRAIN_CHECK_T(
      CheckpointError,
      p.shape == expected && (!t.shape.empty() || (p.row_start == 0 && p.row_count == 1)),
      "{}: tensor '{}' of shape {}: piece of shard {} (rows [{}, {})) has "
      "shape {}, "
      "expected {}",
      origin, t.name, shape_str(t.shape), p.shard, p.row_start, p.row_start + p.row_count,
      shape_str(p.shape), shape_str(expected));
}

// The pieces of a replicated tensor tile its first axis exactly, in order.
void check_tiling(const TensorRecord& t, const std::string& origin) {
  int64_t next = 0;
  const int64_t rows = t.shape.empty() ? 1 : t.shape[0];
  for (const auto& p : t.pieces) {
    DTRAIN_CHECK_T(CheckpointError, p.row_start == next,
                   "{}: tensor '{}': pieces do not tile rows (expected row {}, got {})", origin,
                   t.name, next, p.row_start);
    DTRAIN_CHECK_T(CheckpointError, !__builtin_add_overflow(next, p.row_count, &next),
                   "{}: tensor '{}': piece rows overflow", origin, t.name);
  }
  DTRAIN_CHECK_T(CheckpointError, next == rows || (rows == 0 && t.pieces.size() == 1),
                 "{}: tensor '{}': pieces cover {} of {} rows", origin, t.name, next, rows);
}

}  // namespace

void CheckpointIndex::validate(const std::string& origin) const {
  DTRAIN_CHECK_T(CheckpointError, format_version == kFormatVersion,
                 "{}: checkpoint format version {} is not supported (this dtrain reads "
                 "version {})",
                 origin, format_version, kFormatVersion);
  DTRAIN_CHECK_T(CheckpointError, world_size >= 1 && world_size <= kMaxWorldSize,
                 "{}: world_size is {}, expected 1 to {}", origin, world_size, kMaxWorldSize);
  std::set<std::string> names;
  for (const auto& t : tensors) {
    check_tensor_name(t.name, origin);
    DTRAIN_CHECK_T(CheckpointError, names.insert(t.name).second,
                   "{}: tensor '{}' appears twice in the index", origin, t.name);
    const at::ScalarType dtype =
        dtype_from_name(t.dtype, fmt::format("{}: tensor '{}'", origin, t.name));
    const int64_t element_size = static_cast<int64_t>(c10::elementSize(dtype));
    const auto numel = checked_numel(t.shape);
    DTRAIN_CHECK_T(CheckpointError, numel && checked_mul(*numel, element_size),
                   "{}: tensor '{}' has shape {}: a negative extent or more "
                   "than 2^63 bytes",
                   origin, t.name, shape_str(t.shape));
    std::set<int> shards;
    for (const auto& p : t.pieces) {
      check_piece(t, p, element_size, world_size, origin);
      DTRAIN_CHECK_T(CheckpointError, !t.per_rank || shards.insert(p.shard).second,
                     "{}: per-rank tensor '{}' has two values for shard {}", origin, t.name,
                     p.shard);
    }
    if (!t.per_rank) check_tiling(t, origin);
  }
}

namespace {

// `v` as an int64, or nullopt when it is not an integer or does not fit.
std::optional<int64_t> as_int64(const json& v) {
  if (!v.is_number_integer()) return std::nullopt;
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    return std::nullopt;
  }
  return v.get<int64_t>();
}

// The integer at `key` of `j`, which must lie in [lo, hi]; json's own get<int>
// would narrow 2^32+2 to 2.
int64_t int_field(const json& j, const char* key, int64_t lo, int64_t hi,
                  const std::string& where) {
  const json& v = j.at(key);
  const auto x = as_int64(v);
  DTRAIN_CHECK_T(CheckpointError, x && *x >= lo && *x <= hi,
                 "{}: '{}' is {}, expected an integer from {} to {}", where, key, v.dump(), lo, hi);
  return *x;
}

std::vector<int64_t> shape_field(const json& j, const std::string& where) {
  const json& v = j.at("shape");
  DTRAIN_CHECK_T(CheckpointError, v.is_array() && v.size() <= 64,
                 "{}: 'shape' is not an array of at most 64 extents", where);
  std::vector<int64_t> shape;
  for (const auto& d : v) {
    const auto x = as_int64(d);
    DTRAIN_CHECK_T(CheckpointError, x && *x >= 0,
                   "{}: shape {} has an extent that is not an integer >= 0", where, v.dump());
    shape.push_back(*x);
  }
  return shape;
}

// "xxh64" as written by hex64: exactly 16 hex digits.
uint64_t xxh64_field(const json& j, const std::string& where) {
  const std::string s = j.at("xxh64").get<std::string>();
  DTRAIN_CHECK_T(
      CheckpointError,
      s.size() == 16 && s.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos,
      "{}: 'xxh64' is {}, expected 16 hex digits", where, json(s).dump());
  return std::stoull(s, nullptr, 16);
}

PieceRecord piece_from_json(const json& pj, const std::string& where) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  PieceRecord p;
  p.shard = static_cast<int>(int_field(pj, "shard", 0, kMaxWorldSize - 1, where));
  p.row_start = int_field(pj, "row_start", 0, kMax, where);
  p.row_count = int_field(pj, "row_count", 0, kMax, where);
  p.bytes = int_field(pj, "bytes", 0, kMax, where);
  p.xxh64 = xxh64_field(pj, where);
  p.shape = shape_field(pj, where);
  return p;
}

}  // namespace

CheckpointIndex CheckpointIndex::from_json(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const std::exception& e) {
    throw CheckpointError(fmt::format("{}: index is not valid JSON: {}", origin, e.what()));
  }
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  CheckpointIndex idx;
  try {
    DTRAIN_CHECK_T(CheckpointError, j.is_object() && j.value("format", "") == kFormatName,
                   "{}: not a dtrain checkpoint index (format '{}')", origin,
                   j.is_object() ? j.value("format", "") : std::string());
    idx.format_version =
        static_cast<int>(int_field(j, "format_version", INT32_MIN, INT32_MAX, origin));
    // Checked before the rest is read: a newer format may differ in any field.
    DTRAIN_CHECK_T(CheckpointError, idx.format_version == kFormatVersion,
                   "{}: checkpoint format version {} is not supported (this dtrain reads "
                   "version {})",
                   origin, idx.format_version, kFormatVersion);
    idx.world_size = static_cast<int>(int_field(j, "world_size", 1, kMaxWorldSize, origin));
    idx.iteration = int_field(j, "iteration", -1, kMax, origin);
    idx.created = j.value("created", "");
    idx.versions = j.value("versions", std::map<std::string, std::string>{});
    for (const auto& tj : j.at("tensors")) {
      TensorRecord t;
      t.name = tj.at("name").get<std::string>();
      const std::string where = fmt::format("{}: tensor {}", origin, json(t.name).dump());
      t.dtype = tj.at("dtype").get<std::string>();
      t.shape = shape_field(tj, where);
      t.per_rank = tj.value("per_rank", false);
      for (const auto& pj : tj.at("pieces")) t.pieces.push_back(piece_from_json(pj, where));
      idx.tensors.push_back(std::move(t));
    }
    for (const auto &[k, v] : j.at("scalars").items()) {
      const std::string type = v.at("type").get<std::string>();
      if (type == "int") {
        idx.scalars[k] = int_field(v, "value", std::numeric_limits<int64_t>::min(), kMax,
                                   fmt::format("{}: scalar '{}'", origin, k));
      } else if (type == "float") {
        idx.scalars[k] = v.at("value").get<double>();
      } else if (type == "string") {
        idx.scalars[k] = v.at("value").get<std::string>();
      } else {
        throw CheckpointError(
            fmt::format("{}: scalar '{}' has unknown type '{}'", origin, k, type));
      }
    }
  } catch (const json::exception& e) {
    throw CheckpointError(fmt::format("{}: malformed index: {}", origin, e.what()));
  }
  idx.validate(origin);
  return idx;
}

}  // namespace dtrain::checkpoint
