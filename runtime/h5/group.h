// HDF5 groups: the tree of a file. Paths are '/'-separated, relative to the group or
// absolute ("/model/w"); creating a group or dataset creates missing intermediate groups.
//
//   h5::Group model = file.require_group("model");
//   model.write_tensor("fc1.weight", w);             // dataset /model/fc1.weight
//   if (file.exists("model/fc1.weight")) { ... }
//   at::Tensor w2 = file.read_tensor("/model/fc1.weight");
//
// Thread-safety: not thread-safe as an object; HDF5 calls take library_mutex().
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "runtime/h5/dataset.h"
#include "runtime/h5/object.h"

namespace dtrain::h5 {

// What a path names.
enum class ObjectKind { kMissing, kGroup, kDataset, kOther };

// An open group (closed with H5Gclose), or a File's root group. Move-only.
class Group : public Object {
 public:
  // Takes ownership of group `id`, at `path` in the file `file_name`.
  Group(hid_t id, std::string file_name, std::string path);

  // Whether `path` names an object (false, never an error, when a component along the
  // way is missing or is not a group).
  bool exists(const std::string& path) const;
  // What `path` names (kMissing when exists() is false).
  ObjectKind kind(const std::string& path) const;
  // Names of the direct children (groups, datasets, ...), in name order.
  std::vector<std::string> list() const;
  // Removes the link `path` (the object's space is not reclaimed by HDF5).
  void remove(const std::string& path);

  // Creates group `path` and any missing parents; throws h5::H5Error when it
  // exists already.
  Group create_group(const std::string& path);
  // Opens group `path`; throws h5::H5Error "'f.h5' has no group '/a/b'".
  Group open_group(const std::string& path) const;
  // Opens group `path`, creating it (and parents) when missing.
  Group require_group(const std::string& path);

  // Creates dataset `path` of `type` and `shape` ({} for a scalar), creating missing
  // parent groups; throws when `path` exists already. Contiguous layout, or chunked with
  // chunks of `chunk` (same rank as `shape`, extents >= 1) when `chunk` is not empty.
  Dataset create_dataset(const std::string& path, const DataType& type,
                         const std::vector<int64_t>& shape,
                         const std::vector<int64_t>& chunk = {});
  // Opens dataset `path`; throws h5::H5Error "'f.h5' has no dataset '/a/b'".
  Dataset open_dataset(const std::string& path) const;
  // Opens dataset `path` of an untrusted file only when its data lies in this very file:
  // every component of `path` is a hard link (no soft or external link is followed), and
  // the dataset is neither virtual nor stored in external raw files. Throws
  // h5::H5Error naming the file, the object and what it points at otherwise.
  Dataset open_own_dataset(const std::string& path) const;
  // Throws h5::H5Error naming the file and the component unless every
  // component of `path` exists as a hard link (checked without following any).
  void require_hard_links(const std::string& path) const;
  // Whether every component of `path` exists as a link (of any kind), following none:
  // an untrusted file's check before open_own_dataset.
  bool has_link(const std::string& path) const;
  // The type of link `path` (hard, soft, external), without following it.
  H5L_type_t link_type(const std::string& path) const;

  // Creates dataset `path` with the tensor's dtype (types.h) and shape and writes it.
  Dataset write_tensor(const std::string& path, const at::Tensor& tensor);
  // Creates a contiguous dataset of `dtype` and `shape` whose file space is allocated
  // now and never filled, so that Dataset::storage_offset() places its bytes at once
  // (the bytes are what the file held there: write them before anyone reads).
  Dataset create_allocated(const std::string& path, at::ScalarType dtype,
                           const std::vector<int64_t>& shape);
  // Reads the whole dataset `path` (see Dataset::read).
  at::Tensor read_tensor(const std::string& path,
                         std::optional<at::ScalarType> as = std::nullopt) const;

  // Creates a scalar UTF-8 string dataset (e.g. YAML text), variable-length or, for
  // long texts written often, fixed-length (null-padded, exactly the text's bytes: one
  // plain write, where a variable-length one goes through HDF5's global heap). h5py
  // reads either as bytes (`ds[()]`); a variable-length one also as str
  // (`ds.asstr()[()]`). Text must not contain NUL bytes.
  enum class StringLength { kVariable, kFixed };
  Dataset write_string(const std::string& path, const std::string& text,
                       StringLength length = StringLength::kVariable);
  // Reads a dataset holding one string (variable or fixed length).
  std::string read_string(const std::string& path) const;

 protected:
  // For File: the root group of a file whose handle closes with H5Fclose.
  Group(Handle handle, std::string file_name)
      : Object(std::move(handle), std::move(file_name), "/") {}
};

}  // namespace dtrain::h5
