// PyTorch .pt state dict import/export (see torch_io.h).
#include "checkpoint/torch_io.h"

#include <ATen/core/Dict.h>
#include <ATen/core/ivalue.h>
#include <fmt/format.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include "runtime/base/error.h"
#include "runtime/base/fs.h"

namespace dtrain::checkpoint {

StateDict read_torch_state_dict(const std::string& path) {
  std::string bytes;
  try {
    bytes = fs::read_file(path);
  } catch (const std::exception& e) {
    throw CheckpointError(e.what());
  }
  return parse_torch_state_dict(bytes, path);
}

StateDict parse_torch_state_dict(const std::string& bytes, const std::string& path) {
  c10::IValue value;
  try {
    value = torch::jit::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
  } catch (const std::exception& e) {
    std::string what = e.what();
    const bool ordered = what.find("OrderedDict") != std::string::npos ||
                         bytes.find("collections\nOrderedDict") != std::string::npos;
    throw CheckpointError(fmt::format(
        "cannot read PyTorch file '{}': {}", path,
        ordered ? "it holds an OrderedDict (what model.state_dict() returns), which LibTorch "
                  "cannot unpickle; save it as a plain dict instead: "
                  "torch.save(dict(model.state_dict()), path)"
                : what.substr(0, what.find('\n'))));
  }
  if (value.isGenericDict()) {
    auto dict = value.toGenericDict();
    // detectron2 checkpoints nest the weights under "model".
    if (dict.contains("model") && dict.at("model").isGenericDict()) value = dict.at("model");
  }
  if (!value.isGenericDict() && bytes.find("collections\nOrderedDict") != std::string::npos) {
    throw CheckpointError(fmt::format(
        "cannot read PyTorch file '{}': it holds an OrderedDict (what model.state_dict() "
        "returns), which LibTorch cannot unpickle; save it as a plain dict instead: "
        "torch.save(dict(model.state_dict()), path)",
        path));
  }
  DTRAIN_CHECK_T(CheckpointError, value.isGenericDict(),
                 "'{}' does not hold a dict of tensors (found {})", path, value.tagKind());
  StateDict out;
  for (const auto& item : value.toGenericDict()) {
    DTRAIN_CHECK_T(CheckpointError, item.key().isString(),
                   "'{}': state dict keys must be strings (found {})", path, item.key().tagKind());
    const std::string key = item.key().toStringRef();
    const c10::IValue& v = item.value();
    if (v.isTensor()) {
      out[key] = v.toTensor();
    } else if (v.isInt()) {
      out[key] = v.toInt();
    } else if (v.isDouble()) {
      out[key] = v.toDouble();
    } else if (v.isString()) {
      out[key] = v.toStringRef();
    } else {
      throw CheckpointError(fmt::format("'{}': entry '{}' is a {}, not a tensor or number", path,
                                        key, v.tagKind()));
    }
  }
  return out;
}

void write_torch_state_dict(const std::string& path, const StateDict& state) {
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& [k, v] : state) {
    if (auto t = std::get_if<at::Tensor>(&v)) dict.insert(k, *t);
  }
  std::vector<char> bytes = torch::jit::pickle_save(c10::IValue(dict));
  fs::write_file_atomic(path, std::string(bytes.begin(), bytes.end()));
}

}  // namespace dtrain::checkpoint
