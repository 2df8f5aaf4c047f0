// PyTorch's own files: what torch.save writes (the zip format of torch >= 1.6 and the
// legacy format before it) and plain pickles (detectron2 model-zoo .pkl), read with the
// restricted unpickler (pickle.h); and torch.save's zip format written back.
//
//   PickleFile f = read_pickle_file("model_final.pth");
//   const PyObject* model = f.root->get("model");      // detectron2 / fvcore layout
//   write_torch_file("export.pth", *root);              // torch.load reads it
//
// Thread-safe as long as each call works on its own objects.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "checkpoint/interop/pickle.h"

namespace dtrain::interop {

// An unpickled file: the value tree and the heap that owns it.
struct PickleFile {
  std::unique_ptr<PyHeap> heap;
  const PyObject* root = nullptr;
  std::string format;  // "torch zip", "torch legacy" or "pickle"
};

// Reads `path`, recognising the format by its first bytes. Throws dtrain::CheckpointError
// naming `path` for a file that is none of them, damaged, truncated, or asking for code.
PickleFile read_pickle_file(const std::string& path);
// The same from the file's bytes (which must outlive nothing: tensors are copied out);
// `origin` names the file in errors.
PickleFile parse_pickle_bytes(const std::string& bytes, const std::string& origin);

// The first `n` bytes of `path` (all of a shorter file), to recognise its format.
// Throws dtrain::CheckpointError naming the path when it cannot be read.
std::string read_file_head(const std::string& path, size_t n = 16);

// Writes `root` in torch.save's zip format (pickle protocol 2): dicts built with
// `ordered` become collections.OrderedDict, tensors (made contiguous, on the CPU) get a
// storage each. Supported values: None, bool, int, float, str, list, tuple, dict, tensor.
// Atomic: a temporary beside `path`, fsynced and renamed.
void write_torch_file(const std::string& path, const PyObject& root);

}  // namespace dtrain::interop
