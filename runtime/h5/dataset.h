// HDF5 datasets read and written as at::Tensors: whole datasets, first-axis row ranges
// (hyperslabs) and single strings. Dtypes map as in types.h.
//
//   h5::Dataset d = file.create_dataset("model/w", h5::datatype_for(at::kFloat), {10, 4});
//   d.write_rows(0, first_half);                    // rows [0, 5)
//   d.write_rows(5, second_half);                   // rows [5, 10)
//   at::Tensor rows = d.read_rows(2, 3);            // [3, 4] float32
//   at::Tensor all = d.read(at::kDouble);           // converted by HDF5 while reading
//   d.read_into(out.narrow(0, 10, 10));             // into an existing (contiguous) buffer
//
// Thread-safety: not thread-safe as an object; HDF5 calls take library_mutex().
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "runtime/h5/object.h"

namespace dtrain::h5 {

// An open dataset (closed with H5Dclose). Move-only.
class Dataset : public Object {
 public:
  // Takes ownership of dataset `id`, at `path` in the file `file_name`.
  Dataset(hid_t id, std::string file_name, std::string path);

  DataType type() const;
  DataSpace space() const;
  // Extent of each axis ({} for a scalar dataset).
  std::vector<int64_t> shape() const;
  int64_t num_elements() const;
  // The tensor dtype of the stored type; throws h5::H5Error naming the
  // dataset and its HDF5 type when none maps (e.g. uint16: read it with an explicit `as`).
  at::ScalarType dtype() const;
  // The chunk shape of a chunked dataset (one extent per axis, as stored in the file:
  // untrusted), or nullopt for a contiguous or compact one.
  std::optional<std::vector<int64_t>> chunk_shape() const;
  // The file offset of a contiguous dataset's data, or -1 when it has no file space yet
  // (or is not contiguous).
  int64_t storage_offset() const;
  // The file offset of the dataset's bytes when they are stored exactly as a contiguous
  // tensor of dtype `as` holds them in memory: contiguous layout in this file (not
  // external), HDF5's native type for `as`, all of its space allocated. A reader may then
  // read them itself (pread); nullopt otherwise (read them with read_into). The offset
  // comes from the file (untrusted): check it against the file's size before reading.
  std::optional<int64_t> raw_offset(at::ScalarType as) const;

  // Writes the whole dataset from `tensor`, whose shape must equal shape(). Non-contiguous
  // or non-CPU tensors are copied to a contiguous CPU tensor first; a dtype other than
  // the dataset's is converted by HDF5.
  void write(const at::Tensor& tensor);
  // Writes rows [start, start + rows.size(0)) of the first axis; the other axes of
  // `rows` must equal the dataset's.
  void write_rows(int64_t start, const at::Tensor& rows);

  // Reads the whole dataset into a new CPU tensor of dtype `as` (default: dtype()); HDF5
  // converts between numeric types (e.g. uint16 -> int64, float16 -> float32).
  at::Tensor read(std::optional<at::ScalarType> as = std::nullopt) const;
  // Reads rows [start, start + count) of the first axis: shape {count, shape()[1:]...}.
  // Throws h5::H5Error naming the dataset for a range outside shape()[0].
  at::Tensor read_rows(int64_t start, int64_t count,
                       std::optional<at::ScalarType> as = std::nullopt) const;
  // Reads the whole dataset into `dst`, a contiguous CPU tensor of exactly shape(),
  // without allocating (e.g. straight into the rows of a larger tensor); HDF5 converts to
  // dst's dtype. Throws H5Error naming the dataset when `dst` is not contiguous, not on
  // the CPU, or of another shape.
  void read_into(const at::Tensor& dst) const;
  // Reads a dataset holding one string (variable or fixed length) of at most `max_bytes`
  // and at most the file's size, checked before allocating (internal::read_single_string).
  std::string read_string(size_t max_bytes = kMaxStringBytes) const;
};

}  // namespace dtrain::h5
