// numpy arrays in pickles (detectron2 model-zoo .pkl files): numpy.dtype,
// numpy.core.multiarray._reconstruct and the BUILD that fills an array, read without
// numpy. Arrays become tensors of the same dtype; object arrays are refused.
#include <algorithm>
#include <cstring>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "checkpoint/interop/buffers.h"
#include "checkpoint/interop/pickle_globals.h"
#include "runtime/base/error.h"

namespace dtrain::interop::internal {
namespace {

// numpy type codes ("f4", "<i8", "b1", "float32", ...) -> torch dtype.
c10::ScalarType numpy_scalar_type(std::string code, const std::string& origin) {
  if (!code.empty() && (code[0] == '<' || code[0] == '>' || code[0] == '|' || code[0] == '=')) {
    code = code.substr(1);
  }
  static const std::pair<const char*, c10::ScalarType> kCodes[] = {
      {"f4", c10::kFloat}, {"f8", c10::kDouble}, {"f2", c10::kHalf},  {"i1", c10::kChar},
      {"i2", c10::kShort}, {"i4", c10::kInt},    {"i8", c10::kLong},  {"u1", c10::kByte},
      {"b1", c10::kBool},  {"c8", c10::kComplexFloat}, {"c16", c10::kComplexDouble},
      {"float32", c10::kFloat}, {"float64", c10::kDouble}, {"float16", c10::kHalf},
      {"int8", c10::kChar}, {"int16", c10::kShort}, {"int32", c10::kInt}, {"int64", c10::kLong},
      {"uint8", c10::kByte}, {"bool", c10::kBool},
  };
  for (const auto& [name, type] : kCodes) {
    if (code == name) return type;
  }
  refuse(origin, fmt::format("numpy dtype '{}' is not read (numbers and bools only; torch has "
                             "no unsigned types past uint8, and object arrays could run code)",
                             code));
}

// The raw bytes of an array's data: bytes, or a Python 2 str read as latin-1.
const std::string& array_bytes(const PyObject& data, const std::string& origin) {
  if (data.type == PyType::kBytes || (data.type == PyType::kStr && data.latin1)) return data.s;
  refuse(origin, fmt::format("a numpy array's data is a {}, not bytes (object arrays are not "
                             "read)", data.type_name()));
}

void fill_array(PyObject& obj, const PyObject& shape_obj, const PyObject& dtype, bool fortran,
                const PyObject& data, const std::string& origin) {
  if (dtype.type != PyType::kDtype) refuse(origin, "a numpy array's dtype is not a numpy.dtype");
  if (shape_obj.type != PyType::kTuple || shape_obj.items.size() > 64) {
    refuse(origin, "a numpy array's shape is not a tuple of at most 64 ints");
  }
  std::vector<int64_t> shape;
  int64_t numel = 1;
  for (const auto* d : shape_obj.items) {
    if (d->type != PyType::kInt || d->i < 0 || (d->i > 0 && numel > INT64_MAX / d->i)) {
      refuse(origin, "a numpy array's shape holds a negative, non-integer or overflowing size");
    }
    shape.push_back(d->i);
    numel *= d->i;
  }
  const c10::ScalarType type = numpy_scalar_type(dtype.s, origin);
  const int64_t itemsize = static_cast<int64_t>(c10::elementSize(type));
  const std::string& bytes = array_bytes(data, origin);
  if (numel > INT64_MAX / itemsize || static_cast<uint64_t>(numel * itemsize) != bytes.size()) {
    refuse(origin, fmt::format("a numpy array of shape [{}] and dtype {} needs {} bytes but its "
                               "data holds {}", fmt::join(shape, ", "), dtype.s,
                               numel <= INT64_MAX / itemsize ? numel * itemsize : -1,
                               bytes.size()));
  }
  std::vector<int64_t> alloc = shape;
  if (fortran) std::reverse(alloc.begin(), alloc.end());
  at::Tensor t = at::empty(alloc, at::TensorOptions().dtype(type));
  if (!bytes.empty()) std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  if (dtype.i == '>' && itemsize > 1) {
    auto* p = static_cast<unsigned char*>(t.data_ptr());
    for (int64_t k = 0; k < numel; ++k) std::reverse(p + k * itemsize, p + (k + 1) * itemsize);
  }
  check_bool_bytes(t, fmt::format("'{}': a numpy bool array", origin));
  if (fortran) {
    std::vector<int64_t> perm(alloc.size());
    for (size_t k = 0; k < perm.size(); ++k) perm[k] = static_cast<int64_t>(perm.size() - 1 - k);
    t = t.permute(perm).contiguous();
  }
  obj.type = PyType::kTensor;
  obj.tensor = t;
}

}  // namespace

// numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b'): an empty array that a
// BUILD fills.
PyObject* numpy_reconstruct(const PyObject& args, PickleContext& ctx) {
  if (args.items.size() != 3 || args.items[0]->type != PyType::kGlobal ||
      args.items[0]->s != "numpy.ndarray") {
    refuse(ctx.origin, "numpy.core.multiarray._reconstruct is read only for numpy.ndarray");
  }
  return ctx.make(PyType::kArray);
}

// numpy.dtype(code, align, copy).
PyObject* numpy_dtype(const PyObject& args, PickleContext& ctx) {
  if (args.items.empty() || args.items.size() > 3 || args.items[0]->type != PyType::kStr) {
    refuse(ctx.origin, "numpy.dtype called without a type code");
  }
  PyObject* out = ctx.make(PyType::kDtype);
  out->s = args.items[0]->str();
  out->i = '<';
  numpy_scalar_type(out->s, ctx.origin);  // refuses unsupported codes early
  return out;
}

// numpy.core.multiarray.scalar(dtype, bytes): a numpy scalar, read as an int or float.
PyObject* numpy_scalar(const PyObject& args, PickleContext& ctx) {
  if (args.items.size() != 2 || args.items[0]->type != PyType::kDtype) {
    refuse(ctx.origin, "numpy.core.multiarray.scalar called without (dtype, bytes)");
  }
  PyObject tmp;
  PyObject shape;
  shape.type = PyType::kTuple;
  fill_array(tmp, shape, *args.items[0], false, *args.items[1], ctx.origin);
  PyObject* out = ctx.make(tmp.tensor.is_floating_point() ? PyType::kFloat : PyType::kInt);
  if (tmp.tensor.is_floating_point()) {
    out->f = tmp.tensor.to(at::kDouble).item<double>();
  } else if (tmp.tensor.is_complex()) {
    refuse(ctx.origin, "complex numpy scalars are not read");
  } else {
    out->i = tmp.tensor.to(at::kLong).item<int64_t>();
  }
  return out;
}

// BUILD of a numpy dtype (its state sets the byte order) or array (shape, dtype, order,
// data).
void numpy_build(PyObject& obj, const PyObject& state, PickleContext& ctx) {
  if (state.type != PyType::kTuple) refuse(ctx.origin, "a numpy object's state is not a tuple");
  const auto& s = state.items;
  if (obj.type == PyType::kDtype) {
    if (s.size() < 2 || s[1]->type != PyType::kStr || s[1]->s.size() != 1) {
      refuse(ctx.origin, "a numpy dtype's state has no byte order");
    }
    obj.i = s[1]->s[0] == '>' ? '>' : '<';
    return;
  }
  // (version, shape, dtype, is_fortran, data), or the 4-tuple without version.
  const size_t base = s.size() == 5 ? 1 : 0;
  if (s.size() != 4 && s.size() != 5) refuse(ctx.origin, "a numpy array's state is malformed");
  fill_array(obj, *s[base], *s[base + 1], s[base + 2]->i != 0, *s[base + 3], ctx.origin);
}

}  // namespace dtrain::interop::internal
