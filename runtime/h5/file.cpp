// File creation/opening and checked close (see file.h).
#include "runtime/h5/file.h"

#include <cstdint>

#include "runtime/base/error.h"

namespace dtrain::h5 {

File File::create(const std::string& path, const FileOptions& options) {
  ApiScope scope;
  PropertyList fapl = PropertyList::create(H5P_FILE_ACCESS);
  check(H5Pset_fapl_sec2(fapl.id()), "creating '{}': selecting the sec2 driver", path);
  if (options.alignment > 0) {
    check(H5Pset_alignment(fapl.id(), options.alignment_threshold, options.alignment),
          "creating '{}': setting alignment {} (threshold {})", path, options.alignment,
          options.alignment_threshold);
  }
  const unsigned flags = options.overwrite ? H5F_ACC_TRUNC : H5F_ACC_EXCL;
  return File(check_id(H5Fcreate(path.c_str(), flags, H5P_DEFAULT, fapl.id()),
                       "creating HDF5 file '{}'", path),
              path);
}

File File::open(const std::string& path, OpenMode mode) {
  ApiScope scope;
  PropertyList fapl = PropertyList::create(H5P_FILE_ACCESS);
  check(H5Pset_fapl_sec2(fapl.id()), "opening '{}': selecting the sec2 driver", path);
  const bool ro = mode == OpenMode::kReadOnly;
  return File(check_id(H5Fopen(path.c_str(), ro ? H5F_ACC_RDONLY : H5F_ACC_RDWR, fapl.id()),
                       "opening HDF5 file '{}' {}", path, ro ? "for reading" : "for writing"),
              path);
}

void File::flush() {
  ApiScope scope;
  check(H5Fflush(id(), H5F_SCOPE_LOCAL), "flushing HDF5 file '{}'", file_name());
}

int File::posix_fd() const {
  ApiScope scope;
  void* handle = nullptr;
  check(H5Fget_vfd_handle(id(), H5P_DEFAULT, &handle), "getting the file descriptor of '{}'",
        file_name());
  return *static_cast<int*>(handle);
}

int64_t File::allocated_end() const {
  ApiScope scope;
  haddr_t eoa = 0;
  check(H5Fget_eoa(id(), &eoa), "querying the allocated size of '{}'", file_name());
  return eoa > static_cast<haddr_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(eoa);
}

void File::close() {
  if (!is_open()) return;
  ApiScope scope;
  const ssize_t open_objects = H5Fget_obj_count(
      id(), H5F_OBJ_LOCAL | H5F_OBJ_DATASET | H5F_OBJ_GROUP | H5F_OBJ_DATATYPE | H5F_OBJ_ATTR);
  if (open_objects < 0) throw_error(fmt::format("closing HDF5 file '{}'", file_name()));
  DTRAIN_CHECK_T(H5Error, open_objects == 0,
                 "closing HDF5 file '{}': {} groups, datasets or attributes of it are still "
                 "open; close them first so that the file is complete when close() returns",
                 file_name(), open_objects);
  handle_.close(fmt::format("HDF5 file '{}'", file_name()));
}

bool is_hdf5_file(const std::string& path) {
  ApiScope scope;
  const htri_t r = H5Fis_hdf5(path.c_str());
  H5Eclear2(H5E_DEFAULT);
  return r > 0;
}

}  // namespace dtrain::h5
