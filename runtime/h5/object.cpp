// Object base class and attribute reads/writes (see object.h).
#include "runtime/h5/object.h"

#include <cstring>
#include <memory>

#include "runtime/base/error.h"

namespace dtrain::h5 {
namespace {

herr_t collect_attr_name(hid_t /*loc*/, const char* name, const H5A_info_t* /*info*/, void* data) {
  static_cast<std::vector<std::string>*>(data)->emplace_back(name);
  return 0;
}

// Reads every element of attribute `attr` converted to `mem_type` (int64 or double).
template <typename T>
std::vector<T> read_numbers(const Attribute& attr, hid_t mem_type, const std::string& where,
                            bool allow_float) {
  ApiScope scope;
  DataType type = attr.type();
  const H5T_class_t cls = type.type_class();
  DTRAIN_CHECK_T(H5Error, cls == H5T_INTEGER || (allow_float && cls == H5T_FLOAT),
                 "attribute '{}' of {}: expected {}, found {}", attr.name(), where,
                 allow_float ? "a number" : "an integer", type.describe());
  std::vector<T> values(static_cast<size_t>(attr.space().num_elements()));
  if (!values.empty()) {
    check(H5Aread(attr.id(), mem_type, values.data()), "reading attribute '{}' of {}", attr.name(),
          where);
  }
  return values;
}

template <typename T>
T single(std::vector<T> values, const std::string& name, const std::string& where) {
  DTRAIN_CHECK_T(H5Error, values.size() == 1,
                 "attribute '{}' of {}: expected one value, found {}", name, where, values.size());
  return values[0];
}

}  // namespace

std::string join_path(const std::string& base, const std::string& name) {
  if (!name.empty() && name[0] == '/') return name;
  if (base.empty() || base == "/") return "/" + name;
  return base + "/" + name;
}

// ---- Attribute -------------------------------------------------------------------

Attribute::Attribute(hid_t id, std::string where, std::string name)
    : handle_(id, H5Aclose), where_(std::move(where)), name_(std::move(name)) {}

std::string Attribute::describe() const {
  return fmt::format("attribute '{}' of {}", name_, where_);
}

DataType Attribute::type() const {
  ApiScope scope;
  return DataType(check_id(H5Aget_type(id()), "querying the type of {}", describe()));
}

DataSpace Attribute::space() const {
  ApiScope scope;
  return DataSpace(check_id(H5Aget_space(id()), "querying the shape of {}", describe()));
}

int64_t Attribute::read_int() const {
  return single(read_numbers<int64_t>(*this, H5T_NATIVE_INT64, where_, false), name_, where_);
}

double Attribute::read_float() const {
  return single(read_numbers<double>(*this, H5T_NATIVE_DOUBLE, where_, true), name_, where_);
}

std::vector<int64_t> Attribute::read_int_list() const {
  return read_numbers<int64_t>(*this, H5T_NATIVE_INT64, where_, false);
}

std::vector<double> Attribute::read_float_list() const {
  return read_numbers<double>(*this, H5T_NATIVE_DOUBLE, where_, true);
}

std::string Attribute::read_string(size_t max_bytes) const {
  return internal::read_single_string(id(), /*is_attribute=*/true, describe(), max_bytes);
}

// ---- Object ----------------------------------------------------------------------

std::string Object::describe() const { return fmt::format("'{}' in '{}'", path_, file_name_); }

bool Object::has_attr(const std::string& name) const {
  ApiScope scope;
  return check_tri(H5Aexists(id(), name.c_str()), "looking up attribute '{}' of {}", name,
                   describe());
}

std::vector<std::string> Object::attr_names() const {
  ApiScope scope;
  std::vector<std::string> names;
  check(H5Aiterate2(id(), H5_INDEX_NAME, H5_ITER_INC, nullptr, collect_attr_name, &names),
        "listing the attributes of {}", describe());
  return names;
}

Attribute Object::open_attr(const std::string& name) const {
  ApiScope scope;
  DTRAIN_CHECK_T(H5Error, has_attr(name), "{} has no attribute '{}'", describe(), name);
  return Attribute(check_id(H5Aopen(id(), name.c_str(), H5P_DEFAULT),
                            "opening attribute '{}' of {}", name, describe()),
                   describe(), name);
}

void Object::delete_attr(const std::string& name) {
  ApiScope scope;
  check(H5Adelete(id(), name.c_str()), "deleting attribute '{}' of {}", name, describe());
}

void Object::write_attr(const std::string& name, const DataType& type, const DataSpace& space,
                        const void* data) {
  ApiScope scope;
  if (has_attr(name)) delete_attr(name);
  Attribute attr(
      check_id(H5Acreate2(id(), name.c_str(), type.id(), space.id(), H5P_DEFAULT, H5P_DEFAULT),
               "creating attribute '{}' of {}", name, describe()),
      describe(), name);
  check(H5Awrite(attr.id(), type.id(), data), "writing attribute '{}' of {}", name, describe());
}

void Object::set_int_attr(const std::string& name, int64_t value) {
  write_attr(name, DataType::copy_of(H5T_STD_I64LE), DataSpace::scalar(), &value);
}

void Object::set_float_attr(const std::string& name, double value) {
  write_attr(name, DataType::copy_of(H5T_IEEE_F64LE), DataSpace::scalar(), &value);
}

void Object::set_string_attr(const std::string& name, const std::string& value) {
  const char* text = value.c_str();
  write_attr(name, DataType::variable_string(), DataSpace::scalar(), &text);
}

void Object::set_fixed_string_attr(const std::string& name, const std::string& value) {
  std::string padded = value.empty() ? std::string(1, '\0') : value;
  write_attr(name, DataType::fixed_string(padded.size()), DataSpace::scalar(), padded.data());
}

void Object::set_int_list_attr(const std::string& name, const std::vector<int64_t>& values) {
  write_attr(name, DataType::copy_of(H5T_STD_I64LE),
             DataSpace::simple({static_cast<int64_t>(values.size())}), values.data());
}

void Object::set_float_list_attr(const std::string& name, const std::vector<double>& values) {
  write_attr(name, DataType::copy_of(H5T_IEEE_F64LE),
             DataSpace::simple({static_cast<int64_t>(values.size())}), values.data());
}

int64_t Object::get_int_attr(const std::string& name) const { return open_attr(name).read_int(); }

double Object::get_float_attr(const std::string& name) const {
  return open_attr(name).read_float();
}

std::string Object::get_string_attr(const std::string& name) const {
  return open_attr(name).read_string();
}

std::vector<int64_t> Object::get_int_list_attr(const std::string& name) const {
  return open_attr(name).read_int_list();
}

std::vector<double> Object::get_float_list_attr(const std::string& name) const {
  return open_attr(name).read_float_list();
}

// ---- strings ---------------------------------------------------------------------

namespace internal {
namespace {

// Size in bytes of the file holding object `id`.
uint64_t file_size_of(hid_t id, const std::string& what) {
  Handle file(check_id(H5Iget_file_id(id), "finding the file of {}", what), H5Fclose);
  hsize_t size = 0;
  check(H5Fget_filesize(file.id(), &size), "querying the size of the file of {}", what);
  return size;
}

// Throws unless a string of `bytes` (`kind`: "declares", "stores") fits both limits.
void check_string_size(uint64_t bytes, const char* kind, size_t max_bytes, hid_t id,
                       const std::string& what) {
  const uint64_t file_size = file_size_of(id, what);
  DTRAIN_CHECK_T(H5Error, bytes <= max_bytes && bytes <= file_size,
                 "{} {} a string of {} bytes, more than {} (refused before allocating it)",
                 what, kind, bytes,
                 bytes > file_size ? fmt::format("the file's size, {} bytes", file_size)
                                   : fmt::format("the cap of {} bytes on strings", max_bytes));
}

}  // namespace

std::string read_single_string(hid_t id, bool is_attribute, const std::string& what,
                               size_t max_bytes) {
  ApiScope scope;
  DataType file_type(
      check_id(is_attribute ? H5Aget_type(id) : H5Dget_type(id), "querying the type of {}", what));
  DTRAIN_CHECK_T(H5Error, file_type.type_class() == H5T_STRING,
                 "{}: expected a string, found {}", what, file_type.describe());
  DataSpace space(check_id(is_attribute ? H5Aget_space(id) : H5Dget_space(id),
                           "querying the shape of {}", what));
  const int64_t n = space.num_elements();
  DTRAIN_CHECK_T(H5Error, n == 1, "{}: expected a single string, found {} elements", what,
                 n);
  auto read = [&](hid_t mem_type, void* buffer) {
    return is_attribute ? H5Aread(id, mem_type, buffer)
                        : H5Dread(id, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buffer);
  };
  const H5T_cset_t cset = H5Tget_cset(file_type.id());
  if (cset < 0) throw_error(fmt::format("querying the character set of {}", what));

  if (file_type.is_variable_string()) {
    DataType mem_type = DataType::copy_of(H5T_C_S1);
    check(H5Tset_size(mem_type.id(), H5T_VARIABLE), "reading {}", what);
    check(H5Tset_cset(mem_type.id(), cset), "reading {}", what);
    // No size query first: H5Dvlen_get_buf_size crashes on scalar dataspaces in HDF5
    // 1.10.8. A variable-length string lives in the file's global heap, whose
    // collections HDF5 reads only within the file's end (checked against the file's size
    // at open), so the read allocates at most the file's size; the cap is checked after.
    char* text = nullptr;
    check(read(mem_type.id(), &text), "reading {}", what);
    std::unique_ptr<char, herr_t (*)(void*)> owned(text, H5free_memory);
    const size_t length = text ? std::strlen(text) : 0;
    check_string_size(length, "stores", max_bytes, id, what);
    return std::string(text ? text : "", length);
  }
  const size_t size = file_type.size();
  check_string_size(size, "declares", max_bytes, id, what);
  DataType mem_type = DataType::copy_of(file_type.id());
  std::string out(size, '\0');
  check(read(mem_type.id(), out.data()), "reading {}", what);
  const H5T_str_t pad = H5Tget_strpad(file_type.id());
  if (pad == H5T_STR_SPACEPAD) {
    out.erase(out.find_last_not_of(' ') + 1);
  } else {
    const size_t nul = out.find('\0');
    if (nul != std::string::npos) out.resize(nul);
  }
  return out;
}

}  // namespace internal
}  // namespace dtrain::h5
