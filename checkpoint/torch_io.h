// PyTorch interop: read a `torch.save`d state dict into a StateDict, and write a
// StateDict's tensors as a file that `torch.load` reads.
//
//   StateDict s = read_torch_state_dict("resnet.pt");        // {"fc.weight": tensor, ...}
//   write_torch_state_dict("export.pt", s);                  // python: torch.load(...)
//
// Supported input: a plain dict of str -> Tensor (torch.save(dict(model.state_dict()))),
// optionally nested one level as {"model": {...}} (detectron2's layout). Thread-safe.
#pragma once

#include <string>

#include "checkpoint/stateful.h"

namespace dtrain::checkpoint {

// Throws dtrain::CheckpointError naming the file and what it holds when it is not a
// readable state dict (for an OrderedDict, the message says how to convert it).
StateDict read_torch_state_dict(const std::string& path);
// The same, from the file's bytes; `origin` names it in errors.
StateDict parse_torch_state_dict(const std::string& bytes, const std::string& origin);

// Writes the tensor entries of `state` (scalars are skipped) as a dict; atomic.
void write_torch_state_dict(const std::string& path, const StateDict& state);

}  // namespace dtrain::checkpoint
