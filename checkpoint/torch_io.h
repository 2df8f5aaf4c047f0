// PyTorch files as StateDicts: the adapter between dtrain's StateDict and the formats of
// checkpoint/interop (torch.save zip/legacy, detectron2 .pth/.pkl, safetensors).
//
//   StateDict s = read_torch_state_dict("resnet.pth");       // {"fc.weight": tensor, ...}
//   write_torch_state_dict("export.pth", s);                  // python: torch.load(...)
//   write_torch_state_dict("export.pth", s, {.model_key = true, .iteration = 99});
//
// Reading accepts every file interop::read_foreign_weights does: a state dict's tensors
// (an OrderedDict or dict; detectron2's {"model": ...} layout unwrapped) and the
// top-level numbers and strings (a detectron2 file's "iteration", ...). Thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "checkpoint/interop/weights.h"
#include "runtime/base/stateful.h"

namespace dtrain::checkpoint {

// Throws dtrain::CheckpointError naming the file and what it holds when it is not a
// readable weight file. Tensors keep their names; scalars too.
StateDict read_torch_state_dict(const std::string& path);
// The same, from the file's bytes; `origin` names it in errors.
StateDict parse_torch_state_dict(const std::string& bytes, const std::string& origin);
// The model tensors and top-level scalars of already read weights, as above.
StateDict state_dict_of(const interop::ForeignWeights& weights);

struct TorchWriteOptions {
  // Writes {"model": OrderedDict, "iteration": N} (what detectron2's Checkpointer.load
  // and torch.load read) instead of a bare OrderedDict state dict.
  bool model_key = false;
  std::optional<int64_t> iteration;  // with model_key: the "iteration" entry
};

// Writes `state` in torch.save's zip format: its tensors in an OrderedDict (name order),
// and with model_key = false its scalars as entries too. Atomic.
void write_torch_state_dict(const std::string& path, const StateDict& state,
                            const TorchWriteOptions& options = {});

}  // namespace dtrain::checkpoint
