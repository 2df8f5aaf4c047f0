// Interpreting foreign weight files (see weights.h).
#include "checkpoint/interop/weights.h"

#include <filesystem>

#include <fmt/format.h>

#include "checkpoint/interop/safetensors.h"
#include "checkpoint/interop/zip_archive.h"
#include "runtime/base/error.h"
#include "runtime/base/fs.h"

namespace dtrain::interop {
namespace {

std::optional<Scalar> scalar_of(const PyObject& v) {
  switch (v.type) {
    case PyType::kBool: case PyType::kInt: return Scalar{v.i};
    case PyType::kFloat: return Scalar{v.f};
    case PyType::kStr: return Scalar{v.str()};
    default: return std::nullopt;
  }
}

// Reads the model dict's entries: tensors by name; for the flat layout (the model dict
// is the whole file) numbers and strings become scalars.
void take_model(const PyObject& dict, bool flat, ForeignWeights& out) {
  std::map<std::string, size_t> seen;
  for (const auto& [k, v] : dict.entries) {
    if (k->type != PyType::kStr) {
      throw CheckpointError(fmt::format("'{}': a state dict key is a {}, not a string",
                                        out.origin, k->type_name()));
    }
    const std::string key = k->str();
    if (v->type == PyType::kTensor) {
      if (auto it = seen.find(key); it != seen.end()) {
        out.model[it->second].second = v->tensor;  // a repeated key: the later wins
      } else {
        seen[key] = out.model.size();
        out.model.emplace_back(key, v->tensor);
      }
    } else if (auto s = flat ? scalar_of(*v) : std::nullopt) {
      out.scalars[key] = *s;
    } else {
      out.skipped.push_back(fmt::format("'{}' is a {}, not a tensor", key, v->type_name()));
    }
  }
}

ForeignWeights interpret(std::shared_ptr<PickleFile> file, const std::string& origin) {
  ForeignWeights out;
  out.origin = origin;
  out.format = file->format;
  const PyObject& root = *file->root;
  if (root.type != PyType::kDict) {
    throw CheckpointError(fmt::format("'{}' holds a {}, not a dict of weights (a state dict or "
                                      "a detectron2 checkpoint)", origin, root.type_name()));
  }
  const PyObject* model = root.get("model");
  if (!model || model->type != PyType::kDict) model = root.get("state_dict");
  if (model && model->type == PyType::kDict) {
    take_model(*model, /*flat=*/false, out);
    for (const auto& [k, v] : root.entries) {
      if (k->type != PyType::kStr || v == model) continue;
      const std::string key = k->str();
      if (key == "optimizer" && v->type == PyType::kDict) {
        out.optimizer = v;
      } else if (key == "scheduler" && v->type == PyType::kDict) {
        out.scheduler = v;
      } else if (auto s = scalar_of(*v)) {
        out.scalars[key] = *s;
      } else {
        out.skipped.push_back(fmt::format("top-level '{}' ({}) is not read", key, v->type_name()));
      }
    }
  } else {
    take_model(root, /*flat=*/true, out);
  }
  if (auto it = out.scalars.find("iteration"); it != out.scalars.end()) {
    if (auto i = std::get_if<int64_t>(&it->second)) out.iteration = *i;
  }
  if (auto it = out.scalars.find("matching_heuristics"); it != out.scalars.end()) {
    if (auto i = std::get_if<int64_t>(&it->second)) out.matching_heuristics = *i != 0;
  }
  out.file = std::move(file);
  return out;
}

// safetensors: an 8-byte little-endian header length, then a JSON object.
bool looks_like_safetensors(const std::string& origin, const std::string& head) {
  return std::filesystem::path(origin).extension() == ".safetensors" ||
         (head.size() > 8 && head[8] == '{' && head[7] == '\0' && head[6] == '\0');
}

// Tensors and metadata of a safetensors file; a metadata "iteration" (what `dtrain ckpt
// export` writes) is read back as the iteration.
ForeignWeights from_safetensors(NamedTensors tensors, std::map<std::string, std::string> meta,
                                const std::string& origin) {
  ForeignWeights out;
  out.origin = origin;
  out.format = "safetensors";
  out.model = std::move(tensors);
  for (const auto& [k, v] : meta) out.scalars[k] = v;
  if (auto it = meta.find("iteration"); it != meta.end()) {
    char* end = nullptr;
    const long long i = std::strtoll(it->second.c_str(), &end, 10);
    if (!it->second.empty() && *end == '\0') out.iteration = i;
  }
  return out;
}

}  // namespace

ForeignWeights read_foreign_weights(const std::string& path) {
  if (looks_like_safetensors(path, read_file_head(path))) {
    std::map<std::string, std::string> meta;
    NamedTensors tensors = read_safetensors(path, &meta);
    return from_safetensors(std::move(tensors), std::move(meta), path);
  }
  auto file = std::make_shared<PickleFile>(read_pickle_file(path));
  return interpret(std::move(file), path);
}

ForeignWeights parse_foreign_weights(const std::string& bytes, const std::string& origin) {
  if (looks_like_safetensors(origin, bytes.substr(0, 16))) {
    std::map<std::string, std::string> meta;
    NamedTensors tensors = parse_safetensors(bytes, origin, &meta);
    return from_safetensors(std::move(tensors), std::move(meta), origin);
  }
  auto file = std::make_shared<PickleFile>(parse_pickle_bytes(bytes, origin));
  return interpret(std::move(file), origin);
}

std::string check_weights_file(const std::string& path, WeightsCheck depth) {
  try {
    const std::string head = read_file_head(path);
    if (ZipArchive::looks_like_zip(head)) {
      ZipArchive zip = ZipArchive::open_file(path);
      if (depth == WeightsCheck::kFull) {
        for (size_t i = 0; i < zip.entries().size(); ++i) zip.check_entry(i);
      }
    } else if (looks_like_safetensors(path, head)) {
      check_safetensors_layout(path);
    } else {
      read_foreign_weights(path);
    }
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool is_foreign_weights_path(const std::string& path) {
  const std::string ext = std::filesystem::path(path).extension().string();
  return ext == ".pt" || ext == ".pth" || ext == ".pkl" || ext == ".bin" ||
         ext == ".safetensors";
}

std::pair<std::string, bool> split_matching_query(const std::string& path) {
  const std::string query = "?matching_heuristics=";
  const size_t at = path.rfind(query);
  if (at == std::string::npos) return {path, false};
  const std::string value = path.substr(at + query.size());
  DTRAIN_CHECK_T(CheckpointError, value == "True" || value == "true" || value == "1" ||
                     value == "False" || value == "false" || value == "0",
                 "'{}': matching_heuristics must be True or False, got '{}'", path, value);
  return {path.substr(0, at), value == "True" || value == "true" || value == "1"};
}

}  // namespace dtrain::interop
