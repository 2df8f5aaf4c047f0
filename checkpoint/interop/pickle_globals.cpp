// The unpickler's allow-list (see pickle_globals.h): each allowed global is a function of
// ours that builds plain values, tensors or numpy arrays from checked arguments.
#include "checkpoint/interop/pickle_globals.h"

#include <algorithm>
#include <map>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "runtime/base/error.h"

namespace dtrain::interop::internal {
namespace {

const std::map<std::string, c10::ScalarType>& storage_types() {
  static const std::map<std::string, c10::ScalarType> types = {
      {"torch.FloatStorage", c10::kFloat},   {"torch.DoubleStorage", c10::kDouble},
      {"torch.HalfStorage", c10::kHalf},     {"torch.BFloat16Storage", c10::kBFloat16},
      {"torch.LongStorage", c10::kLong},     {"torch.IntStorage", c10::kInt},
      {"torch.ShortStorage", c10::kShort},   {"torch.CharStorage", c10::kChar},
      {"torch.ByteStorage", c10::kByte},     {"torch.BoolStorage", c10::kBool},
      {"torch.ComplexFloatStorage", c10::kComplexFloat},
      {"torch.ComplexDoubleStorage", c10::kComplexDouble},
  };
  return types;
}

// Globals that are values only (passed as arguments, never called).
const char* const kValueGlobals[] = {
    "numpy.ndarray", "torch.Tensor", "torch.nn.parameter.Parameter",
};

// Callable globals; their code is in call_global below.
const char* const kCallableGlobals[] = {
    "collections.OrderedDict",
    "collections.Counter",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._tensor._rebuild_from_type_v2",
    "torch.Size",
    "torch.device",
    "numpy.core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy.dtype",
    "_codecs.encode",
    "builtins.set",
    "builtins.frozenset",
};

void expect_args(const PyObject& args, size_t min, size_t max, const std::string& fn,
                 const std::string& origin) {
  if (args.items.size() < min || args.items.size() > max) {
    refuse(origin, fmt::format("{} called with {} arguments, expected {}{}", fn,
                               args.items.size(), min, max > min ? fmt::format("-{}", max) : ""));
  }
}

int64_t int_arg(const PyObject& o, const std::string& what, const std::string& origin) {
  if (o.type != PyType::kInt && o.type != PyType::kBool) {
    refuse(origin, fmt::format("{} is a {}, expected an int", what, o.type_name()));
  }
  return o.i;
}

std::vector<int64_t> int_tuple(const PyObject& o, const std::string& what,
                               const std::string& origin) {
  if (o.type != PyType::kTuple && o.type != PyType::kList) {
    refuse(origin, fmt::format("{} is a {}, expected a tuple of ints", what, o.type_name()));
  }
  if (o.items.size() > 64) refuse(origin, fmt::format("{} has {} dimensions", what, o.items.size()));
  std::vector<int64_t> out;
  for (const auto* item : o.items) out.push_back(int_arg(*item, what, origin));
  return out;
}

// The number of elements of `sizes`, or -1 when a size is negative or the product
// overflows int64.
int64_t checked_numel(const std::vector<int64_t>& sizes) {
  int64_t n = 1;
  for (int64_t s : sizes) {
    if (s < 0 || (s > 0 && n > INT64_MAX / s)) return -1;
    n *= s;
  }
  return n;
}

// torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...): a view of the
// storage, after checking that every element it addresses lies inside it.
PyObject* rebuild_tensor(const PyObject& args, PickleContext& ctx) {
  const std::string fn = "torch._utils._rebuild_tensor_v2";
  expect_args(args, 4, 7, fn, ctx.origin);
  const PyObject& storage = *args.items[0];
  if (storage.type != PyType::kStorage) {
    refuse(ctx.origin, fmt::format("{}: the first argument is a {}, not a storage", fn,
                                   storage.type_name()));
  }
  const int64_t offset = int_arg(*args.items[1], "a tensor's storage offset", ctx.origin);
  const auto size = int_tuple(*args.items[2], "a tensor's size", ctx.origin);
  const auto stride = int_tuple(*args.items[3], "a tensor's stride", ctx.origin);
  const int64_t capacity = storage.tensor.numel();
  if (size.size() != stride.size()) {
    refuse(ctx.origin, fmt::format("a tensor has {} sizes but {} strides", size.size(),
                                   stride.size()));
  }
  const int64_t numel = checked_numel(size);
  if (numel < 0) refuse(ctx.origin, fmt::format("a tensor's size [{}] is negative or overflows",
                                                fmt::join(size, ", ")));
  if (offset < 0 || offset > capacity) {
    refuse(ctx.origin, fmt::format("a tensor's storage offset {} is outside its storage of {} "
                                   "elements", offset, capacity));
  }
  if (numel > 0) {
    // The last element addressed: offset + sum((size_i - 1) * stride_i), all checked.
    __int128 last = offset;
    for (size_t d = 0; d < size.size(); ++d) {
      if (stride[d] < 0) {
        refuse(ctx.origin, fmt::format("a tensor has a negative stride [{}]",
                                       fmt::join(stride, ", ")));
      }
      last += static_cast<__int128>(size[d] - 1) * stride[d];
    }
    if (last >= capacity) {
      refuse(ctx.origin, fmt::format("a tensor of size [{}], stride [{}] at offset {} reaches "
                                     "element {} of a storage of only {} elements",
                                     fmt::join(size, ", "), fmt::join(stride, ", "), offset,
                                     static_cast<int64_t>(std::min<__int128>(last, INT64_MAX)),
                                     capacity));
    }
  }
  PyObject* out = ctx.make(PyType::kTensor);
  out->tensor = storage.tensor.as_strided(size, stride, offset);
  return out;
}

// torch.nn.Parameter pickles as _rebuild_parameter(tensor, requires_grad, hooks[, state]).
PyObject* rebuild_parameter(const PyObject& args, PickleContext& ctx, const std::string& fn) {
  expect_args(args, 3, 4, fn, ctx.origin);
  if (args.items[0]->type != PyType::kTensor) {
    refuse(ctx.origin, fmt::format("{}: the first argument is a {}, not a tensor", fn,
                                   args.items[0]->type_name()));
  }
  return args.items[0];
}

PyObject* ordered_dict(const PyObject& args, PickleContext& ctx) {
  expect_args(args, 0, 1, "collections.OrderedDict", ctx.origin);
  PyObject* d = ctx.make(PyType::kDict);
  d->ordered = true;
  if (args.items.empty()) return d;
  const PyObject& pairs = *args.items[0];
  if (pairs.type != PyType::kList && pairs.type != PyType::kTuple) {
    refuse(ctx.origin, "collections.OrderedDict called with something other than a list of pairs");
  }
  for (const auto* p : pairs.items) {
    if (p->type != PyType::kTuple || p->items.size() != 2) {
      refuse(ctx.origin, "collections.OrderedDict called with an item that is not a pair");
    }
    d->entries.emplace_back(p->items[0], p->items[1]);
  }
  d->depth = pairs.depth;
  return d;
}

PyObject* codecs_encode(const PyObject& args, PickleContext& ctx) {
  expect_args(args, 1, 2, "_codecs.encode", ctx.origin);
  const PyObject& text = *args.items[0];
  std::string encoding = args.items.size() > 1 ? args.items[1]->str() : "utf-8";
  if (text.type != PyType::kStr || (encoding != "latin1" && encoding != "latin-1")) {
    refuse(ctx.origin, fmt::format("_codecs.encode is read only as (str, 'latin1'), got ({}, "
                                   "'{}')", text.type_name(), encoding));
  }
  PyObject* out = ctx.make(PyType::kBytes);
  if (text.latin1) {
    out->s = text.s;
    return out;
  }
  // UTF-8 -> latin-1: every code point must be below 256.
  const std::string& s = text.s;
  for (size_t k = 0; k < s.size(); ++k) {
    const auto c = static_cast<unsigned char>(s[k]);
    if (c < 0x80) {
      out->s += static_cast<char>(c);
    } else if ((c & 0xE0) == 0xC0 && c <= 0xC3 && k + 1 < s.size()) {
      out->s += static_cast<char>(((c & 0x03) << 6) | (static_cast<unsigned char>(s[++k]) & 0x3F));
    } else {
      refuse(ctx.origin, "_codecs.encode(..., 'latin1') of text outside latin-1");
    }
  }
  return out;
}

}  // namespace

// numpy support lives in pickle_numpy.cpp.
PyObject* numpy_reconstruct(const PyObject& args, PickleContext& ctx);
PyObject* numpy_dtype(const PyObject& args, PickleContext& ctx);
PyObject* numpy_scalar(const PyObject& args, PickleContext& ctx);
void numpy_build(PyObject& obj, const PyObject& state, PickleContext& ctx);

std::string resolve_global(const std::string& module, const std::string& name,
                           const std::string& origin) {
  std::string full = module + "." + name;
  if (module == "__builtin__") full = "builtins." + name;                // Python 2
  if (module == "numpy._core.multiarray") full = "numpy.core.multiarray." + name;  // numpy 2
  if (storage_types().count(full)) return full;
  for (const char* g : kValueGlobals) {
    if (full == g) return full;
  }
  for (const char* g : kCallableGlobals) {
    if (full == g) return full;
  }
  throw CheckpointError(fmt::format(
      "'{}' asks for the Python global '{}', which is not on dtrain's allow-list: weight files "
      "are read as plain data (dicts, lists, numbers, strings, tensors, numpy arrays) and no "
      "code in them is ever run (docs/INTEROP.md lists what is allowed)",
      origin, module + "." + name));
}

c10::ScalarType storage_dtype(const PyObject& global, const std::string& origin) {
  auto it = storage_types().find(global.s);
  if (global.type != PyType::kGlobal || it == storage_types().end()) {
    refuse(origin, fmt::format("a storage's type is {}, not a torch storage class",
                               global.type_name()));
  }
  return it->second;
}

PyObject* call_global(const PyObject& callable, const PyObject& args, PickleContext& ctx) {
  if (callable.type != PyType::kGlobal) {
    refuse(ctx.origin, fmt::format("calls a {}, which is not an allowed function",
                                   callable.type_name()));
  }
  const std::string& fn = callable.s;
  if (fn == "torch._utils._rebuild_tensor_v2" || fn == "torch._utils._rebuild_tensor") {
    return rebuild_tensor(args, ctx);
  }
  if (fn == "torch._utils._rebuild_parameter" || fn == "torch._utils._rebuild_parameter_with_state") {
    return rebuild_parameter(args, ctx, fn);
  }
  if (fn == "torch._tensor._rebuild_from_type_v2") {
    // (func, new_type, args, state): allowed when it rebuilds a plain tensor/parameter.
    expect_args(args, 4, 4, fn, ctx.origin);
    const PyObject& type = *args.items[1];
    if (type.type != PyType::kGlobal ||
        (type.s != "torch.Tensor" && type.s != "torch.nn.parameter.Parameter")) {
      refuse(ctx.origin, fmt::format("{} of type {} (only torch.Tensor and Parameter are read)",
                                     fn, type.type_name()));
    }
    if (args.items[2]->type != PyType::kTuple) refuse(ctx.origin, fn + ": arguments not a tuple");
    return call_global(*args.items[0], *args.items[2], ctx);
  }
  if (fn == "collections.OrderedDict") return ordered_dict(args, ctx);
  if (fn == "collections.Counter") {  // (dict,): a dict of counts (MultiStepLR's milestones)
    expect_args(args, 0, 1, fn, ctx.origin);
    PyObject* d = ctx.make(PyType::kDict);
    if (args.items.empty()) return d;
    if (args.items[0]->type != PyType::kDict) refuse(ctx.origin, fn + " called without a dict");
    d->entries = args.items[0]->entries;
    d->depth = args.items[0]->depth;
    return d;
  }
  if (fn == "torch.Size" || fn == "builtins.set" || fn == "builtins.frozenset") {
    expect_args(args, 0, 1, fn, ctx.origin);
    PyObject* out = ctx.make(fn == "torch.Size" ? PyType::kTuple : PyType::kSet);
    if (!args.items.empty()) {
      const PyObject& src = *args.items[0];
      if (src.type != PyType::kTuple && src.type != PyType::kList && src.type != PyType::kSet) {
        refuse(ctx.origin, fmt::format("{} called with a {}", fn, src.type_name()));
      }
      out->items = src.items;
      out->depth = src.depth;
    }
    return out;
  }
  if (fn == "torch.device") {
    expect_args(args, 1, 2, fn, ctx.origin);
    PyObject* out = ctx.make(PyType::kStr);
    out->s = args.items[0]->str();
    if (args.items.size() == 2) out->s += ":" + std::to_string(args.items[1]->i);
    return out;
  }
  if (fn == "_codecs.encode") return codecs_encode(args, ctx);
  if (fn == "numpy.core.multiarray._reconstruct") return numpy_reconstruct(args, ctx);
  if (fn == "numpy.core.multiarray.scalar") return numpy_scalar(args, ctx);
  if (fn == "numpy.dtype") return numpy_dtype(args, ctx);
  refuse(ctx.origin, fmt::format("'{}' is not callable", fn));
}

void build_object(PyObject& obj, const PyObject& state, PickleContext& ctx) {
  if (obj.type == PyType::kArray || obj.type == PyType::kDtype) return numpy_build(obj, state, ctx);
  // An OrderedDict's attributes (a state dict's `_metadata`) or a tensor's __dict__: dropped.
  if ((obj.type == PyType::kDict || obj.type == PyType::kTensor) &&
      (state.type == PyType::kDict || state.type == PyType::kNone ||
       state.type == PyType::kTuple)) {
    return;
  }
  refuse(ctx.origin, fmt::format("BUILD of a {} with a {} is not read", obj.type_name(),
                                 state.type_name()));
}

}  // namespace dtrain::interop::internal
