// A restricted unpickler: reads Python pickles (protocols 0-5) into a tree of plain values
// and tensors, in the spirit of torch.load(weights_only=True). It executes nothing: the
// only globals it accepts are an allow-list (collections.OrderedDict, torch's tensor and
// storage rebuilders, numpy's array reconstruction; see docs/INTEROP.md), each mapped to
// code of ours that builds a value. Any other global is refused before anything runs.
//
//   PyHeap heap;
//   size_t pos = 0;
//   const PyObject* root = unpickle(bytes, &pos, heap, {"w.pth", load_storage});
//   if (const PyObject* model = root->get("model")) ...
//
// Every size, count and offset in the input is checked before it is used; a malformed
// pickle throws dtrain::CheckpointError naming `origin`, the byte offset and the opcode.
// Not thread-safe (one heap per reader).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace dtrain::interop {

enum class PyType : uint8_t {
  kNone, kBool, kInt, kFloat, kStr, kBytes, kList, kTuple, kDict, kSet,
  kTensor,   // a torch tensor or a numpy array (converted)
  kStorage,  // a torch storage (a 1-D tensor of its dtype) from persistent_load
  kGlobal,   // an allowed global itself (a class or function), named in `s`
  kDtype,    // a numpy dtype under construction: `s` its code ("f4"), `i` its byte order
  kArray,    // a numpy array awaiting its state (BUILD)
};

// One Python value. Containers point to other objects of the same PyHeap.
struct PyObject {
  PyType type = PyType::kNone;
  bool latin1 = false;   // kStr from a Python 2 str: `s` holds raw bytes, not UTF-8
  bool ordered = false;  // kDict built as collections.OrderedDict
  int depth = 0;         // nesting depth (a scalar is 0)
  int64_t i = 0;         // kBool, kInt
  double f = 0.0;        // kFloat
  std::string s;         // kStr (UTF-8), kBytes, kGlobal ("module.name"), kDtype
  std::vector<PyObject*> items;                          // kList, kTuple, kSet
  std::vector<std::pair<PyObject*, PyObject*>> entries;  // kDict, in insertion order
  at::Tensor tensor;                                     // kTensor, kStorage

  // The value of dict entry `key` (a str key), or nullptr (also when not a dict).
  const PyObject* get(const std::string& key) const;
  // Python's name of this value's type ("dict", "OrderedDict", "Tensor", ...).
  std::string type_name() const;
  // A str as UTF-8 (a Python 2 str is decoded as latin-1, like pickle's encoding="latin1").
  std::string str() const;
};

// Owns the objects of one unpickling; bounds how many there may be.
class PyHeap {
 public:
  // Throws CheckpointError naming `origin` past kMaxObjects.
  PyObject* make(PyType type, const std::string& origin);
  size_t size() const { return objects_.size(); }
  // Objects one pickle may create (a 100k-tensor state dict needs ~2M).
  static constexpr size_t kMaxObjects = size_t{8} << 20;

 private:
  std::deque<PyObject> objects_;
};

// Maps a persistent id (BINPERSID's argument, e.g. torch's ('storage', FloatStorage, key,
// location, numel)) to an object of `heap`; throws CheckpointError when it cannot.
using PersistentLoad = std::function<PyObject*(const PyObject& pid, PyHeap& heap)>;

struct UnpickleOptions {
  std::string origin;              // names the file in errors
  PersistentLoad persistent_load;  // empty: persistent ids are refused
  int max_depth = 100;             // deepest nesting accepted
};

// Unpickles one pickle from `data` starting at *pos, up to its STOP, and advances *pos
// past it. Objects live in `heap`.
const PyObject* unpickle(std::string_view data, size_t* pos, PyHeap& heap,
                         const UnpickleOptions& options);

}  // namespace dtrain::interop
