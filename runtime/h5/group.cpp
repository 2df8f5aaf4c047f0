// Group navigation, creation and tensor/string convenience I/O (see group.h).
#include "runtime/h5/group.h"

#include <algorithm>

#include "runtime/base/error.h"

namespace dtrain::h5 {
namespace {

herr_t collect_link_name(hid_t /*group*/, const char* name, const H5L_info_t* /*info*/,
                         void* data) {
  static_cast<std::vector<std::string>*>(data)->emplace_back(name);
  return 0;
}

// A link-creation property list that creates missing intermediate groups.
PropertyList intermediate_groups_lcpl() {
  PropertyList lcpl = PropertyList::create(H5P_LINK_CREATE);
  check(H5Pset_create_intermediate_group(lcpl.id(), 1), "setting up intermediate group creation");
  return lcpl;
}

const char* link_kind(H5L_type_t type) {
  switch (type) {
    case H5L_TYPE_SOFT: return "a soft link";
    case H5L_TYPE_EXTERNAL: return "an external link";
    default: return "a user-defined link";
  }
}

// "/a/b/c" -> {"/a", "/a/b", "/a/b/c"} ("a/b" -> {"a", "a/b"}).
std::vector<std::string> path_prefixes(const std::string& path) {
  std::vector<std::string> out;
  std::string prefix = !path.empty() && path[0] == '/' ? "/" : "";
  for (size_t pos = 0; pos < path.size();) {
    size_t end = path.find('/', pos);
    if (end == std::string::npos) end = path.size();
    if (end > pos) {
      if (!prefix.empty() && prefix.back() != '/') prefix += '/';
      prefix += path.substr(pos, end - pos);
      out.push_back(prefix);
    }
    pos = end + 1;
  }
  return out;
}

}  // namespace

Group::Group(hid_t id, std::string file_name, std::string path)
    : Object(Handle(id, H5Gclose), std::move(file_name), std::move(path)) {}

ObjectKind Group::kind(const std::string& path) const {
  ApiScope scope;
  if (path.empty() || path == "/" || path == ".") return ObjectKind::kGroup;
  // Walk the components so that a missing or non-group parent answers kMissing rather
  // than making H5Lexists fail.
  const std::vector<std::string> prefixes = path_prefixes(path);
  for (size_t i = 0; i < prefixes.size(); ++i) {
    const std::string& prefix = prefixes[i];
    if (!check_tri(H5Lexists(id(), prefix.c_str(), H5P_DEFAULT), "looking up '{}' in {}", prefix,
                   describe())) {
      return ObjectKind::kMissing;
    }
    // Dangling soft or external links exist as links but name no object.
    if (!check_tri(H5Oexists_by_name(id(), prefix.c_str(), H5P_DEFAULT), "looking up '{}' in {}",
                   prefix, describe())) {
      return ObjectKind::kMissing;
    }
    H5O_info_t info;
    check(H5Oget_info_by_name2(id(), prefix.c_str(), &info, H5O_INFO_BASIC, H5P_DEFAULT),
          "querying '{}' in {}", prefix, describe());
    if (i + 1 == prefixes.size()) {
      switch (info.type) {
        case H5O_TYPE_GROUP:
          return ObjectKind::kGroup;
        case H5O_TYPE_DATASET:
          return ObjectKind::kDataset;
        default:
          return ObjectKind::kOther;
      }
    }
    if (info.type != H5O_TYPE_GROUP) return ObjectKind::kMissing;
  }
  return ObjectKind::kGroup;
}

bool Group::exists(const std::string& path) const { return kind(path) != ObjectKind::kMissing; }

std::vector<std::string> Group::list() const {
  ApiScope scope;
  std::vector<std::string> names;
  check(H5Literate(id(), H5_INDEX_NAME, H5_ITER_INC, nullptr, collect_link_name, &names),
        "listing group {}", describe());
  return names;
}

void Group::remove(const std::string& path) {
  ApiScope scope;
  check(H5Ldelete(id(), path.c_str(), H5P_DEFAULT), "removing '{}' from '{}'",
        join_path(this->path(), path), file_name());
}

Group Group::create_group(const std::string& path) {
  ApiScope scope;
  const std::string full = join_path(this->path(), path);
  DTRAIN_CHECK_T(H5Error, !exists(path), "cannot create group '{}' in '{}': it exists",
                 full, file_name());
  PropertyList lcpl = intermediate_groups_lcpl();
  return Group(check_id(H5Gcreate2(id(), path.c_str(), lcpl.id(), H5P_DEFAULT, H5P_DEFAULT),
                        "creating group '{}' in '{}'", full, file_name()),
               file_name(), full);
}

Group Group::open_group(const std::string& path) const {
  ApiScope scope;
  const std::string full = join_path(this->path(), path);
  const ObjectKind k = kind(path);
  DTRAIN_CHECK_T(H5Error, k == ObjectKind::kGroup, "'{}' has no group '{}'{}", file_name(),
                 full, k == ObjectKind::kMissing ? "" : " (it is not a group)");
  return Group(check_id(H5Gopen2(id(), path.c_str(), H5P_DEFAULT), "opening group '{}' in '{}'",
                        full, file_name()),
               file_name(), full);
}

Group Group::require_group(const std::string& path) {
  ApiScope scope;
  return exists(path) ? open_group(path) : create_group(path);
}

Dataset Group::create_dataset(const std::string& path, const DataType& type,
                              const std::vector<int64_t>& shape,
                              const std::vector<int64_t>& chunk) {
  ApiScope scope;
  const std::string full = join_path(this->path(), path);
  DTRAIN_CHECK_T(H5Error, !exists(path), "cannot create dataset '{}' in '{}': it exists",
                 full, file_name());
  for (int64_t d : shape) {
    DTRAIN_CHECK_T(H5Error, d >= 0,
                   "cannot create dataset '{}' in '{}': negative "
                   "extent {}",
                   full, file_name(), d);
  }
  PropertyList lcpl = intermediate_groups_lcpl();
  PropertyList dcpl = PropertyList::create(H5P_DATASET_CREATE);
  if (!chunk.empty()) {
    DTRAIN_CHECK_T(H5Error,
                   chunk.size() == shape.size() &&
                       std::all_of(chunk.begin(), chunk.end(), [](int64_t c) { return c >= 1; }),
                   "cannot create dataset '{}' in '{}': chunk shape [{}] does not fit shape [{}]",
                   full, file_name(), fmt::join(chunk, ", "), fmt::join(shape, ", "));
    const std::vector<hsize_t> dims(chunk.begin(), chunk.end());
    check(H5Pset_chunk(dcpl.id(), static_cast<int>(dims.size()), dims.data()),
          "setting chunks [{}] of dataset '{}' in '{}'", fmt::join(chunk, ", "), full, file_name());
  }
  DataSpace space = DataSpace::simple(shape);
  const std::string type_name = type.describe();
  return Dataset(check_id(H5Dcreate2(id(), path.c_str(), type.id(), space.id(), lcpl.id(),
                                     dcpl.id(), H5P_DEFAULT),
                          "creating dataset '{}' ({}) in '{}'", full, type_name, file_name()),
                 file_name(), full);
}

Dataset Group::open_dataset(const std::string& path) const {
  ApiScope scope;
  const std::string full = join_path(this->path(), path);
  const ObjectKind k = kind(path);
  DTRAIN_CHECK_T(H5Error, k == ObjectKind::kDataset, "'{}' has no dataset '{}'{}",
                 file_name(), full, k == ObjectKind::kMissing ? "" : " (it is not a dataset)");
  return Dataset(check_id(H5Dopen2(id(), path.c_str(), H5P_DEFAULT), "opening dataset '{}' in '{}'",
                          full, file_name()),
                 file_name(), full);
}

Dataset Group::write_tensor(const std::string& path, const at::Tensor& tensor) {
  ApiScope scope;
  Dataset d = create_dataset(path, datatype_for(tensor.scalar_type()),
                             std::vector<int64_t>(tensor.sizes().begin(), tensor.sizes().end()));
  d.write(tensor);
  return d;
}

Dataset Group::create_allocated(const std::string& path, at::ScalarType dtype,
                                const std::vector<int64_t>& shape) {
  ApiScope scope;
  const std::string full = join_path(this->path(), path);
  PropertyList lcpl = intermediate_groups_lcpl();
  PropertyList dcpl = PropertyList::create(H5P_DATASET_CREATE);
  check(H5Pset_alloc_time(dcpl.id(), H5D_ALLOC_TIME_EARLY), "early allocation of dataset '{}'", full);
  check(H5Pset_fill_time(dcpl.id(), H5D_FILL_TIME_NEVER), "no fill of dataset '{}'", full);
  DataType type = datatype_for(dtype);
  DataSpace space = DataSpace::simple(shape);
  return Dataset(check_id(H5Dcreate2(id(), path.c_str(), type.id(), space.id(), lcpl.id(), dcpl.id(),
                                     H5P_DEFAULT),
                          "creating dataset '{}' in '{}'", full, file_name()),
                 file_name(), full);
}

at::Tensor Group::read_tensor(const std::string& path, std::optional<at::ScalarType> as) const {
  return open_dataset(path).read(as);
}

Dataset Group::write_string(const std::string& path, const std::string& text,
                            StringLength length) {
  ApiScope scope;
  const bool fixed = length == StringLength::kFixed;
  DataType type = fixed ? DataType::fixed_string(text.size()) : DataType::variable_string();
  Dataset d = create_dataset(path, type, {});
  const char* ptr = text.c_str();
  const void* data = fixed ? static_cast<const void*>(ptr) : static_cast<const void*>(&ptr);
  if (!fixed || !text.empty()) {
    check(H5Dwrite(d.id(), type.id(), H5S_ALL, H5S_ALL, H5P_DEFAULT, data),
          "writing string dataset {}", d.describe());
  }
  return d;
}

H5L_type_t Group::link_type(const std::string& path) const {
  H5L_info_t info;
  check(H5Lget_info(id(), path.c_str(), &info, H5P_DEFAULT), "querying link '{}' in {}", path,
        describe());
  return info.type;
}

bool Group::has_link(const std::string& path) const {
  ApiScope scope;
  for (const std::string& prefix : path_prefixes(path)) {
    if (!check_tri(H5Lexists(id(), prefix.c_str(), H5P_DEFAULT), "looking up '{}' in {}", prefix,
                   describe())) {
      return false;
    }
    if (link_type(prefix) != H5L_TYPE_HARD) return true;  // not followed: open_own_dataset says why
  }
  return true;
}

void Group::require_hard_links(const std::string& path) const {
  ApiScope scope;
  // Each component's link, looked at before anything is traversed.
  DTRAIN_CHECK_T(H5Error, has_link(path), "'{}' has no dataset '{}'", file_name(),
                 join_path(this->path(), path));
  for (const std::string& prefix : path_prefixes(path)) {
    const H5L_type_t type = link_type(prefix);
    DTRAIN_CHECK_T(H5Error, type == H5L_TYPE_HARD,
                   "'{}': '{}' is {}; a checkpoint reads only data stored in its own files",
                   file_name(), prefix, link_kind(type));
  }
}

Dataset Group::open_own_dataset(const std::string& path) const {
  ApiScope scope;
  // One walk over the components, following none but hard links to groups (a load opens
  // hundreds of datasets: each HDF5 lookup here costs microseconds).
  const std::string full = join_path(this->path(), path);
  const std::vector<std::string> prefixes = path_prefixes(path);
  DTRAIN_CHECK_T(H5Error, !prefixes.empty(), "'{}' has no dataset '{}'", file_name(), full);
  for (size_t i = 0; i < prefixes.size(); ++i) {
    const std::string& prefix = prefixes[i];
    DTRAIN_CHECK_T(H5Error,
                   check_tri(H5Lexists(id(), prefix.c_str(), H5P_DEFAULT), "looking up '{}' in {}",
                             prefix, describe()),
                   "'{}' has no dataset '{}'", file_name(), full);
    const H5L_type_t type = link_type(prefix);
    DTRAIN_CHECK_T(H5Error, type == H5L_TYPE_HARD,
                   "'{}': '{}' is {}; a checkpoint reads only data stored in its own files",
                   file_name(), prefix, link_kind(type));
    if (i + 1 == prefixes.size()) break;
    H5O_info_t info;
    check(H5Oget_info_by_name2(id(), prefix.c_str(), &info, H5O_INFO_BASIC, H5P_DEFAULT),
          "querying '{}' in {}", prefix, describe());
    DTRAIN_CHECK_T(H5Error, info.type == H5O_TYPE_GROUP, "'{}' has no dataset '{}'", file_name(), full);
  }
  const hid_t object = check_id(H5Oopen(id(), path.c_str(), H5P_DEFAULT), "opening '{}' in '{}'",
                                full, file_name());
  if (H5Iget_type(object) != H5I_DATASET) {
    H5Oclose(object);
    throw H5Error(fmt::format("'{}' has no dataset '{}' (it is not a dataset)", file_name(), full));
  }
  Dataset ds(object, file_name(), full);
  PropertyList dcpl = PropertyList::adopt(check_id(H5Dget_create_plist(ds.id()),
                                                   "querying dataset '{}' in '{}'", path,
                                                   file_name()));
  const H5D_layout_t layout = H5Pget_layout(dcpl.id());
  DTRAIN_CHECK_T(H5Error, layout != H5D_VIRTUAL,
                 "'{}': dataset '{}' is a virtual dataset (its data would come from other "
                 "files); a checkpoint reads only data stored in its own files", file_name(), path);
  const int external = H5Pget_external_count(dcpl.id());
  if (external != 0) {
    char name[256] = "?";
    off_t offset = 0;
    hsize_t size = 0;
    if (external > 0) H5Pget_external(dcpl.id(), 0, sizeof name, name, &offset, &size);
    throw H5Error(fmt::format(
        "'{}': dataset '{}' stores its data in the external file '{}'; a checkpoint reads only "
        "data stored in its own files", file_name(), path, name));
  }
  return ds;
}

std::string Group::read_string(const std::string& path) const {
  return open_dataset(path).read_string();
}

}  // namespace dtrain::h5
