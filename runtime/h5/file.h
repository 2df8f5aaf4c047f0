// HDF5 files: create/open with the sec2 (POSIX, one file per process) driver. A File is
// also its root group.
//
//   h5::FileOptions options;
//   options.alignment = 1 << 20;
//   h5::File f = h5::File::create("shard.h5", options);
//   f.write_tensor("model/w", w);
//   f.close();                 // reports close errors; the destructor swallows them
//
// Thread-safety: not thread-safe as an object; HDF5 calls take library_mutex().
#pragma once

#include <cstdint>
#include <string>

#include "runtime/h5/group.h"

namespace dtrain::h5 {

struct FileOptions {
  // H5Pset_alignment: objects of at least `alignment_threshold` bytes start at a
  // multiple of `alignment` bytes in the file. 0 keeps HDF5's default (no alignment).
  uint64_t alignment = 0;
  uint64_t alignment_threshold = 0;
  // Replace an existing file (H5F_ACC_TRUNC); false fails instead (H5F_ACC_EXCL).
  bool overwrite = true;
};

enum class OpenMode { kReadOnly, kReadWrite };

// An open file (closed with H5Fclose); its root group "/". Move-only.
class File : public Group {
 public:
  // Creates `path`. Throws h5::H5Error naming the path and HDF5's reason.
  static File create(const std::string& path, const FileOptions& options = {});
  // Opens an existing file. Throws h5::H5Error naming the path and HDF5's
  // reason (e.g. "No such file or directory", "file signature not found").
  static File open(const std::string& path, OpenMode mode = OpenMode::kReadOnly);

  // Flushes HDF5's buffers for this file to the OS (no fsync).
  void flush();
  // The POSIX file descriptor of the sec2 driver (owned by HDF5; valid while the file
  // is open), for fsync or sync_file_range on what HDF5 has written.
  int posix_fd() const;
  // The end of the space HDF5 has allocated in the file (its "end of address space",
  // H5Fget_eoa): no object of the file lies past it, whatever the file's size.
  int64_t allocated_end() const;
  // Closes the file now, reporting errors. Throws h5::H5Error if groups,
  // datasets or attributes of the file are still open (HDF5 would otherwise delay the
  // close until they are); the File is then left open.
  void close();
  bool is_open() const { return handle_.valid(); }

 private:
  File(hid_t id, std::string path) : Group(Handle(id, H5Fclose), std::move(path)) {}
};

// Whether `path` is a readable HDF5 file (false for a missing or non-HDF5 file).
bool is_hdf5_file(const std::string& path);

}  // namespace dtrain::h5
