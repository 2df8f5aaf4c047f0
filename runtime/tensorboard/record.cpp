// TFRecord framing and CRC32C (Boost.CRC) for TensorBoard event files.
#include "runtime/tensorboard/record.h"

#include <boost/crc.hpp>

#include "runtime/base/error.h"
#include "runtime/base/fs.h"

namespace dtrain::tensorboard {
namespace {

// Castagnoli polynomial, reflected in and out, initial and final XOR all ones.
using Crc32c = boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true>;

constexpr uint32_t kMaskDelta = 0xa282ead8u;
constexpr size_t kHeaderSize = 8 + 4;
constexpr size_t kFooterSize = 4;

void put_le(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

uint64_t get_le(std::string_view in, size_t offset, int bytes) {
  uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) {
    value |= static_cast<uint64_t>(static_cast<unsigned char>(in[offset + i])) << (8 * i);
  }
  return value;
}

}  // namespace

uint32_t crc32c(std::string_view data) {
  Crc32c crc;
  crc.process_bytes(data.data(), data.size());
  return crc.checksum();
}

uint32_t mask_crc(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + kMaskDelta; }

std::string frame_record(std::string_view data) {
  std::string out;
  out.reserve(kHeaderSize + data.size() + kFooterSize);
  put_le(out, data.size(), 8);
  put_le(out, masked_crc32c(std::string_view(out.data(), 8)), 4);
  out.append(data.data(), data.size());
  put_le(out, masked_crc32c(data), 4);
  return out;
}

std::vector<std::string> read_records(const std::string& path) {
  const std::string bytes = fs::read_file(path);
  const std::string_view in(bytes);
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < in.size()) {
    DTRAIN_CHECK(in.size() - pos >= kHeaderSize,
                 "event file '{}': record at offset {} is cut short in its header", path, pos);
    const uint64_t length = get_le(in, pos, 8);
    DTRAIN_CHECK(get_le(in, pos + 8, 4) == masked_crc32c(in.substr(pos, 8)),
                 "event file '{}': length CRC mismatch in the record at offset {}", path, pos);
    DTRAIN_CHECK(length <= in.size() - pos - kHeaderSize &&
                     in.size() - pos - kHeaderSize - length >= kFooterSize,
                 "event file '{}': record at offset {} (length {}) is cut short", path, pos,
                 length);
    const std::string_view data = in.substr(pos + kHeaderSize, length);
    DTRAIN_CHECK(get_le(in, pos + kHeaderSize + length, 4) == masked_crc32c(data),
                 "event file '{}': data CRC mismatch in the record at offset {}", path, pos);
    out.emplace_back(data);
    pos += kHeaderSize + length + kFooterSize;
  }
  return out;
}

}  // namespace dtrain::tensorboard
