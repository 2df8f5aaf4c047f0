// Read-only access to a zip archive (what torch.save writes since PyTorch 1.6), over
// libzip, with every size checked before anything is allocated.
//
//   ZipArchive zip = ZipArchive::open_file("w.pth");
//   std::string pkl = zip.read_small(zip.find_suffix("/data.pkl"), 1 << 30);
//   zip.read_into(index, buffer, size);      // exactly `size` bytes or a CheckpointError
//
// Writing: ZipWriter adds uncompressed entries and commits on close(). Neither class is
// thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

struct zip;

namespace dtrain::interop {

// One entry of the central directory.
struct ZipEntry {
  std::string name;
  uint64_t size = 0;             // uncompressed size (as declared)
  uint64_t compressed_size = 0;  // bytes in the archive
  bool stored = true;            // false when deflated (or another method)
};

class ZipArchive {
 public:
  // Opens `path`, checking the central directory against the local headers (libzip's
  // ZIP_CHECKCONS). Throws dtrain::CheckpointError naming `path` when it is not a zip
  // archive or is damaged.
  static ZipArchive open_file(const std::string& path);
  // The same over `bytes`, which must outlive the archive; `origin` names it in errors.
  static ZipArchive open_memory(const std::string& bytes, const std::string& origin);
  // Whether `head` (the first bytes of a file) starts like a zip archive ("PK\3\4").
  static bool looks_like_zip(const std::string& head);

  ZipArchive(ZipArchive&&) noexcept;
  ZipArchive& operator=(ZipArchive&&) noexcept;
  ~ZipArchive();

  const std::vector<ZipEntry>& entries() const { return entries_; }
  // The index of the entry named exactly `name`, or nullopt.
  std::optional<size_t> find(const std::string& name) const;
  // The index of the only entry whose name ends with `suffix` (e.g. "/data.pkl"); throws
  // when there is none or more than one.
  size_t find_suffix(const std::string& suffix) const;
  // Reads entry `index` whole; throws when its declared size exceeds `limit` bytes.
  std::string read_small(size_t index, uint64_t limit) const;
  // Reads exactly `size` bytes of entry `index` (which must declare that size) into
  // `dst`. The data is checked against the entry's CRC-32 as it is read.
  void read_into(size_t index, void* dst, uint64_t size) const;
  // Reads entry `index` to its end through a small buffer, checking its CRC-32 and that it
  // holds exactly its declared bytes; throws CheckpointError naming the entry otherwise.
  void check_entry(size_t index) const;
  const std::string& origin() const { return origin_; }

 private:
  ZipArchive(struct zip* handle, std::string origin, uint64_t archive_size);
  void load_entries(uint64_t archive_size);
  // Reads all of entry `index` (its declared size) into `buf`, wrapping around every
  // `buf_size` bytes, then checks the end (CRC-32, no extra bytes).
  void read_entry(size_t index, char* buf, uint64_t buf_size) const;

  struct zip* handle_ = nullptr;
  std::string origin_;
  std::vector<ZipEntry> entries_;
};

// Writes a new zip archive of uncompressed entries to `path` (a temporary beside it,
// renamed into place by close(); nothing is left behind on failure).
class ZipWriter {
 public:
  explicit ZipWriter(std::string path);
  ~ZipWriter();
  ZipWriter(const ZipWriter&) = delete;
  ZipWriter& operator=(const ZipWriter&) = delete;
  // Adds `name` with `size` bytes at `data`, which must stay valid until close().
  void add(const std::string& name, const void* data, uint64_t size);
  // Writes the archive, fsyncs it and renames it to `path`.
  void close();

 private:
  std::string path_, tmp_;
  struct zip* handle_ = nullptr;
};

}  // namespace dtrain::interop
