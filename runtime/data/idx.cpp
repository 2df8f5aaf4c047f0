// IDX reader over zlib (see idx.h).
#include "runtime/data/idx.h"

#include <zlib.h>

#include <filesystem>
#include <memory>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "runtime/base/error.h"

namespace dtrain::data {
namespace {

struct GzClose {
  void operator()(gzFile f) const { gzclose(f); }
};
using GzFile = std::unique_ptr<std::remove_pointer_t<gzFile>, GzClose>;

// Reads exactly `n` bytes (gzread takes an unsigned count, so in chunks); returns how
// many it got before the end of the data. Throws on a zlib error (corrupt stream).
int64_t read_fully(gzFile f, uint8_t* dst, int64_t n, const std::string& path) {
  int64_t got = 0;
  while (got < n) {
    const unsigned chunk = static_cast<unsigned>(std::min<int64_t>(n - got, 1 << 30));
    const int r = gzread(f, dst + got, chunk);
    if (r < 0) {
      int err = 0;
      const char* msg = gzerror(f, &err);
      throw Error(fmt::format("'{}': cannot decompress: {}", path, msg ? msg : "zlib error"));
    }
    if (r == 0) break;
    got += r;
  }
  return got;
}

}  // namespace

IdxArray read_idx(const std::string& path, int rank, int64_t max_bytes) {
  std::error_code ec;
  DTRAIN_CHECK(std::filesystem::is_regular_file(path, ec), "'{}' is missing or not a regular file",
               path);
  GzFile f(gzopen(path.c_str(), "rb"));  // reads plain files too
  DTRAIN_CHECK(f != nullptr, "cannot open '{}'", path);
  uint8_t header[4] = {0, 0, 0, 0};
  DTRAIN_CHECK(read_fully(f.get(), header, 4, path) == 4, "'{}' is truncated: no IDX header",
               path);
  DTRAIN_CHECK(header[0] == 0 && header[1] == 0,
               "'{}' is not an IDX file (magic {:02x} {:02x} {:02x} {:02x})", path, header[0],
               header[1], header[2], header[3]);
  DTRAIN_CHECK(header[2] == 0x08, "'{}': IDX data type 0x{:02x}, expected 0x08 (uint8)", path,
               header[2]);
  DTRAIN_CHECK(header[3] == rank, "'{}': IDX rank {}, expected {}", path, header[3], rank);
  IdxArray out;
  int64_t bytes = 1;
  for (int d = 0; d < rank; ++d) {
    uint8_t be[4];
    DTRAIN_CHECK(read_fully(f.get(), be, 4, path) == 4, "'{}' is truncated in its header", path);
    const int64_t extent = (int64_t{be[0]} << 24) | (be[1] << 16) | (be[2] << 8) | be[3];
    DTRAIN_CHECK(extent > 0 && bytes <= max_bytes / extent,
                 "'{}': extent {} of axis {} is 0 or makes the data larger than {} bytes", path,
                 extent, d, max_bytes);
    bytes *= extent;
    out.dims.push_back(extent);
  }
  out.data = at::empty(out.dims, at::TensorOptions().dtype(at::kByte));
  const int64_t got = read_fully(f.get(), out.data.data_ptr<uint8_t>(), bytes, path);
  DTRAIN_CHECK(got == bytes, "'{}' is truncated: its header [{}] declares {} bytes of data, it has {}",
               path, fmt::join(out.dims, ", "), bytes, got);
  uint8_t extra = 0;
  DTRAIN_CHECK(read_fully(f.get(), &extra, 1, path) == 0,
               "'{}' has bytes after the {} its header [{}] declares", path, bytes,
               fmt::join(out.dims, ", "));
  return out;
}

}  // namespace dtrain::data
