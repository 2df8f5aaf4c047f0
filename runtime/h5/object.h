// Named HDF5 objects (the common base of groups, datasets and files) and their scalar,
// small-list and string attributes.
//
//   group.set_int_attr("iteration", 4999);
//   group.set_string_attr("created", "2026-11-23T13:29:55Z");  // h5py reads a str
//   int64_t it = group.get_int_attr("iteration");
//
// Strings are written as variable-length UTF-8 (h5py: str), or with
// set_fixed_string_attr as fixed-length null-padded UTF-8 (h5py: numpy.bytes_); both
// read back with get_string_attr, as do ASCII and space-padded strings written by others.
// Writing an attribute that exists replaces it.
//
// Thread-safety: objects are not thread-safe; HDF5 calls take library_mutex().
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/h5/handle.h"
#include "runtime/h5/types.h"

namespace dtrain::h5 {

// "base/name" for HDF5 paths ("/" + name when base is "/"; `name` itself when absolute).
std::string join_path(const std::string& base, const std::string& name);

// The most bytes a string read from a file may take (read_string's default): 256 MiB,
// far above a real index (~200 bytes per tensor piece) or config, far below what would
// hurt a process. A string is also never larger than the file that holds it.
inline constexpr size_t kMaxStringBytes = size_t{256} << 20;

// An open attribute (closed with H5Aclose). Move-only.
class Attribute {
 public:
  // Takes ownership of `id`; `where` ("'/a' in 'f.h5'") and `name` appear in errors.
  Attribute(hid_t id, std::string where, std::string name);

  hid_t id() const { return handle_.id(); }
  const std::string& name() const { return name_; }
  DataType type() const;
  DataSpace space() const;

  // Typed reads. Each checks the stored type class (an int attribute must hold an
  // integer; a float one an integer or float; strings any HDF5 string) and, for the
  // scalar reads, that it holds exactly one element. Throws h5::H5Error
  // naming the attribute, its owner and what was found otherwise.
  int64_t read_int() const;
  double read_float() const;
  // At most `max_bytes` (and the file's size); see internal::read_single_string.
  std::string read_string(size_t max_bytes = kMaxStringBytes) const;
  std::vector<int64_t> read_int_list() const;
  std::vector<double> read_float_list() const;

 private:
  std::string describe() const;
  Handle handle_;
  std::string where_;
  std::string name_;
};

// A named object in an open file: a Group (or File) or a Dataset. Move-only.
class Object {
 public:
  virtual ~Object() = default;
  Object(Object&&) = default;
  Object& operator=(Object&&) = default;

  hid_t id() const { return handle_.id(); }
  // The file's name as given to File::create/open.
  const std::string& file_name() const { return file_name_; }
  // Absolute path inside the file ("/" for the root group).
  const std::string& path() const { return path_; }
  // "'/model/w' in 'ckpt/shard-00000-of-00002.h5'", for messages.
  std::string describe() const;
  // Closes the object now, reporting HDF5 errors (the destructor ignores them). For a
  // File, File::close also checks for objects left open.
  void close() { handle_.close(describe()); }

  bool has_attr(const std::string& name) const;
  // Names of all attributes, in HDF5's name order.
  std::vector<std::string> attr_names() const;
  // Opens attribute `name`; throws h5::H5Error naming it when missing.
  Attribute open_attr(const std::string& name) const;
  // Deletes attribute `name` (which must exist).
  void delete_attr(const std::string& name);

  // Writes (or replaces) a scalar int64 / float64 / UTF-8 string attribute, or a 1-D
  // int64 / float64 list attribute.
  void set_int_attr(const std::string& name, int64_t value);
  void set_float_attr(const std::string& name, double value);
  void set_string_attr(const std::string& name, const std::string& value);
  void set_fixed_string_attr(const std::string& name, const std::string& value);
  void set_int_list_attr(const std::string& name, const std::vector<int64_t>& values);
  void set_float_list_attr(const std::string& name, const std::vector<double>& values);

  // Reads attribute `name` (see Attribute's typed reads for the checks).
  int64_t get_int_attr(const std::string& name) const;
  double get_float_attr(const std::string& name) const;
  std::string get_string_attr(const std::string& name) const;
  std::vector<int64_t> get_int_list_attr(const std::string& name) const;
  std::vector<double> get_float_list_attr(const std::string& name) const;

 protected:
  // Takes ownership of `handle`, the object at `path` in the file `file_name`.
  Object(Handle handle, std::string file_name, std::string path)
      : handle_(std::move(handle)), file_name_(std::move(file_name)), path_(std::move(path)) {}

  // Writes `data` (of memory type `type`, shape `space`) as attribute `name`, replacing it.
  void write_attr(const std::string& name, const DataType& type, const DataSpace& space,
                  const void* data);

  Handle handle_;
  std::string file_name_;
  std::string path_;
};

namespace internal {
// Reads the one string held by attribute (is_attribute) or dataset `id`: variable or
// fixed length, UTF-8 or ASCII, scalar or one element. `what` names it in errors. The
// size must be at most `max_bytes` and at most the size of the file holding it
// (uncompressed strings only: dtrain never compresses them), else it throws
// h5::H5Error naming `what`, the size and the limit. A fixed-length type's
// declared size is checked before anything is allocated; a variable-length string after
// the read, which HDF5 bounds by the file's size (see object.cpp).
std::string read_single_string(hid_t id, bool is_attribute, const std::string& what,
                               size_t max_bytes = kMaxStringBytes);
}  // namespace internal

}  // namespace dtrain::h5
