// Tensor reads and writes of HDF5 datasets (see dataset.h).
#include "runtime/h5/dataset.h"

#include <ATen/ops/empty.h>

#include "runtime/base/error.h"

namespace dtrain::h5 {
namespace {

at::Tensor contiguous_cpu(const at::Tensor& t) {
  at::Tensor cpu = t.device().is_cpu() ? t : t.cpu();
  return cpu.is_contiguous() ? cpu : cpu.contiguous();
}

std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

}  // namespace

Dataset::Dataset(hid_t id, std::string file_name, std::string path)
    : Object(Handle(id, H5Dclose), std::move(file_name), std::move(path)) {}

DataType Dataset::type() const {
  ApiScope scope;
  return DataType(check_id(H5Dget_type(id()), "querying the type of dataset {}", describe()));
}

DataSpace Dataset::space() const {
  ApiScope scope;
  return DataSpace(check_id(H5Dget_space(id()), "querying the shape of dataset {}", describe()));
}

std::vector<int64_t> Dataset::shape() const { return space().dims(); }

int64_t Dataset::num_elements() const { return space().num_elements(); }

at::ScalarType Dataset::dtype() const {
  ApiScope scope;
  DataType t = type();
  std::optional<at::ScalarType> s = scalar_type_for(t);
  DTRAIN_CHECK_T(H5Error, s.has_value(),
                 "dataset {} holds {}, which has no tensor dtype (supported: float16/32/64, "
                 "bfloat16, int8/16/32/64, uint8, bool)",
                 describe(), t.describe());
  return *s;
}

std::optional<std::vector<int64_t>> Dataset::chunk_shape() const {
  ApiScope scope;
  PropertyList plist = PropertyList::adopt(
      check_id(H5Dget_create_plist(id()), "querying the creation properties of dataset {}",
               describe()));
  const H5D_layout_t layout = H5Pget_layout(plist.id());
  if (layout < 0) throw_error(fmt::format("querying the layout of dataset {}", describe()));
  if (layout != H5D_CHUNKED) return std::nullopt;
  const int rank = H5Pget_chunk(plist.id(), 0, nullptr);
  if (rank < 0) throw_error(fmt::format("querying the chunk rank of dataset {}", describe()));
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  check(H5Pget_chunk(plist.id(), rank, dims.data()), "querying the chunk shape of dataset {}",
        describe());
  return std::vector<int64_t>(dims.begin(), dims.end());
}

int64_t Dataset::storage_offset() const {
  ApiScope scope;
  const haddr_t a = H5Dget_offset(id());
  return a == HADDR_UNDEF ? -1 : static_cast<int64_t>(a);
}

std::optional<int64_t> Dataset::raw_offset(at::ScalarType as) const {
  ApiScope scope;
  PropertyList plist = PropertyList::adopt(
      check_id(H5Dget_create_plist(id()), "querying the creation properties of dataset {}",
               describe()));
  if (H5Pget_layout(plist.id()) != H5D_CONTIGUOUS || H5Pget_external_count(plist.id()) != 0) {
    return std::nullopt;
  }
  const DataType stored = type();
  const DataType wanted = datatype_for(as);
  if (H5Tequal(stored.id(), wanted.id()) <= 0) return std::nullopt;
  const int64_t bytes = num_elements() * static_cast<int64_t>(c10::elementSize(as));
  if (bytes == 0 || static_cast<int64_t>(H5Dget_storage_size(id())) != bytes) return std::nullopt;
  const int64_t offset = storage_offset();
  if (offset < 0) return std::nullopt;
  return offset;
}

void Dataset::write(const at::Tensor& tensor) {
  ApiScope scope;
  const std::vector<int64_t> expected = shape();
  const std::vector<int64_t> got(tensor.sizes().begin(), tensor.sizes().end());
  DTRAIN_CHECK_T(H5Error, got == expected,
                 "writing dataset {}: tensor shape {} differs from the dataset's {}", describe(),
                 shape_str(got), shape_str(expected));
  if (tensor.numel() == 0) return;
  at::Tensor t = contiguous_cpu(tensor);
  DataType mem_type = datatype_for(t.scalar_type());
  check(H5Dwrite(id(), mem_type.id(), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()),
        "writing dataset {} from a {} tensor", describe(), dtype_name(t.scalar_type()));
}

void Dataset::write_rows(int64_t start, const at::Tensor& rows) {
  ApiScope scope;
  const std::vector<int64_t> full = shape();
  const std::vector<int64_t> got(rows.sizes().begin(), rows.sizes().end());
  DTRAIN_CHECK_T(H5Error,
                 !full.empty() && got.size() == full.size() &&
                     std::equal(got.begin() + 1, got.end(), full.begin() + 1),
                 "writing rows of dataset {}: tensor shape {} does not match the dataset's {} "
                 "beyond the first axis",
                 describe(), shape_str(got), shape_str(full));
  const int64_t count = got[0];
  DTRAIN_CHECK_T(H5Error, start >= 0 && start + count <= full[0],
                 "writing rows [{}, {}) of dataset {}, which has {} rows", start, start + count,
                 describe(), full[0]);
  if (rows.numel() == 0) return;
  at::Tensor t = contiguous_cpu(rows);
  DataSpace file_space = space();
  file_space.select_rows(start, count);
  DataSpace mem_space = DataSpace::simple(got);
  DataType mem_type = datatype_for(t.scalar_type());
  check(H5Dwrite(id(), mem_type.id(), mem_space.id(), file_space.id(), H5P_DEFAULT, t.data_ptr()),
        "writing rows [{}, {}) of dataset {}", start, start + count, describe());
}

at::Tensor Dataset::read(std::optional<at::ScalarType> as) const {
  ApiScope scope;
  const at::ScalarType dtype = as ? *as : this->dtype();
  at::Tensor out = at::empty(shape(), at::TensorOptions().dtype(dtype));
  if (out.numel() == 0) return out;
  DataType mem_type = datatype_for(dtype);
  check(H5Dread(id(), mem_type.id(), H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data_ptr()),
        "reading dataset {} as {}", describe(), dtype_name(dtype));
  return out;
}

at::Tensor Dataset::read_rows(int64_t start, int64_t count,
                              std::optional<at::ScalarType> as) const {
  ApiScope scope;
  std::vector<int64_t> dims = shape();
  DTRAIN_CHECK_T(H5Error, !dims.empty(),
                 "reading rows of dataset {}: it is a scalar, not an array", describe());
  DTRAIN_CHECK_T(H5Error, start >= 0 && count >= 0 && start + count <= dims[0],
                 "reading rows [{}, {}) of dataset {}, which has {} rows", start, start + count,
                 describe(), dims[0]);
  const at::ScalarType dtype = as ? *as : this->dtype();
  dims[0] = count;
  at::Tensor out = at::empty(dims, at::TensorOptions().dtype(dtype));
  if (out.numel() == 0) return out;
  DataSpace file_space = space();
  file_space.select_rows(start, count);
  DataSpace mem_space = DataSpace::simple(dims);
  DataType mem_type = datatype_for(dtype);
  check(H5Dread(id(), mem_type.id(), mem_space.id(), file_space.id(), H5P_DEFAULT, out.data_ptr()),
        "reading rows [{}, {}) of dataset {} as {}", start, start + count, describe(),
        dtype_name(dtype));
  return out;
}

void Dataset::read_into(const at::Tensor& dst) const {
  ApiScope scope;
  const std::vector<int64_t> expected = shape();
  const std::vector<int64_t> got(dst.sizes().begin(), dst.sizes().end());
  DTRAIN_CHECK_T(H5Error, dst.device().is_cpu() && dst.is_contiguous() && got == expected,
                 "reading dataset {} into a tensor: the tensor must be a contiguous CPU tensor "
                 "of shape {}, got a {}{} one of shape {}",
                 describe(), shape_str(expected), dst.is_contiguous() ? "" : "non-contiguous ",
                 dst.device().str(), shape_str(got));
  if (dst.numel() == 0) return;
  DataType mem_type = datatype_for(dst.scalar_type());
  check(H5Dread(id(), mem_type.id(), H5S_ALL, H5S_ALL, H5P_DEFAULT, dst.data_ptr()),
        "reading dataset {} as {}", describe(), dtype_name(dst.scalar_type()));
}

std::string Dataset::read_string(size_t max_bytes) const {
  return internal::read_single_string(id(), /*is_attribute=*/false,
                                      fmt::format("dataset {}", describe()), max_bytes);
}

}  // namespace dtrain::h5
