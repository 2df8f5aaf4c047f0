// Loading foreign weights (checkpoint/interop's ForeignWeights) into a model and the
// states that come with it: the model by key matching, "optimizer" and "scheduler"
// through Stateful::load_pytorch_state. Used by Checkpointer::load for .pth/.pkl/
// .safetensors files and by `dtrain ckpt import --config-file`.
//
//   ForeignLoadReport r = apply_foreign_weights(w, *model, {{"optimizer", &opt_state}}, {});
//   if (!r.match.clean()) DTRAIN_LOG_WARN("{}", r.match.table());
//
// Not thread-safe (it writes into the model and the states).
#pragma once

#include <map>
#include <string>

#include <torch/nn/module.h>

#include "checkpoint/interop/matching.h"
#include "checkpoint/interop/weights.h"
#include "runtime/base/stateful.h"

namespace dtrain::checkpoint {

struct ForeignLoadOptions {
  bool heuristics = false;  // the suffix-matching heuristics (also on when `w` asks)
  bool strict = false;      // throw unless every key matches one to one with equal shapes
};

struct ForeignLoadReport {
  interop::KeyMatch match;  // what was loaded into the model, and what was not
  // For each state of `states` the file has: "" when loaded, else why not.
  std::map<std::string, std::string> states;
};

// Copies the matched tensors of `w` into `model` (dtype converted), then loads each of
// `states` whose key ("optimizer", "scheduler") `w` has. Throws dtrain::CheckpointError
// with the match table when `strict` and the keys do not match one to one, before
// anything is changed.
ForeignLoadReport apply_foreign_weights(const interop::ForeignWeights& w,
                                        torch::nn::Module& model,
                                        const std::map<std::string, Stateful*>& states,
                                        const ForeignLoadOptions& options);

}  // namespace dtrain::checkpoint
