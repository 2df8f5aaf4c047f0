// TFRecord framing of TensorBoard event files: CRC32C, its masked form, and the record
// layout (see docs/DESIGN.md, "TensorBoard event files").
//
//   std::string rec = frame_record(event.SerializeAsString());  // append to the file
//   for (const std::string& data : read_records(path)) event.ParseFromString(data);
//
// A record is, little-endian:
//   uint64 length | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)
// Stateless functions; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dtrain::tensorboard {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as in iSCSI and TFRecord.
uint32_t crc32c(std::string_view data);

// TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8, so that a CRC
// stored inside checksummed data does not checksum to a fixed value.
uint32_t mask_crc(uint32_t crc);

// masked_crc32c(data) == mask_crc(crc32c(data)).
inline uint32_t masked_crc32c(std::string_view data) { return mask_crc(crc32c(data)); }

// The bytes of one record holding `data`.
std::string frame_record(std::string_view data);

// The data of every record in the file at `path`, in order. Throws dtrain::Error naming
// the file and the record's offset when a header or data CRC does not match or a record
// is cut short (a writer killed mid-record leaves such a tail).
std::vector<std::string> read_records(const std::string& path);

}  // namespace dtrain::tensorboard
