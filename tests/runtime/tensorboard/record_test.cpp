// Unit tests of runtime/tensorboard/record.h: CRC32C test vectors (RFC 3720 B.4), the
// masked CRC, record framing and the reader's checks.
#include "runtime/tensorboard/record.h"

#include <gtest/gtest.h>

#include <string>

#include "runtime/base/error.h"
#include "tests/test_util.h"

namespace dtrain::tensorboard {
namespace {

uint32_t unmask(uint32_t masked) {
  const uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}

uint64_t le(const std::string& s, size_t offset, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v |= uint64_t{static_cast<unsigned char>(s[offset + i])} << (8 * i);
  return v;
}

TEST(Crc32cTest, KnownVectors) {
  EXPECT_EQ(crc32c(""), 0u);
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);  // the CRC catalogue's check value
  // RFC 3720 (iSCSI) appendix B.4.
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  std::string ascending, descending;
  for (int i = 0; i < 32; ++i) {
    ascending.push_back(static_cast<char>(i));
    descending.push_back(static_cast<char>(31 - i));
  }
  EXPECT_EQ(crc32c(ascending), 0x46DD794Eu);
  EXPECT_EQ(crc32c(descending), 0x113FDB5Cu);
}

TEST(Crc32cTest, MaskIsInvertibleAndChangesTheValue) {
  for (const std::string s : {"", "a", "123456789", "brain.Event:2"}) {
    const uint32_t crc = crc32c(s);
    EXPECT_NE(mask_crc(crc), crc) << s;
    EXPECT_NE(mask_crc(mask_crc(crc)), crc) << s;
    EXPECT_EQ(unmask(mask_crc(crc)), crc) << s;
    EXPECT_EQ(masked_crc32c(s), mask_crc(crc)) << s;
  }
}

TEST(RecordTest, FramingLayout) {
  const std::string data = "hello, tensorboard";
  const std::string rec = frame_record(data);
  ASSERT_EQ(rec.size(), 8 + 4 + data.size() + 4);
  EXPECT_EQ(le(rec, 0, 8), data.size());
  EXPECT_EQ(le(rec, 8, 4), masked_crc32c(rec.substr(0, 8)));
  EXPECT_EQ(rec.substr(12, data.size()), data);
  EXPECT_EQ(le(rec, 12 + data.size(), 4), masked_crc32c(data));
}

TEST(RecordTest, ReadsBackEveryRecord) {
  testutil::TempDir tmp;
  const std::vector<std::string> records = {"", "x", std::string(1000, '\7'), "last"};
  std::string file;
  for (const auto& r : records) file += frame_record(r);
  EXPECT_EQ(read_records(tmp.write("events", file)), records);
}

TEST(RecordTest, ReaderRejectsCorruptionAndTornTailsNamingTheFile) {
  testutil::TempDir tmp;
  const std::string good = frame_record("first") + frame_record("second record");
  const size_t second = frame_record("first").size();
  auto expect_error = [&](const std::string& bytes, const std::string& what) {
    const std::string path = tmp.write("bad", bytes);
    try {
      read_records(path);
      ADD_FAILURE() << "no error for " << what;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_NE(msg.find(what), std::string::npos) << msg;
    }
  };
  std::string bad_data = good;
  bad_data[second + 12] ^= 1;
  expect_error(bad_data, "data CRC mismatch in the record at offset " + std::to_string(second));
  std::string bad_length = good;
  bad_length[second] ^= 1;
  expect_error(bad_length, "length CRC mismatch");
  expect_error(good.substr(0, good.size() - 1), "cut short");
  expect_error(good.substr(0, second + 5), "cut short in its header");
}

}  // namespace
}  // namespace dtrain::tensorboard
