// Foreign weight files in dtrain's terms: a PyTorch state dict, a detectron2/fvcore
// checkpoint ({"model": ..., "optimizer": ..., "scheduler": ..., "iteration": N}), a
// detectron2 model-zoo .pkl ({"model": {name: numpy array}, "matching_heuristics": True})
// or safetensors, all read into named tensors plus what came with them.
//
//   ForeignWeights w = read_foreign_weights("model_final.pth");
//   for (auto& [name, tensor] : w.model) ...;   if (w.iteration) ...;
//
// Thread-safe (each call has its own objects).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <ATen/core/Tensor.h>

#include "checkpoint/interop/torch_file.h"

namespace dtrain::interop {

using Scalar = std::variant<int64_t, double, std::string>;

struct ForeignWeights {
  std::string origin;  // the file
  std::string format;  // "torch zip", "torch legacy", "pickle", "safetensors"
  // The model's tensors in file order (detectron2's "model" entry, or the whole dict).
  std::vector<std::pair<std::string, at::Tensor>> model;
  // Top-level numbers and strings besides the model ("iteration", "__author__", a flat
  // dict's non-tensor entries, safetensors' __metadata__).
  std::map<std::string, Scalar> scalars;
  std::optional<int64_t> iteration;  // detectron2's "iteration"
  bool matching_heuristics = false;  // the file asks for them (model-zoo .pkl)
  // PyTorch-format optimizer and scheduler state dicts, when present (nullptr if not);
  // they live in `file`.
  const PyObject* optimizer = nullptr;
  const PyObject* scheduler = nullptr;
  std::shared_ptr<PickleFile> file;
  // Entries that were skipped, each said in a line ("'x' is a list, not a tensor").
  std::vector<std::string> skipped;
};

// Reads `path` (format recognised by content; ".safetensors" by name or content).
// Throws dtrain::CheckpointError naming the file and what it holds instead.
ForeignWeights read_foreign_weights(const std::string& path);
// The same from the file's bytes; `origin` names it.
ForeignWeights parse_foreign_weights(const std::string& bytes, const std::string& origin);
// How thoroughly check_weights_file() looks at a file.
enum class WeightsCheck {
  kStructure,  // zip: central directory and local headers; safetensors: header and sizes
  kFull,       // also every zip entry's bytes against its CRC-32
};

// Checks that `path` is a whole weight file (e.g. a download not cut short): "" when it
// is, else what is wrong, naming the file. A zip (torch.save) is checked through its
// central directory, which sits at the end; safetensors through its header, whose
// offsets must tile the rest of the file; any other file (pickle, legacy torch.save) is
// parsed whole with read_foreign_weights(), whatever `depth`. Throws only for errors
// that are not about the file's contents (e.g. out of memory).
std::string check_weights_file(const std::string& path, WeightsCheck depth);

// Whether `path` names a file read_foreign_weights reads, by its extension (.pt, .pth,
// .pkl, .bin, .safetensors); a dtrain checkpoint is a directory.
bool is_foreign_weights_path(const std::string& path);

// Splits detectron2's "w.pth?matching_heuristics=True" into the path and the flag
// (detectron2 accepts True/true/1); a path without the query is returned as it is.
std::pair<std::string, bool> split_matching_query(const std::string& path);

}  // namespace dtrain::interop
