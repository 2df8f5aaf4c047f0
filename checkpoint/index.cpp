// CheckpointIndex JSON (de)serialization and validation.
#include "checkpoint/index.h"

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

void CheckpointIndex::validate(const std::string& origin) const {
  DTRAIN_CHECK_T(CheckpointError, format_version == kFormatVersion,
                 "{}: checkpoint format version {} is not supported (this dtrain reads "
                 "version {})",
                 origin, format_version, kFormatVersion);
  DTRAIN_CHECK_T(CheckpointError, world_size >= 1, "{}: world_size is {}, expected >= 1", origin,
                 world_size);
  std::set<std::string> names;
  for (const auto& t : tensors) {
    DTRAIN_CHECK_T(CheckpointError, names.insert(t.name).second,
                   "{}: tensor '{}' appears twice in the index", origin, t.name);
    const at::ScalarType dtype =
        dtype_from_name(t.dtype, fmt::format("{}: tensor '{}'", origin, t.name));
    const int64_t element_size = static_cast<int64_t>(c10::elementSize(dtype));
    for (const auto& p : t.pieces) {
      DTRAIN_CHECK_T(CheckpointError, p.shard >= 0 && p.shard < world_size,
                     "{}: tensor '{}' names shard {} of a {}-rank checkpoint", origin, t.name,
                     p.shard, world_size);
      // A piece's shape and byte count must agree with the tensor (a damaged index
      // must not make a load read the wrong amount).
      int64_t numel = 1;
      for (int64_t d : p.shape) {
        DTRAIN_CHECK_T(CheckpointError, d >= 0,
                       "{}: tensor '{}': piece of shard {} has a negative extent in shape [{}]",
                       origin, t.name, p.shard, fmt::join(p.shape, ", "));
        numel *= d;
      }
      DTRAIN_CHECK_T(CheckpointError, p.bytes == numel * element_size,
                     "{}: tensor '{}': piece of shard {} has shape [{}] ({} bytes) but "
                     "records {} bytes", origin, t.name, p.shard, fmt::join(p.shape, ", "),
                     numel * element_size, p.bytes);
      if (!t.per_rank) {
        std::vector<int64_t> expected = t.shape;
        if (!expected.empty()) expected[0] = p.row_count;
        DTRAIN_CHECK_T(CheckpointError,
                       p.shape == expected && p.row_start >= 0 &&
                           (!t.shape.empty() || (p.row_start == 0 && p.row_count == 1)),
                       "{}: tensor '{}' of shape [{}]: piece of shard {} (rows [{}, {})) has "
                       "shape [{}], expected [{}]", origin, t.name, fmt::join(t.shape, ", "),
                       p.shard, p.row_start, p.row_start + p.row_count,
                       fmt::join(p.shape, ", "), fmt::join(expected, ", "));
      }
    }
    if (!t.per_rank) {
      // The pieces must tile the first axis exactly.
      int64_t next = 0;
      const int64_t rows = t.shape.empty() ? 1 : t.shape[0];
      for (const auto& p : t.pieces) {
        DTRAIN_CHECK_T(CheckpointError, p.row_start == next,
                       "{}: tensor '{}': pieces do not tile rows (expected row {}, got {})",
                       origin, t.name, next, p.row_start);
        next += p.row_count;
      }
      DTRAIN_CHECK_T(CheckpointError, next == rows || (rows == 0 && t.pieces.size() == 1),
                     "{}: tensor '{}': pieces cover {} of {} rows", origin, t.name, next, rows);
    }
  }
}

CheckpointIndex CheckpointIndex::from_json(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const std::exception& e) {
    throw CheckpointError(fmt::format("{}: index is not valid JSON: {}", origin, e.what()));
  }
  CheckpointIndex idx;
  try {
    DTRAIN_CHECK_T(CheckpointError, j.value("format", "") == kFormatName,
                   "{}: not a dtrain checkpoint index (format '{}')", origin,
                   j.value("format", ""));
    idx.format_version = j.at("format_version").get<int>();
    // Checked before the rest is read: a newer format may differ in any field.
    DTRAIN_CHECK_T(CheckpointError, idx.format_version == kFormatVersion,
                   "{}: checkpoint format version {} is not supported (this dtrain reads "
                   "version {})",
                   origin, idx.format_version, kFormatVersion);
    idx.world_size = j.at("world_size").get<int>();
    idx.iteration = j.at("iteration").get<int64_t>();
    idx.created = j.value("created", "");
    idx.versions = j.value("versions", std::map<std::string, std::string>{});
    for (const auto& tj : j.at("tensors")) {
      TensorRecord t;
      t.name = tj.at("name").get<std::string>();
      t.dtype = tj.at("dtype").get<std::string>();
      t.shape = tj.at("shape").get<std::vector<int64_t>>();
      t.per_rank = tj.value("per_rank", false);
      for (const auto& pj : tj.at("pieces")) {
        PieceRecord p;
        p.shard = pj.at("shard").get<int>();
        p.row_start = pj.at("row_start").get<int64_t>();
        p.row_count = pj.at("row_count").get<int64_t>();
        p.bytes = pj.at("bytes").get<int64_t>();
        p.xxh64 = std::stoull(pj.at("xxh64").get<std::string>(), nullptr, 16);
        p.shape = pj.at("shape").get<std::vector<int64_t>>();
        t.pieces.push_back(std::move(p));
      }
      idx.tensors.push_back(std::move(t));
    }
    for (const auto& [k, v] : j.at("scalars").items()) {
      const std::string type = v.at("type").get<std::string>();
      if (type == "int") {
        idx.scalars[k] = v.at("value").get<int64_t>();
      } else if (type == "float") {
        idx.scalars[k] = v.at("value").get<double>();
      } else if (type == "string") {
        idx.scalars[k] = v.at("value").get<std::string>();
      } else {
        throw CheckpointError(fmt::format("{}: scalar '{}' has unknown type '{}'", origin, k, type));
      }
    }
  } catch (const json::exception& e) {
    throw CheckpointError(fmt::format("{}: malformed index: {}", origin, e.what()));
  }
  idx.validate(origin);
  return idx;
}

}  // namespace dtrain::checkpoint
