// Reading torch.save's zip and legacy formats and plain pickles (see torch_file.h).
#include "checkpoint/interop/torch_file.h"

#include <cstring>
#include <map>
#include <set>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "checkpoint/interop/buffers.h"
#include "checkpoint/interop/pickle_globals.h"
#include "checkpoint/interop/zip_archive.h"
#include "runtime/base/error.h"
#include "runtime/base/fs.h"

namespace dtrain::interop {
namespace {

using internal::refuse;

// The legacy format opens with this pickle: protocol 2, LONG1 0x1950a86a20f9469cfc6c.
const std::string kLegacyMagic("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e", 15);
// data.pkl larger than this is refused (a state dict's pickle is a few MB at most).
constexpr uint64_t kMaxPickleBytes = uint64_t{1} << 30;

// The fields of a storage's persistent id: ('storage', type, key, location, numel[, view]).
struct StorageId {
  c10::ScalarType dtype;
  std::string key;
  int64_t numel;
  const PyObject* view = nullptr;  // legacy only: (view_key, offset, size) or None
};

StorageId parse_storage_id(const PyObject& pid, const std::string& origin, bool legacy) {
  const size_t n = legacy ? 6 : 5;
  if (pid.type != PyType::kTuple || pid.items.size() != n || pid.items[0]->type != PyType::kStr ||
      pid.items[0]->str() != "storage") {
    refuse(origin, fmt::format("a persistent id is not ('storage', type, key, location, numel{})",
                               legacy ? ", view" : ""));
  }
  StorageId id;
  id.dtype = internal::storage_dtype(*pid.items[1], origin);
  if (pid.items[2]->type != PyType::kStr) refuse(origin, "a storage key is not a string");
  id.key = pid.items[2]->str();
  if (pid.items[4]->type != PyType::kInt || pid.items[4]->i < 0) {
    refuse(origin, fmt::format("storage '{}' declares a size that is not a count", id.key));
  }
  id.numel = pid.items[4]->i;
  if (legacy && pid.items[5]->type != PyType::kNone) id.view = pid.items[5];
  return id;
}

// Bytes of `numel` elements of `dtype`, or -1 on overflow.
int64_t storage_bytes(int64_t numel, c10::ScalarType dtype) {
  const int64_t size = static_cast<int64_t>(c10::elementSize(dtype));
  return numel > INT64_MAX / size ? -1 : numel * size;
}

PickleFile read_zip(const ZipArchive& zip) {
  const std::string& origin = zip.origin();
  const size_t pkl = zip.find_suffix("data.pkl");
  const std::string& pkl_name = zip.entries()[pkl].name;
  const std::string prefix = pkl_name.substr(0, pkl_name.size() - std::string("data.pkl").size());
  if (auto bo = zip.find(prefix + "byteorder")) {
    const std::string order = zip.read_small(*bo, 16);
    if (order != "little") refuse(origin, fmt::format("byte order '{}' is not read", order));
  }
  const std::string bytes = zip.read_small(pkl, kMaxPickleBytes);
  PickleFile out{std::make_unique<PyHeap>(), nullptr, "torch zip"};
  std::map<std::string, PyObject*> storages;
  UnpickleOptions options{origin, {}, 100};
  options.persistent_load = [&](const PyObject& pid, PyHeap& heap) -> PyObject* {
    const StorageId id = parse_storage_id(pid, origin, /*legacy=*/false);
    if (auto it = storages.find(id.key); it != storages.end()) {
      if (it->second->tensor.scalar_type() != id.dtype || it->second->tensor.numel() != id.numel) {
        refuse(origin, fmt::format("storage '{}' is named twice with different types or sizes",
                                   id.key));
      }
      return it->second;
    }
    const auto record = zip.find(prefix + "data/" + id.key);
    if (!record) refuse(origin, fmt::format("storage '{}' has no record '{}data/{}'", id.key,
                                            prefix, id.key));
    const int64_t nbytes = storage_bytes(id.numel, id.dtype);
    if (nbytes < 0 || static_cast<uint64_t>(nbytes) != zip.entries()[*record].size) {
      refuse(origin, fmt::format("storage '{}' declares {} elements of {} ({} bytes) but its "
                                 "record holds {} bytes", id.key, id.numel,
                                 c10::toString(id.dtype), nbytes, zip.entries()[*record].size));
    }
    PyObject* s = heap.make(PyType::kStorage, origin);
    s->tensor = empty_for_read({id.numel}, id.dtype);
    zip.read_into(*record, s->tensor.data_ptr(), static_cast<uint64_t>(nbytes));
    check_bool_bytes(s->tensor, fmt::format("'{}': storage '{}'", origin, id.key));
    storages[id.key] = s;
    return s;
  };
  size_t pos = 0;
  out.root = unpickle(bytes, &pos, *out.heap, options);
  return out;
}

// The legacy format: magic, protocol, sys_info, the object (storages by persistent id),
// the list of storage keys, then each storage as an 8-byte element count and its bytes.
PickleFile read_legacy(const std::string& bytes, const std::string& origin) {
  PickleFile out{std::make_unique<PyHeap>(), nullptr, "torch legacy"};
  size_t pos = kLegacyMagic.size();
  UnpickleOptions plain{origin, {}, 100};
  const PyObject* protocol = unpickle(bytes, &pos, *out.heap, plain);
  if (protocol->type != PyType::kInt || protocol->i != 1001) {
    refuse(origin, "legacy torch file with an unknown protocol version");
  }
  const PyObject* sys_info = unpickle(bytes, &pos, *out.heap, plain);
  const PyObject* little = sys_info->get("little_endian");
  if (little && little->i == 0) refuse(origin, "big-endian legacy files are not read");
  std::map<std::string, PyObject*> roots;
  std::map<std::string, PyObject*> views;
  UnpickleOptions options{origin, {}, 100};
  options.persistent_load = [&](const PyObject& pid, PyHeap& heap) -> PyObject* {
    const StorageId id = parse_storage_id(pid, origin, /*legacy=*/true);
    PyObject*& root = roots[id.key];
    if (!root) {
      const int64_t nbytes = storage_bytes(id.numel, id.dtype);
      if (nbytes < 0 || static_cast<uint64_t>(nbytes) > bytes.size()) {
        refuse(origin, fmt::format("storage '{}' declares {} elements, more than the file holds",
                                   id.key, id.numel));
      }
      root = heap.make(PyType::kStorage, origin);
      root->tensor = empty_for_read({id.numel}, id.dtype);
    }
    if (!id.view) return root;
    const auto& v = id.view->items;
    if (id.view->type != PyType::kTuple || v.size() != 3 || v[1]->type != PyType::kInt ||
        v[2]->type != PyType::kInt || v[1]->i < 0 || v[2]->i < 0 ||
        v[1]->i > root->tensor.numel() - v[2]->i) {
      refuse(origin, fmt::format("a view of storage '{}' lies outside it", id.key));
    }
    PyObject* view = heap.make(PyType::kStorage, origin);
    view->tensor = root->tensor.narrow(0, v[1]->i, v[2]->i);
    return view;
  };
  out.root = unpickle(bytes, &pos, *out.heap, options);
  const PyObject* keys = unpickle(bytes, &pos, *out.heap, plain);
  if (keys->type != PyType::kList) refuse(origin, "the legacy storage key list is missing");
  std::set<std::string> filled;
  for (const auto* k : keys->items) {
    const std::string key = k->str();
    auto it = roots.find(key);
    if (it == roots.end() || !filled.insert(key).second) {
      refuse(origin, fmt::format("storage key '{}' is unknown or listed twice", key));
    }
    const at::Tensor& t = it->second->tensor;
    if (bytes.size() - pos < 8) refuse(origin, fmt::format("storage '{}' is truncated", key));
    int64_t numel = 0;
    std::memcpy(&numel, bytes.data() + pos, 8);
    pos += 8;
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    if (numel != t.numel() || bytes.size() - pos < nbytes) {
      refuse(origin, fmt::format("storage '{}' holds {} elements, expected {}, or is truncated",
                                 key, numel, t.numel()));
    }
    if (nbytes) std::memcpy(t.data_ptr(), bytes.data() + pos, nbytes);
    check_bool_bytes(t, fmt::format("'{}': storage '{}'", origin, key));
    pos += nbytes;
  }
  if (filled.size() != roots.size()) refuse(origin, "a storage's data is missing");
  return out;
}

PickleFile read_plain(const std::string& bytes, const std::string& origin) {
  PickleFile out{std::make_unique<PyHeap>(), nullptr, "pickle"};
  size_t pos = 0;
  out.root = unpickle(bytes, &pos, *out.heap, {origin, {}, 100});
  return out;
}

}  // namespace

std::string read_file_head(const std::string& path, size_t n) {
  try {
    return fs::read_file_head(path, n);
  } catch (const std::exception& e) {
    throw CheckpointError(e.what());
  }
}

PickleFile read_pickle_file(const std::string& path) {
  if (ZipArchive::looks_like_zip(read_file_head(path))) {
    return read_zip(ZipArchive::open_file(path));
  }
  std::string bytes;
  try {
    bytes = fs::read_file(path);
  } catch (const std::exception& e) {
    throw CheckpointError(e.what());
  }
  return parse_pickle_bytes(bytes, path);
}

PickleFile parse_pickle_bytes(const std::string& bytes, const std::string& origin) {
  if (ZipArchive::looks_like_zip(bytes)) {
    ZipArchive zip = ZipArchive::open_memory(bytes, origin);
    return read_zip(zip);
  }
  if (bytes.rfind(kLegacyMagic, 0) == 0) return read_legacy(bytes, origin);
  if (bytes.rfind("\x89HDF", 0) == 0) {
    refuse(origin, "this is an HDF5 file, not a PyTorch file (a dtrain checkpoint is loaded by "
                   "its directory)");
  }
  if (bytes.empty() || static_cast<unsigned char>(bytes[0]) != 0x80) {
    refuse(origin, "not a PyTorch file: neither a zip archive (torch.save), a legacy torch file, "
                   "nor a pickle of protocol 2 or later");
  }
  return read_plain(bytes, origin);
}

}  // namespace dtrain::interop
