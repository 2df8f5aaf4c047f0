// HDF5 datatypes, dataspaces and property lists as RAII objects, and the one mapping
// between at::ScalarType and HDF5 types (h5py's conventions, so h5py reads our files).
//
//   h5::DataType t = h5::datatype_for(at::kHalf);     // IEEE half, h5py reads float16
//   std::optional<at::ScalarType> s = h5::scalar_type_for(t);   // at::kHalf
//   h5::DataSpace space = h5::DataSpace::simple({4, 3});
//
// Type mapping (the file type is also the memory type: dtrain requires a little-endian
// host, checked at compile time):
//   float32/64  <-> H5T_IEEE_F32LE / F64LE
//   float16     <-> H5T_IEEE_F32LE reshaped to 16 bits (fields 15,10,5,0,10, bias 15):
//                   what h5py writes for numpy float16 (HDF5 1.10 has no F16 constant)
//   bfloat16    <-> H5T_IEEE_F32LE reshaped to 16 bits (fields 15,7,8,0,7, bias 127):
//                   float32 without its low 16 mantissa bits; h5py reads it as float32
//                   (exact), HDF5 converts it to any float type
//   int8/16/32/64 <-> H5T_STD_I8LE ... I64LE;  uint8 <-> H5T_STD_U8LE
//   bool        <-> enum {FALSE = 0, TRUE = 1} over int8 (h5py's numpy bool)
// Not yet mapped: unsigned 16/32/64, complex (reading them needs an explicit target
// dtype, see Dataset::read). Extend datatype_for and scalar_type_for together.
//
// Thread-safety: objects are not thread-safe; HDF5 calls take library_mutex().
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <c10/core/ScalarType.h>

#include "runtime/h5/handle.h"

namespace dtrain::h5 {

// An owned HDF5 datatype (closed with H5Tclose). Move-only.
class DataType {
 public:
  // Takes ownership of `id`, a datatype that may be closed (not a predefined constant).
  explicit DataType(hid_t id) : handle_(id, H5Tclose) {}
  // An owned copy of `type` (e.g. a predefined H5T_NATIVE_INT64, which must not be closed).
  static DataType copy_of(hid_t type);
  // A variable-length UTF-8 string type (what h5py reads as str).
  static DataType variable_string();
  // A fixed-length, null-padded UTF-8 string type of `size` bytes (at least 1).
  static DataType fixed_string(size_t size);

  hid_t id() const { return handle_.id(); }
  H5T_class_t type_class() const;
  // Size in bytes of one element (H5T_VARIABLE-sized strings report sizeof(char*)).
  size_t size() const;
  bool is_variable_string() const;
  // H5Tequal: same class, size, order, fields, ...
  bool equals(const DataType& other) const;
  // Short name for messages: "float32", "uint16", "bool", "string", "compound", ...
  std::string describe() const;

 private:
  Handle handle_;
};

// An owned HDF5 dataspace (closed with H5Sclose). Move-only.
class DataSpace {
 public:
  explicit DataSpace(hid_t id) : handle_(id, H5Sclose) {}
  // A simple dataspace of `dims` (each >= 0); an empty `dims` gives a scalar dataspace.
  static DataSpace simple(const std::vector<int64_t>& dims);
  static DataSpace scalar();

  hid_t id() const { return handle_.id(); }
  // Extent of each axis ({} for a scalar dataspace).
  std::vector<int64_t> dims() const;
  // Number of elements in the whole extent (1 for a scalar dataspace).
  int64_t num_elements() const;
  // Selects rows [start, start + count) of the first axis and all of the other axes.
  // The caller checks the range.
  void select_rows(int64_t start, int64_t count);

 private:
  Handle handle_;
};

// An owned property list (closed with H5Pclose). Move-only.
class PropertyList {
 public:
  // A new list of class `cls` (H5P_FILE_ACCESS, H5P_LINK_CREATE, ...).
  static PropertyList create(hid_t cls);
  // Takes ownership of `id` (e.g. from H5Dget_create_plist, checked by the caller).
  static PropertyList adopt(hid_t id) { return PropertyList(id); }
  hid_t id() const { return handle_.id(); }

 private:
  explicit PropertyList(hid_t id) : handle_(id, H5Pclose) {}
  Handle handle_;
};

// The HDF5 type used for tensors of `type` (table above), both in files and in memory.
// Throws h5::H5Error naming the dtype when it has no mapping.
DataType datatype_for(at::ScalarType type);

// The tensor dtype a stored HDF5 type maps to (table above), or nullopt when none does
// (e.g. uint16, big strings, compound types).
std::optional<at::ScalarType> scalar_type_for(const DataType& type);

// numpy-style dtype name for messages: "float32", "int64", "uint8", "bool", ...
std::string dtype_name(at::ScalarType type);

}  // namespace dtrain::h5
