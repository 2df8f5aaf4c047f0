// The IDX reader and Fashion-MNIST: files crafted here with zlib (every header error,
// truncation, trailing bytes, a corrupt gzip stream), and Debian's real
// dataset-fashion-mnist files when installed (counts, label histogram, normalization).
#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "runtime/base/error.h"
#include "runtime/data/fashion_mnist.h"
#include "runtime/data/idx.h"
#include "tests/gtest_util.h"
#include "tests/test_util.h"

namespace dtrain::data {
namespace {

using dtrain::testing::error_of;

std::vector<uint8_t> idx_bytes(uint8_t type, const std::vector<uint32_t>& dims,
                               const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(d >> s));
  }
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  gzclose(f);
}

class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testutil::make_temp_dir("idx"); }
  void TearDown() override {
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }
  std::string dir_;
};

TEST_F(IdxTest, ReadsExactBytesAndShape) {
  std::vector<uint8_t> data(2 * 3 * 4);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7);
  write_gz(dir_ + "/a.gz", idx_bytes(0x08, {2, 3, 4}, data));
  IdxArray a = read_idx(dir_ + "/a.gz", 3);
  EXPECT_EQ(a.dims, (std::vector<int64_t>{2, 3, 4}));
  ASSERT_EQ(a.data.sizes().vec(), (std::vector<int64_t>{2, 3, 4}));
  for (size_t i = 0; i < data.size(); ++i) EXPECT_EQ(a.data.data_ptr<uint8_t>()[i], data[i]);
}

TEST_F(IdxTest, EveryBadFileIsNamedWithWhatIsWrong) {
  const std::string p = dir_ + "/x.gz";
  EXPECT_EQ(error_of([&] { read_idx(dir_ + "/missing.gz", 1); }),
            "'" + dir_ + "/missing.gz' is missing or not a regular file");
  write_gz(p, {1, 2});
  EXPECT_EQ(error_of([&] { read_idx(p, 1); }), "'" + p + "' is truncated: no IDX header");
  write_gz(p, {7, 0, 8, 1, 0, 0, 0, 1, 5});
  EXPECT_EQ(error_of([&] { read_idx(p, 1); }), "'" + p + "' is not an IDX file (magic 07 00 08 01)");
  write_gz(p, idx_bytes(0x0d, {1}, {0, 0, 0, 0}));
  EXPECT_EQ(error_of([&] { read_idx(p, 1); }), "'" + p + "': IDX data type 0x0d, expected 0x08 (uint8)");
  write_gz(p, idx_bytes(0x08, {1, 1}, {3}));
  EXPECT_EQ(error_of([&] { read_idx(p, 1); }), "'" + p + "': IDX rank 2, expected 1");
  write_gz(p, idx_bytes(0x08, {0}, {}));
  EXPECT_EQ(error_of([&] { read_idx(p, 1); }),
            "'" + p + "': extent 0 of axis 0 is 0 or makes the data larger than 1073741824 bytes");
  // Headers declaring more than the cap (2^32-1 bytes; 2^16 x 2^16 = 4 GiB): refused
  // before any allocation.
  write_gz(p, idx_bytes(0x08, {0xffffffffu, 0xffffffffu}, {}));
  EXPECT_NE(error_of([&] { read_idx(p, 2); }).find("extent 4294967295 of axis 0"), std::string::npos);
  write_gz(p, idx_bytes(0x08, {65536, 65536}, {}));
  EXPECT_NE(error_of([&] { read_idx(p, 2); }).find("extent 65536 of axis 1"), std::string::npos);
  write_gz(p, idx_bytes(0x08, {5}, {1, 2, 3}));
  EXPECT_EQ(error_of([&] { read_idx(p, 1); }),
            "'" + p + "' is truncated: its header [5] declares 5 bytes of data, it has 3");
  write_gz(p, idx_bytes(0x08, {2}, {1, 2, 3}));
  EXPECT_EQ(error_of([&] { read_idx(p, 1); }), "'" + p + "' has bytes after the 2 its header [2] declares");
  // A gzip stream cut in the middle.
  std::vector<uint8_t> big(100000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
  write_gz(p, idx_bytes(0x08, {100000}, big));
  std::filesystem::resize_file(p, std::filesystem::file_size(p) / 2);
  const std::string msg = error_of([&] { read_idx(p, 1); });
  EXPECT_EQ(msg.rfind("'" + p + "'", 0), 0u) << msg;
}

TEST_F(IdxTest, FashionMnistChecksImagesAgainstLabels) {
  write_gz(dir_ + "/t10k-images-idx3-ubyte.gz", idx_bytes(0x08, {2, 28, 28}, std::vector<uint8_t>(2 * 784, 255)));
  write_gz(dir_ + "/t10k-labels-idx1-ubyte.gz", idx_bytes(0x08, {3}, {1, 2, 3}));
  EXPECT_NE(error_of([&] { load_fashion_mnist(dir_, false); }).find("holds 2 images but"),
            std::string::npos);
  write_gz(dir_ + "/t10k-labels-idx1-ubyte.gz", idx_bytes(0x08, {2}, {1, 10}));
  EXPECT_NE(error_of([&] { load_fashion_mnist(dir_, false); }).find("label 10 is not one of the 10 classes"),
            std::string::npos);
  write_gz(dir_ + "/t10k-labels-idx1-ubyte.gz", idx_bytes(0x08, {2}, {1, 9}));
  auto ds = load_fashion_mnist(dir_, false);
  Batch b = ds->get_batch({1});
  EXPECT_EQ(b.inputs.sizes().vec(), (std::vector<int64_t>{1, 1, 28, 28}));
  EXPECT_EQ(b.targets.item<int64_t>(), 9);
  EXPECT_EQ(b.inputs.flatten()[0].item<float>(), (1.0f - kFashionMnistMean) / kFashionMnistStd);
}

// Debian's files (dataset-fashion-mnist): 60,000 + 10,000 images, 6,000 / 1,000 per
// class, and the normalized training set has mean ~0 and standard deviation ~1.
TEST(FashionMnistTest, DebiansRealFiles) {
  if (!std::filesystem::exists(std::string(kFashionMnistRoot) + "/train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  }
  auto train = load_fashion_mnist(kFashionMnistRoot, true);
  auto test = load_fashion_mnist(kFashionMnistRoot, false);
  ASSERT_EQ(train->size(), 60000);
  ASSERT_EQ(test->size(), 10000);
  const at::Tensor counts = at::bincount(train->labels());
  for (int c = 0; c < 10; ++c) EXPECT_EQ(counts[c].item<int64_t>(), 6000) << "class " << c;
  EXPECT_TRUE(at::equal(at::bincount(test->labels()), at::full({10}, 1000, at::kLong)));
  std::vector<int64_t> all(60000);
  for (int64_t i = 0; i < 60000; ++i) all[i] = i;
  const at::Tensor x = train->get_batch(all).inputs.to(at::kDouble);
  EXPECT_NEAR(x.mean().item<double>(), 0.0, 2e-3);
  EXPECT_NEAR(x.std().item<double>(), 1.0, 2e-3);
}

}  // namespace
}  // namespace dtrain::data
