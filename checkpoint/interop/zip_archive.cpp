// ZipArchive and ZipWriter over libzip (see zip_archive.h).
#include "checkpoint/interop/zip_archive.h"

#include <zip.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "runtime/base/error.h"
#include "runtime/base/env.h"
#include "runtime/base/fs.h"

namespace dtrain::interop {
namespace {

// Deflate cannot expand data by more than ~1032:1; a larger declared ratio is a lie (or a
// bomb), refused before any allocation.
constexpr uint64_t kMaxDeflateRatio = 1100;

std::string libzip_error(int code) {
  zip_error_t error;
  zip_error_init_with_code(&error, code);
  std::string text = zip_error_strerror(&error);
  zip_error_fini(&error);
  return text;
}

// Closes a zip_file_t on scope exit.
struct ZipFileCloser {
  void operator()(zip_file_t* f) const { zip_fclose(f); }
};

}  // namespace

bool ZipArchive::looks_like_zip(const std::string& head) {
  return head.size() >= 4 && head.compare(0, 4, "PK\x03\x04", 4) == 0;
}

ZipArchive ZipArchive::open_file(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  DTRAIN_CHECK_T(CheckpointError, !ec, "cannot read '{}': {}", path, ec.message());
  int code = 0;
  zip_t* handle = zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &code);
  DTRAIN_CHECK_T(CheckpointError, handle != nullptr, "'{}' is not a readable zip archive: {}",
                 path, libzip_error(code));
  return ZipArchive(handle, path, size);
}

ZipArchive ZipArchive::open_memory(const std::string& bytes, const std::string& origin) {
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* source = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
  zip_t* handle = source ? zip_open_from_source(source, ZIP_RDONLY | ZIP_CHECKCONS, &error)
                         : nullptr;
  if (handle == nullptr) {
    const std::string text = zip_error_strerror(&error);
    if (source) zip_source_free(source);
    zip_error_fini(&error);
    throw CheckpointError(fmt::format("'{}' is not a readable zip archive: {}", origin, text));
  }
  zip_error_fini(&error);
  return ZipArchive(handle, origin, bytes.size());
}

ZipArchive::ZipArchive(zip_t* handle, std::string origin, uint64_t archive_size)
    : handle_(handle), origin_(std::move(origin)) {
  try {
    load_entries(archive_size);
  } catch (...) {
    zip_discard(handle_);
    handle_ = nullptr;
    throw;
  }
}

ZipArchive::ZipArchive(ZipArchive&& other) noexcept
    : handle_(other.handle_), origin_(std::move(other.origin_)),
      entries_(std::move(other.entries_)) {
  other.handle_ = nullptr;
}

ZipArchive& ZipArchive::operator=(ZipArchive&& other) noexcept {
  if (this != &other) {
    if (handle_) zip_discard(handle_);
    handle_ = other.handle_;
    origin_ = std::move(other.origin_);
    entries_ = std::move(other.entries_);
    other.handle_ = nullptr;
  }
  return *this;
}

ZipArchive::~ZipArchive() {
  if (handle_) zip_discard(handle_);
}

void ZipArchive::load_entries(uint64_t archive_size) {
  const zip_int64_t n = zip_get_num_entries(handle_, 0);
  DTRAIN_CHECK_T(CheckpointError, n >= 0, "'{}': cannot list the zip archive: {}", origin_,
                 zip_strerror(handle_));
  entries_.reserve(static_cast<size_t>(n));
  for (zip_int64_t i = 0; i < n; ++i) {
    zip_stat_t st;
    zip_stat_init(&st);
    DTRAIN_CHECK_T(CheckpointError, zip_stat_index(handle_, i, 0, &st) == 0,
                   "'{}': zip entry {}: {}", origin_, i, zip_strerror(handle_));
    const zip_uint64_t need = ZIP_STAT_NAME | ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE |
                              ZIP_STAT_COMP_METHOD;
    DTRAIN_CHECK_T(CheckpointError, (st.valid & need) == need,
                   "'{}': zip entry {} lacks its name, sizes or method", origin_, i);
    ZipEntry e{st.name, st.size, st.comp_size, st.comp_method == ZIP_CM_STORE};
    DTRAIN_CHECK_T(CheckpointError, e.compressed_size <= archive_size,
                   "'{}': zip entry '{}' declares {} compressed bytes, more than the archive's "
                   "{} bytes", origin_, e.name, e.compressed_size, archive_size);
    if (e.stored) {
      DTRAIN_CHECK_T(CheckpointError, e.size == e.compressed_size,
                     "'{}': zip entry '{}' is stored uncompressed but declares {} bytes and "
                     "{} compressed bytes", origin_, e.name, e.size, e.compressed_size);
    } else {
      DTRAIN_CHECK_T(CheckpointError,
                     e.size / kMaxDeflateRatio <= e.compressed_size &&
                         (st.comp_method == ZIP_CM_DEFLATE),
                     "'{}': zip entry '{}' declares {} bytes from {} compressed bytes (method "
                     "{}): refused (only stored or deflated entries within a {}:1 ratio are "
                     "read)", origin_, e.name, e.size, e.compressed_size, st.comp_method,
                     kMaxDeflateRatio);
    }
    entries_.push_back(std::move(e));
  }
}

std::optional<size_t> ZipArchive::find(const std::string& name) const {
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (entries_[i].name == name) return i;
  }
  return std::nullopt;
}

size_t ZipArchive::find_suffix(const std::string& suffix) const {
  std::optional<size_t> found;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const std::string& n = entries_[i].name;
    if (n.size() < suffix.size() || n.compare(n.size() - suffix.size(), suffix.size(), suffix)) {
      continue;
    }
    DTRAIN_CHECK_T(CheckpointError, !found, "'{}': the zip archive holds more than one '*{}' ({} "
                   "and {})", origin_, suffix, entries_[*found].name, n);
    found = i;
  }
  DTRAIN_CHECK_T(CheckpointError, found.has_value(), "'{}': the zip archive holds no '*{}'",
                 origin_, suffix);
  return *found;
}

std::string ZipArchive::read_small(size_t index, uint64_t limit) const {
  const ZipEntry& e = entries_.at(index);
  DTRAIN_CHECK_T(CheckpointError, e.size <= limit, "'{}': zip entry '{}' declares {} bytes, more "
                 "than the {} allowed", origin_, e.name, e.size, limit);
  std::string out(e.size, '\0');
  read_into(index, out.data(), e.size);
  return out;
}

void ZipArchive::read_into(size_t index, void* dst, uint64_t size) const {
  const ZipEntry& e = entries_.at(index);
  DTRAIN_CHECK_T(CheckpointError, e.size == size, "'{}': zip entry '{}' holds {} bytes, expected "
                 "{}", origin_, e.name, e.size, size);
  read_entry(index, static_cast<char*>(dst), size);
}

void ZipArchive::check_entry(size_t index) const {
  std::vector<char> buf(std::min<uint64_t>(entries_.at(index).size, 1 << 20));
  read_entry(index, buf.data(), buf.size());
}

void ZipArchive::read_entry(size_t index, char* buf, uint64_t buf_size) const {
  const ZipEntry& e = entries_.at(index);
  const uint64_t size = e.size;
  std::unique_ptr<zip_file_t, ZipFileCloser> file(zip_fopen_index(handle_, index, 0));
  DTRAIN_CHECK_T(CheckpointError, file != nullptr, "'{}': cannot open zip entry '{}': {}",
                 origin_, e.name, zip_strerror(handle_));
  uint64_t done = 0;
  while (done < size) {
    const uint64_t at = done % buf_size;
    const zip_int64_t got =
        zip_fread(file.get(), buf + at, std::min(size - done, buf_size - at));
    DTRAIN_CHECK_T(CheckpointError, got >= 0, "'{}': reading zip entry '{}': {}", origin_, e.name,
                   zip_file_strerror(file.get()));
    DTRAIN_CHECK_T(CheckpointError, got > 0, "'{}': zip entry '{}' ends after {} of its {} "
                   "declared bytes", origin_, e.name, done, size);
    done += static_cast<uint64_t>(got);
  }
  // One more read reaches the end of the entry, where libzip checks the CRC-32 and that
  // the data ends where its header said.
  char extra;
  const zip_int64_t tail = zip_fread(file.get(), &extra, 1);
  DTRAIN_CHECK_T(CheckpointError, tail >= 0, "'{}': reading zip entry '{}': {}", origin_, e.name,
                 zip_file_strerror(file.get()));
  DTRAIN_CHECK_T(CheckpointError, tail == 0, "'{}': zip entry '{}' holds more than its declared "
                 "{} bytes", origin_, e.name, size);
}

// ---- ZipWriter ----

ZipWriter::ZipWriter(std::string path) : path_(std::move(path)) {
  tmp_ = fs::temp_name_for(path_);
  int code = 0;
  handle_ = zip_open(tmp_.c_str(), ZIP_CREATE | ZIP_EXCL, &code);
  DTRAIN_CHECK_T(CheckpointError, handle_ != nullptr, "cannot create '{}': {}", tmp_,
                 libzip_error(code));
}

ZipWriter::~ZipWriter() {
  if (handle_) zip_discard(handle_);
  std::error_code ec;
  std::filesystem::remove(tmp_, ec);
}

void ZipWriter::add(const std::string& name, const void* data, uint64_t size) {
  zip_source_t* source = zip_source_buffer(handle_, data, size, 0);
  DTRAIN_CHECK_T(CheckpointError, source != nullptr, "writing '{}': {}", path_,
                 zip_strerror(handle_));
  const zip_int64_t index = zip_file_add(handle_, name.c_str(), source, ZIP_FL_ENC_UTF_8);
  if (index < 0) {
    zip_source_free(source);
    throw CheckpointError(fmt::format("writing '{}': entry '{}': {}", path_, name,
                                      zip_strerror(handle_)));
  }
  DTRAIN_CHECK_T(CheckpointError,
                 zip_set_file_compression(handle_, index, ZIP_CM_STORE, 0) == 0,
                 "writing '{}': {}", path_, zip_strerror(handle_));
}

void ZipWriter::close() {
  if (zip_close(handle_) != 0) {
    const std::string text = zip_strerror(handle_);
    throw CheckpointError(fmt::format("writing '{}': {}", path_, text));
  }
  handle_ = nullptr;
  fs::fsync_path(tmp_);
  fs::rename_durable(tmp_, path_);
}

}  // namespace dtrain::interop
