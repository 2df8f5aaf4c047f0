// DataType / DataSpace / PropertyList wrappers and the at::ScalarType <-> HDF5 mapping.
#include "runtime/h5/types.h"

#include <cstring>

#include "runtime/base/error.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "dtrain's HDF5 layer uses little-endian types as memory types");

namespace dtrain::h5 {
namespace {

// IEEE 754 half precision as h5py builds it: F32LE with 16-bit fields.
DataType make_float16() {
  DataType t = DataType::copy_of(H5T_IEEE_F32LE);
  check(H5Tset_fields(t.id(), 15, 10, 5, 0, 10), "building the float16 type (fields)");
  check(H5Tset_size(t.id(), 2), "building the float16 type (size)");
  check(H5Tset_ebias(t.id(), 15), "building the float16 type (exponent bias)");
  return t;
}

// bfloat16: HDF5 has no predefined type, so a 16-bit float with bfloat16's layout
// (sign bit 15, 8-bit exponent at bit 7 with bias 127, 7-bit mantissa with an implied
// leading 1): float32 with the low 16 mantissa bits cut off. HDF5 converts it to other
// float types exactly; h5py (3.7) reads it as float32 with the same values (all 65536
// bit patterns checked; NaN stays NaN). Tensors round-trip bit for bit because the
// memory type is this same type.
DataType make_bfloat16() {
  DataType t = DataType::copy_of(H5T_IEEE_F32LE);
  check(H5Tset_fields(t.id(), 15, 7, 8, 0, 7), "building the bfloat16 type (fields)");
  check(H5Tset_size(t.id(), 2), "building the bfloat16 type (size)");
  check(H5Tset_ebias(t.id(), 127), "building the bfloat16 type (exponent bias)");
  return t;
}

// numpy bool as h5py stores it: enum {FALSE = 0, TRUE = 1} over int8.
DataType make_bool() {
  DataType t(check_id(H5Tenum_create(H5T_NATIVE_INT8), "building the bool enum type"));
  const int8_t no = 0, yes = 1;
  check(H5Tenum_insert(t.id(), "FALSE", &no), "building the bool enum type (FALSE)");
  check(H5Tenum_insert(t.id(), "TRUE", &yes), "building the bool enum type (TRUE)");
  return t;
}

bool is_bool_enum(const DataType& type) {
  if (type.type_class() != H5T_ENUM || type.size() != 1) return false;
  if (H5Tget_nmembers(type.id()) != 2) return false;
  for (int i = 0; i < 2; ++i) {
    char* name = H5Tget_member_name(type.id(), i);
    if (name == nullptr) return false;
    int8_t value = -1;
    const bool ok = H5Tget_member_value(type.id(), i, &value) >= 0;
    const bool match =
        ok && std::strcmp(name, value == 0 ? "FALSE" : "TRUE") == 0 && (value == 0 || value == 1);
    H5free_memory(name);
    if (!match) return false;
  }
  return true;
}

}  // namespace

DataType DataType::copy_of(hid_t type) {
  ApiScope scope;
  return DataType(check_id(H5Tcopy(type), "copying an HDF5 datatype"));
}

DataType DataType::variable_string() {
  ApiScope scope;
  DataType t = copy_of(H5T_C_S1);
  check(H5Tset_size(t.id(), H5T_VARIABLE), "building a variable-length string type");
  check(H5Tset_cset(t.id(), H5T_CSET_UTF8), "building a variable-length string type");
  return t;
}

DataType DataType::fixed_string(size_t size) {
  ApiScope scope;
  DataType t = copy_of(H5T_C_S1);
  check(H5Tset_size(t.id(), size == 0 ? 1 : size), "building a {}-byte string type", size);
  check(H5Tset_strpad(t.id(), H5T_STR_NULLPAD), "building a {}-byte string type", size);
  check(H5Tset_cset(t.id(), H5T_CSET_UTF8), "building a {}-byte string type", size);
  return t;
}

H5T_class_t DataType::type_class() const {
  ApiScope scope;
  const H5T_class_t c = H5Tget_class(id());
  if (c == H5T_NO_CLASS) throw_error("querying a datatype's class");
  return c;
}

size_t DataType::size() const {
  ApiScope scope;
  const size_t s = H5Tget_size(id());
  if (s == 0) throw_error("querying a datatype's size");
  return s;
}

bool DataType::is_variable_string() const {
  ApiScope scope;
  return check_tri(H5Tis_variable_str(id()), "querying whether a type is a variable string");
}

bool DataType::equals(const DataType& other) const {
  ApiScope scope;
  return check_tri(H5Tequal(id(), other.id()), "comparing datatypes");
}

std::string DataType::describe() const {
  ApiScope scope;
  if (std::optional<at::ScalarType> s = scalar_type_for(*this)) return dtype_name(*s);
  const size_t bits = size() * 8;
  switch (type_class()) {
    case H5T_INTEGER:
      return fmt::format("{}int{}", H5Tget_sign(id()) == H5T_SGN_NONE ? "u" : "", bits);
    case H5T_FLOAT:
      return fmt::format("float{} (non-standard layout)", bits);
    case H5T_STRING:
      return is_variable_string() ? "string (variable length)"
                                  : fmt::format("string ({} bytes)", size());
    case H5T_ENUM:
      return "enum";
    case H5T_COMPOUND:
      return "compound";
    case H5T_ARRAY:
      return "array";
    case H5T_VLEN:
      return "variable-length sequence";
    case H5T_REFERENCE:
      return "reference";
    case H5T_OPAQUE:
      return "opaque";
    case H5T_BITFIELD:
      return "bitfield";
    default:
      return "unknown HDF5 type";
  }
}

DataSpace DataSpace::simple(const std::vector<int64_t>& dims) {
  if (dims.empty()) return scalar();
  std::vector<hsize_t> h(dims.begin(), dims.end());
  ApiScope scope;
  return DataSpace(check_id(H5Screate_simple(static_cast<int>(h.size()), h.data(), nullptr),
                            "creating a dataspace of rank {}", h.size()));
}

DataSpace DataSpace::scalar() {
  ApiScope scope;
  return DataSpace(check_id(H5Screate(H5S_SCALAR), "creating a scalar dataspace"));
}

std::vector<int64_t> DataSpace::dims() const {
  ApiScope scope;
  const int rank = H5Sget_simple_extent_ndims(id());
  if (rank < 0) throw_error("querying a dataspace's rank");
  std::vector<hsize_t> h(static_cast<size_t>(rank));
  if (rank > 0 && H5Sget_simple_extent_dims(id(), h.data(), nullptr) < 0) {
    throw_error("querying a dataspace's extent");
  }
  return std::vector<int64_t>(h.begin(), h.end());
}

int64_t DataSpace::num_elements() const {
  ApiScope scope;
  const hssize_t n = H5Sget_simple_extent_npoints(id());
  if (n < 0) throw_error("querying a dataspace's element count");
  return static_cast<int64_t>(n);
}

void DataSpace::select_rows(int64_t start, int64_t count) {
  std::vector<int64_t> d = dims();
  DTRAIN_CHECK_T(H5Error, !d.empty(), "cannot select rows of a scalar dataspace");
  std::vector<hsize_t> offset(d.size(), 0), extent(d.begin(), d.end());
  offset[0] = static_cast<hsize_t>(start);
  extent[0] = static_cast<hsize_t>(count);
  ApiScope scope;
  check(H5Sselect_hyperslab(id(), H5S_SELECT_SET, offset.data(), nullptr, extent.data(), nullptr),
        "selecting rows [{}, {}) of a dataspace", start, start + count);
}

PropertyList PropertyList::create(hid_t cls) {
  ApiScope scope;
  return PropertyList(check_id(H5Pcreate(cls), "creating a property list"));
}

DataType datatype_for(at::ScalarType type) {
  ApiScope scope;
  switch (type) {
    case at::kFloat:
      return DataType::copy_of(H5T_IEEE_F32LE);
    case at::kDouble:
      return DataType::copy_of(H5T_IEEE_F64LE);
    case at::kHalf:
      return make_float16();
    case at::kBFloat16:
      return make_bfloat16();
    case at::kChar:
      return DataType::copy_of(H5T_STD_I8LE);
    case at::kShort:
      return DataType::copy_of(H5T_STD_I16LE);
    case at::kInt:
      return DataType::copy_of(H5T_STD_I32LE);
    case at::kLong:
      return DataType::copy_of(H5T_STD_I64LE);
    case at::kByte:
      return DataType::copy_of(H5T_STD_U8LE);
    case at::kBool:
      return make_bool();
    default:
      throw H5Error(fmt::format(
          "no HDF5 type for tensors of dtype {} (supported: float16/32/64, bfloat16, "
          "int8/16/32/64, uint8, bool)",
          dtype_name(type)));
  }
}

std::optional<at::ScalarType> scalar_type_for(const DataType& type) {
  ApiScope scope;
  const size_t size = type.size();
  switch (type.type_class()) {
    case H5T_FLOAT: {
      if (size == 4 || size == 8) {
        // Any IEEE layout of that size (also big-endian: HDF5 converts on read).
        return size == 4 ? at::kFloat : at::kDouble;
      }
      if (size == 2) {
        size_t spos, epos, esize, mpos, msize;
        check(H5Tget_fields(type.id(), &spos, &epos, &esize, &mpos, &msize),
              "querying a float type's fields");
        if (spos == 15 && epos == 10 && esize == 5 && mpos == 0 && msize == 10) return at::kHalf;
        if (spos == 15 && epos == 7 && esize == 8 && mpos == 0 && msize == 7 &&
            H5Tget_ebias(type.id()) == 127) {
          return at::kBFloat16;
        }
      }
      return std::nullopt;
    }
    case H5T_INTEGER: {
      const bool is_signed = H5Tget_sign(type.id()) == H5T_SGN_2;
      if (!is_signed) return size == 1 ? std::optional<at::ScalarType>(at::kByte) : std::nullopt;
      switch (size) {
        case 1:
          return at::kChar;
        case 2:
          return at::kShort;
        case 4:
          return at::kInt;
        case 8:
          return at::kLong;
        default:
          return std::nullopt;
      }
    }
    case H5T_ENUM:
      if (is_bool_enum(type)) return at::kBool;
      return std::nullopt;
    default:
      return std::nullopt;
  }
}

std::string dtype_name(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return "float32";
    case at::kDouble:
      return "float64";
    case at::kHalf:
      return "float16";
    case at::kBFloat16:
      return "bfloat16";
    case at::kChar:
      return "int8";
    case at::kShort:
      return "int16";
    case at::kInt:
      return "int32";
    case at::kLong:
      return "int64";
    case at::kByte:
      return "uint8";
    case at::kBool:
      return "bool";
    default:
      return c10::toString(type);
  }
}

}  // namespace dtrain::h5
