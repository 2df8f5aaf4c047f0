// Virtual datasets created and their mappings read back (see virtual.h).
#include "runtime/h5/virtual.h"

#include "runtime/base/error.h"

namespace dtrain::h5 {
namespace {

// A string property of mapping `i` through an H5Pget_virtual_* getter (length first).
template <typename Getter>
std::string mapping_string(Getter get, hid_t dcpl, size_t i, const std::string& what) {
  const ssize_t n = get(dcpl, i, nullptr, 0);
  check(n < 0 ? -1 : 0, "reading the {} of a virtual mapping", what);
  DTRAIN_CHECK_T(H5Error, n <= 4096, "a virtual mapping's {} is {} bytes long", what, n);
  std::string s(static_cast<size_t>(n) + 1, '\0');
  check(get(dcpl, i, s.data(), s.size()) < 0 ? -1 : 0, "reading the {} of a virtual mapping", what);
  s.resize(static_cast<size_t>(n));
  return s;
}

// The bounding block of `space`'s selection, and whether the selection is exactly it.
bool selected_block(const DataSpace& space, std::vector<int64_t>& start, std::vector<int64_t>& count) {
  const std::vector<int64_t> dims = space.dims();
  start.assign(dims.size(), 0);
  count = dims;
  if (dims.empty()) return H5Sget_select_npoints(space.id()) == 1;
  std::vector<hsize_t> lo(dims.size()), hi(dims.size());
  const hssize_t points = H5Sget_select_npoints(space.id());
  if (points <= 0 || H5Sget_select_bounds(space.id(), lo.data(), hi.data()) < 0) return false;
  hssize_t block = 1;
  for (size_t d = 0; d < dims.size(); ++d) {
    start[d] = static_cast<int64_t>(lo[d]);
    count[d] = static_cast<int64_t>(hi[d] - lo[d] + 1);
    block *= count[d];
  }
  return block == points;
}

}  // namespace

Dataset create_virtual_dataset(Group& group, const std::string& path, const DataType& type,
                               const std::vector<int64_t>& shape,
                               const std::vector<VirtualMapping>& mappings) {
  ApiScope scope;
  const std::string where = fmt::format("virtual dataset '{}' in '{}'", path, group.file_name());
  DataSpace vspace = DataSpace::simple(shape);  // scalar when shape is {}
  PropertyList dcpl = PropertyList::create(H5P_DATASET_CREATE);
  for (const VirtualMapping& m : mappings) {
    DTRAIN_CHECK_T(H5Error,
                   m.source_whole && m.start.size() == shape.size() &&
                       m.count.size() == shape.size(),
                   "creating {}: mapping '{}:{}' must map a whole source dataset to a block "
                   "with one start and count per axis ({})",
                   where, m.file, m.dataset, shape.size());
    DataSpace src = DataSpace::simple(m.count);
    if (!shape.empty()) {
      int64_t n = 1;
      for (int64_t d : m.count) n *= d;
      if (n == 0) continue;
      std::vector<hsize_t> start(m.start.begin(), m.start.end());
      std::vector<hsize_t> count(m.count.begin(), m.count.end());
      check(H5Sselect_hyperslab(vspace.id(), H5S_SELECT_SET, start.data(), nullptr, count.data(),
                                nullptr),
            "selecting rows of {}", where);
    }
    check(H5Pset_virtual(dcpl.id(), vspace.id(), m.file.c_str(), m.dataset.c_str(), src.id()),
          "mapping '{}:{}' into {}", m.file, m.dataset, where);
  }
  if (!shape.empty()) check(H5Sselect_all(vspace.id()), "selecting all of {}", where);
  PropertyList lcpl = PropertyList::create(H5P_LINK_CREATE);
  check(H5Pset_create_intermediate_group(lcpl.id(), 1), "creating the parents of {}", where);
  const hid_t id = check_id(H5Dcreate2(group.id(), path.c_str(), type.id(), vspace.id(),
                                       lcpl.id(), dcpl.id(), H5P_DEFAULT),
                            "creating {}", where);
  return Dataset(id, group.file_name(), join_path(group.path(), path));
}

std::vector<VirtualMapping> virtual_mappings(const Group& group, const std::string& path) {
  ApiScope scope;
  group.require_hard_links(path);
  Dataset ds = group.open_dataset(path);
  PropertyList dcpl = PropertyList::adopt(
      check_id(H5Dget_create_plist(ds.id()), "querying dataset '{}' in '{}'", path, group.file_name()));
  DTRAIN_CHECK_T(H5Error, H5Pget_layout(dcpl.id()) == H5D_VIRTUAL,
                 "'{}': '{}' is not a virtual dataset", group.file_name(), path);
  size_t n = 0;
  check(H5Pget_virtual_count(dcpl.id(), &n), "counting the mappings of '{}'", path);
  std::vector<VirtualMapping> maps;
  for (size_t i = 0; i < n; ++i) {
    VirtualMapping m;
    m.file = mapping_string(H5Pget_virtual_filename, dcpl.id(), i, "file name");
    m.dataset = mapping_string(H5Pget_virtual_dsetname, dcpl.id(), i, "dataset name");
    DataSpace vspace(check_id(H5Pget_virtual_vspace(dcpl.id(), i), "mapping {} of '{}'", i, path));
    DataSpace src(check_id(H5Pget_virtual_srcspace(dcpl.id(), i), "mapping {} of '{}'", i, path));
    DTRAIN_CHECK_T(H5Error, selected_block(vspace, m.start, m.count),
                   "'{}': mapping {} of virtual dataset '{}' (from '{}:{}') is not one block",
                   group.file_name(), i, path, m.file, m.dataset);
    // HDF5 keeps no extent for an "all" source selection; a hyperslab must be one block.
    m.source_whole = H5Sget_select_type(src.id()) == H5S_SEL_ALL;
    maps.push_back(std::move(m));
  }
  return maps;
}

}  // namespace dtrain::h5
