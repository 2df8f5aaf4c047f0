// StateDict <-> PyTorch files over checkpoint/interop (see torch_io.h).
#include "checkpoint/torch_io.h"

#include "checkpoint/interop/torch_file.h"
#include "checkpoint/interop/weights.h"

namespace dtrain::checkpoint {
StateDict state_dict_of(const interop::ForeignWeights& w) {
  StateDict out;
  for (const auto& [k, t] : w.model) out[k] = t;
  for (const auto& [k, v] : w.scalars) {
    std::visit([&, key = k](const auto& x) { out.emplace(key, x); }, v);
  }
  return out;
}

StateDict read_torch_state_dict(const std::string& path) {
  return state_dict_of(interop::read_foreign_weights(path));
}

StateDict parse_torch_state_dict(const std::string& bytes, const std::string& origin) {
  return state_dict_of(interop::parse_foreign_weights(bytes, origin));
}

void write_torch_state_dict(const std::string& path, const StateDict& state,
                            const TorchWriteOptions& options) {
  interop::PyHeap heap;
  auto make = [&](interop::PyType t) { return heap.make(t, path); };
  auto* model = make(interop::PyType::kDict);
  model->ordered = true;
  for (const auto& [k, v] : state) {
    if (options.model_key && !std::holds_alternative<at::Tensor>(v)) continue;
    auto* key = make(interop::PyType::kStr);
    key->s = k;
    interop::PyObject* value = nullptr;
    if (auto t = std::get_if<at::Tensor>(&v)) {
      value = make(interop::PyType::kTensor);
      value->tensor = *t;
    } else if (auto i = std::get_if<int64_t>(&v)) {
      value = make(interop::PyType::kInt);
      value->i = *i;
    } else if (auto d = std::get_if<double>(&v)) {
      value = make(interop::PyType::kFloat);
      value->f = *d;
    } else {
      value = make(interop::PyType::kStr);
      value->s = std::get<std::string>(v);
    }
    model->entries.emplace_back(key, value);
  }
  if (!options.model_key) return interop::write_torch_file(path, *model);
  auto* root = make(interop::PyType::kDict);
  auto* model_key = make(interop::PyType::kStr);
  model_key->s = "model";
  root->entries.emplace_back(model_key, model);
  if (options.iteration) {
    auto* key = make(interop::PyType::kStr);
    key->s = "iteration";
    auto* value = make(interop::PyType::kInt);
    value->i = *options.iteration;
    root->entries.emplace_back(key, value);
  }
  interop::write_torch_file(path, *root);
}

}  // namespace dtrain::checkpoint
