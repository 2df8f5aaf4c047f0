// Stateful adapters for what LibTorch owns: a module's parameters and buffers (by name)
// and the random number generators (per rank).
//
//   ModuleState model_state(model);
//   LoadReport r = model_state.load_with_report(state);   // loads what matches
//   if (!r.clean()) DTRAIN_LOG_WARN("{}", r.table());
//
// Not thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "runtime/base/stateful.h"

namespace dtrain::checkpoint {

// What a non-strict load could not match.
struct LoadReport {
  std::vector<std::string> missing;     // in the model, not in the checkpoint
  std::vector<std::string> unexpected;  // in the checkpoint, not in the model
  struct Mismatch {
    std::string name;
    std::vector<int64_t> checkpoint_shape, model_shape;
  };
  std::vector<Mismatch> shape_mismatch;  // same name, other shape (not loaded)

  bool clean() const { return missing.empty() && unexpected.empty() && shape_mismatch.empty(); }
  // A table with one line per key: "missing | name", "unexpected | name",
  // "shape | name | checkpoint [..] vs model [..]".
  std::string table() const;
};

// The parameters and buffers of a module as "<name>" -> tensor (detectron2/PyTorch
// state_dict names such as "fc1.weight", "blocks.0.attn.qkv.weight").
class ModuleState : public Stateful {
 public:
  explicit ModuleState(std::shared_ptr<torch::nn::Module> module) : module_(std::move(module)) {}
  StateDict state_dict() const override;
  // Strict: throws dtrain::CheckpointError with the table when anything does not match.
  void load_state_dict(const StateDict& state) override;
  // Copies every tensor that matches by name and shape (converting dtype), returns the rest.
  // An entry that is the module's own tensor (read into in place) is left as it is.
  LoadReport load_with_report(const StateDict& state);
  // What load_with_report would report, without modifying the module.
  LoadReport compare(const StateDict& state) const;

 private:
  std::shared_ptr<torch::nn::Module> module_;
};

// LibTorch's default CPU generator ("cpu") and, when CUDA is present, each device's
// default generator ("cuda:<i>"), as uint8 state tensors. Per rank.
class RngState : public Stateful {
 public:
  StateDict state_dict() const override;
  // Restores every generator present in `state`; a CUDA generator in the state that
  // this process lacks is an error naming it.
  void load_state_dict(const StateDict& state) override;
};

}  // namespace dtrain::checkpoint
