// Internal to the unpickler (pickle.cpp): the allow-list of globals and the code of ours
// that stands in for each (docs/INTEROP.md lists them). Not a public header.
#pragma once

#include <string>

#include <c10/core/ScalarType.h>
#include <fmt/format.h>

#include "checkpoint/interop/pickle.h"
#include "runtime/base/error.h"

namespace dtrain::interop::internal {

// What a handler needs: the heap to build in and the file to name in errors.
struct PickleContext {
  PyHeap& heap;
  const std::string& origin;
  PyObject* make(PyType type) { return heap.make(type, origin); }
};

// Throws dtrain::CheckpointError "'<origin>': <what>".
[[noreturn]] inline void refuse(const std::string& origin, const std::string& what) {
  throw CheckpointError(fmt::format("'{}': {}", origin, what));
}

// The canonical "module.name" of an allowed global (Python 2 names such as
// "__builtin__.set" map to Python 3's); throws CheckpointError naming it and `origin`
// when it is not on the allow-list.
std::string resolve_global(const std::string& module, const std::string& name,
                           const std::string& origin);
// REDUCE and NEWOBJ: calls the allowed global `callable` with the tuple `args`.
PyObject* call_global(const PyObject& callable, const PyObject& args, PickleContext& ctx);
// BUILD: applies `state` to `obj` (numpy arrays and dtypes; a dict's attributes are
// dropped). Throws for any other object.
void build_object(PyObject& obj, const PyObject& state, PickleContext& ctx);
// The dtype of a torch storage class ("torch.FloatStorage" -> kFloat); throws naming it
// when `global` is not one.
c10::ScalarType storage_dtype(const PyObject& global, const std::string& origin);

}  // namespace dtrain::interop::internal
