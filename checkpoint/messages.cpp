// Serialization of the checkpointer's control messages (see messages.h).
#include "checkpoint/messages.h"

#include <cstring>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/base/error.h"
#include "runtime/h5/h5.h"

namespace dtrain::checkpoint {
namespace {

// Runs `fn` (a parse of `bytes`), turning any failure into a CheckpointError naming
// the message and the rank it came from.
template <typename Fn>
auto decoding(const char* type, int from_rank, Fn&& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    throw CheckpointError(fmt::format("internal: malformed {} message from rank {}: {}", type,
                                      from_rank, e.what()));
  }
}

}  // namespace

std::string Visibility::encode() const {
  return nlohmann::json{{"readable", readable}, {"files", files}}.dump();
}

Visibility Visibility::decode(const std::string& bytes, int from_rank) {
  return decoding("visibility", from_rank, [&] {
    const auto j = nlohmann::json::parse(bytes);
    Visibility v;
    v.readable = j.at("readable").get<bool>();
    v.files = j.at("files").get<std::string>();
    return v;
  });
}

std::string ShardReport::encode() const {
  nlohmann::json shards_json = nlohmann::json::object();
  for (const auto& [shard, manifest] : shards) shards_json[std::to_string(shard)] = manifest.to_json_value();
  return nlohmann::json{{"error", error}, {"write_seconds", write_seconds}, {"shards", shards_json}}.dump();
}

ShardReport ShardReport::decode(const std::string& bytes, int from_rank) {
  return decoding("shard report", from_rank, [&] {
    const auto j = nlohmann::json::parse(bytes);
    ShardReport r;
    r.error = j.at("error").get<std::string>();
    r.write_seconds = j.at("write_seconds").get<double>();
    for (const auto& [shard, manifest] : j.at("shards").items()) {
      r.shards[std::stoi(shard)] =
          ShardManifest::from_json_value(manifest, fmt::format("rank {} (shard {})", from_rank, shard));
    }
    return r;
  });
}

std::string TensorPack::encode() const {
  nlohmann::json header = nlohmann::json::array();
  std::string data;
  for (const auto& [name, t] : tensors) {
    const at::Tensor c = t.cpu().contiguous();
    header.push_back({{"name", name}, {"dtype", h5::dtype_name(c.scalar_type())},
                      {"shape", c.sizes().vec()}});
    // An empty tensor may have no storage at all (a null data pointer).
    if (c.numel() > 0) data.append(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  }
  return header.dump() + "\n" + data;
}

TensorPack TensorPack::decode(const std::string& bytes, int from_rank) {
  return decoding("tensor pack", from_rank, [&] {
    const size_t eol = bytes.find('\n');
    DTRAIN_CHECK_T(CheckpointError, eol != std::string::npos, "no header line");
    const auto header = nlohmann::json::parse(bytes.substr(0, eol));
    TensorPack pack;
    size_t offset = eol + 1;
    for (const auto& e : header) {
      const std::string name = e.at("name").get<std::string>();
      at::Tensor t = at::empty(e.at("shape").get<std::vector<int64_t>>(),
                               at::TensorOptions().dtype(dtype_from_name(
                                   e.at("dtype").get<std::string>(), "tensor pack")));
      const size_t n = static_cast<size_t>(t.numel()) * t.element_size();
      DTRAIN_CHECK_T(CheckpointError, n <= bytes.size() - offset, "too short for '{}'", name);
      if (n > 0) std::memcpy(t.data_ptr(), bytes.data() + offset, n);
      offset += n;
      pack.tensors.emplace_back(name, std::move(t));
    }
    return pack;
  });
}

std::string NameList::encode() const { return nlohmann::json(names).dump(); }

NameList NameList::decode(const std::string& bytes, int from_rank) {
  return decoding("name list", from_rank, [&] {
    return NameList{nlohmann::json::parse(bytes).get<std::vector<std::string>>()};
  });
}

}  // namespace dtrain::checkpoint
