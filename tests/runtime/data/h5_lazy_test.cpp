// Tests of lazily read HDF5 dataset files: the block cache, lazy batches equal to the
// in-memory ones (random, unsorted, repeated indices; chunked and contiguous files; tiny
// caches), concurrent get_batch from 4 threads, mean/std attributes, token range checks
// as blocks are read, untrusted extents, and a converted Fashion-MNIST file equal bit for
// bit to the built-in fashion_mnist_train (skipped without h5py or dataset-fashion-mnist).
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <random>
#include <thread>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "runtime/base/config.h"
#include "runtime/base/error.h"
#include "runtime/data/block_cache.h"
#include "runtime/data/dataset.h"
#include "runtime/data/fashion_mnist.h"
#include "runtime/data/h5_dataset.h"
#include "runtime/data/h5_lazy.h"
#include "runtime/data/in_memory.h"
#include "runtime/h5/h5.h"
#include "tests/gtest_util.h"
#include "tests/test_util.h"

namespace dtrain::data {
namespace {

using dtrain::testing::error_of;

std::string source_dir() { return testutil::source_dir(DTRAIN_SOURCE_DIR); }

H5DatasetOptions in_memory() {
  H5DatasetOptions o;
  o.in_memory_max_bytes = int64_t{1} << 40;
  return o;
}

H5DatasetOptions lazy(int64_t cache_bytes = H5DatasetOptions::kDefaultCacheBytes) {
  H5DatasetOptions o;
  o.in_memory_max_bytes = 0;
  o.cache_bytes = cache_bytes;
  return o;
}

// `count` random index lists of up to 40 indices in [0, n): unsorted, with repeats, and
// a sorted run and the last index now and then.
std::vector<std::vector<int64_t>> random_index_lists(int64_t n, int count, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<std::vector<int64_t>> out;
  for (int c = 0; c < count; ++c) {
    std::vector<int64_t> idx(1 + gen() % 40);
    for (auto& i : idx) i = static_cast<int64_t>(gen() % static_cast<uint64_t>(n));
    if (c % 3 == 0) idx.push_back(idx[0]);                       // a repeat
    if (c % 4 == 0) {  // a sorted run
      for (int64_t k = 0; k < 5 && k < n; ++k) idx.push_back((idx[0] + k) % n);
    }
    if (c % 5 == 0) idx.push_back(n - 1);
    out.push_back(idx);
  }
  out.push_back({});
  return out;
}

void expect_same_batches(const Dataset& a, const Dataset& b, int64_t n, uint64_t seed) {
  for (const auto& idx : random_index_lists(n, 60, seed)) {
    Batch x = a.get_batch(idx), y = b.get_batch(idx);
    ASSERT_TRUE(at::equal(x.inputs, y.inputs)) << "indices " << at::tensor(idx);
    ASSERT_TRUE(at::equal(x.targets, y.targets)) << "indices " << at::tensor(idx);
    ASSERT_EQ(x.inputs.sizes(), y.inputs.sizes());
  }
}

class H5LazyTest : public ::testing::Test {
 protected:
  std::string path(const std::string& name) const { return tmp_ / name; }

  // Writes images (chunked with `chunk_rows` rows when > 0, else contiguous) and labels,
  // plus root float attributes.
  std::string write_images(const std::string& name, const at::Tensor& images,
                           const at::Tensor& labels, int64_t chunk_rows = 0,
                           const std::map<std::string, double>& attrs = {}) {
    const std::string p = path(name);
    h5::File f = h5::File::create(p);
    const std::vector<int64_t> shape = images.sizes().vec();
    std::vector<int64_t> chunk;
    if (chunk_rows > 0) {
      chunk = shape;
      chunk[0] = chunk_rows;
    }
    f.create_dataset("images", h5::datatype_for(images.scalar_type()), shape, chunk)
        .write(images);
    f.write_tensor("labels", labels);
    for (const auto& [k, v] : attrs) f.set_float_attr(k, v);
    f.close();
    return p;
  }

  testutil::TempDir tmp_{"dtrain_h5lazy_"};
};

// ---- BlockCache -----------------------------------------------------------------------

BlockCache::Block block_of(int64_t bytes) {
  return std::make_shared<const at::Tensor>(at::zeros({bytes}, at::kByte));
}

TEST(BlockCacheTest, EvictsLeastRecentlyUsedWithinItsBytes) {
  BlockCache cache(300);
  cache.put(1, block_of(100));
  cache.put(2, block_of(100));
  cache.put(3, block_of(100));
  EXPECT_EQ(cache.size_bytes(), 300);
  ASSERT_NE(cache.get(1), nullptr);  // 1 is now the most recent: 2 goes first
  cache.put(4, block_of(100));
  EXPECT_EQ(cache.get(2), nullptr);
  EXPECT_NE(cache.get(1), nullptr);
  EXPECT_NE(cache.get(3), nullptr);
  EXPECT_NE(cache.get(4), nullptr);
  cache.put(5, block_of(250));  // evicts until it fits: only 5 is left
  EXPECT_EQ(cache.num_blocks(), 1);
  EXPECT_EQ(cache.size_bytes(), 250);
  BlockCache::Block held = cache.get(5);
  cache.put(6, block_of(400));  // larger than the cache: not stored, 5 is kept
  EXPECT_EQ(cache.get(6), nullptr);
  cache.put(5, block_of(10));  // replaces; the block handed out stays valid
  EXPECT_EQ(held->numel(), 250);
  EXPECT_EQ(cache.size_bytes(), 10);
  EXPECT_EQ(cache.hits(), 5);
  EXPECT_EQ(cache.misses(), 2);
  BlockCache none(0);
  none.put(1, block_of(1));
  EXPECT_EQ(none.get(1), nullptr);
}

// ---- Lazy batches equal in-memory ones --------------------------------------------------

TEST_F(H5LazyTest, LazyUint8ImagesEqualInMemoryContiguousAndChunked) {
  at::Tensor images = at::randint(0, 256, {1001, 3, 5, 7}, at::kByte);  // 105 B a sample
  at::Tensor labels = at::randint(0, 10, {1001}, at::kLong);
  for (int64_t chunk : {0, 1, 37, 1001}) {
    SCOPED_TRACE("chunk rows " + std::to_string(chunk));
    const std::string p = write_images("u8_" + std::to_string(chunk) + ".h5", images, labels, chunk,
                                       {{"mean", 0.25}, {"std", 0.5}});
    auto memory = load_h5_dataset(p, in_memory());
    ASSERT_NE(dynamic_cast<ClassificationDataset*>(memory.get()), nullptr);
    // Default cache, a cache of a few blocks, and one too small to cache anything.
    for (int64_t cache : {int64_t{4} << 20, int64_t{4096}, int64_t{100}}) {
      auto ds = load_h5_dataset(p, lazy(cache));
      auto* l = dynamic_cast<H5ClassificationDataset*>(ds.get());
      ASSERT_NE(l, nullptr);
      EXPECT_EQ(l->num_classes(), 10);
      expect_same_batches(*ds, *memory, 1001, 7 + static_cast<uint64_t>(cache));
      // What augmentation needs: the sample shape and the value of a black pixel.
      EXPECT_EQ(ds->sample_shape(), memory->sample_shape());
      EXPECT_EQ(ds->padding_value(), memory->padding_value());
      EXPECT_FLOAT_EQ(ds->padding_value(), (0.0f - 0.25f) / 0.5f);
      if (cache == 100) {
        EXPECT_EQ(l->reader().cache().num_blocks(), 0);
      }
    }
  }
  // The normalization is (x / 255 - mean) / std with the attributes.
  auto ds = load_h5_dataset(path("u8_37.h5"), lazy());
  Batch b = ds->get_batch({4});
  EXPECT_TRUE(at::allclose(b.inputs[0], (images[4].to(at::kFloat) / 255 - 0.25) / 0.5));
}

// A training-data file is reported as a data error naming the file, never as a
// CheckpointError (the HDF5 layer serves both): one that is not HDF5 at all is a
// ConfigError at load; one whose gzip chunk is damaged after it was opened lazily fails
// at the read with the HDF5 layer's error.
TEST_F(H5LazyTest, DamagedDataFilesAreDataErrorsNamingTheFile) {
  const std::string junk = path("junk.h5");
  testutil::write_file(junk, std::string(4096, 'x'));
  const std::string msg = dtrain::testing::ThrownMessage<ConfigError>(
      [&] { load_h5_dataset(junk, lazy()); });
  EXPECT_CONTAINS(msg, junk);
  EXPECT_EQ(msg.find("checkpoint"), std::string::npos) << msg;

  if (std::system("/usr/bin/python3 -c 'import h5py, numpy' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "/usr/bin/python3 cannot import h5py";
  }
  const std::string p = path("damaged.h5");
  const std::string script = path("damage.py");
  testutil::write_file(script,
                       "import sys, h5py, numpy as np\n"
                       "p = sys.argv[1]\n"
                       "images = np.random.default_rng(0).integers(0, 256, (64, 8, 8), np.uint8)\n"
                       "with h5py.File(p, 'w') as f:\n"
                       "    f.create_dataset('images', data=images, chunks=(8, 8, 8),\n"
                       "                     compression='gzip')\n"
                       "    f.create_dataset('labels', data=np.arange(64) % 10)\n"
                       "    chunk = f['images'].id.get_chunk_info(0)\n"
                       "with open(p, 'r+b') as raw:\n"
                       "    raw.seek(chunk.byte_offset)\n"
                       "    raw.write(b'\\xff' * chunk.size)\n");
  ASSERT_EQ(std::system(("/usr/bin/python3 " + script + " " + p).c_str()), 0);
  std::shared_ptr<Dataset> ds = load_h5_dataset(p, lazy());
  try {
    ds->get_batch({0, 1});
    FAIL() << "expected an error for the damaged chunk";
  } catch (const CheckpointError& e) {
    FAIL() << "a training-data file reported as a checkpoint error: " << e.what();
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), p);
    EXPECT_CONTAINS(e.what(), "images");
    EXPECT_EQ(std::string(e.what()).find("checkpoint"), std::string::npos) << e.what();
  }
}

TEST_F(H5LazyTest, LazyFloatImagesEqualInMemory) {
  at::Tensor images = at::randn({300, 17});
  at::Tensor labels = at::randint(0, 3, {300}, at::kLong);
  for (at::ScalarType stored : {at::kFloat, at::kDouble, at::kHalf}) {
    for (int64_t chunk : {0, 8}) {
      const std::string p = write_images(
          "f_" + std::to_string(static_cast<int>(stored)) + "_" + std::to_string(chunk) + ".h5",
          images.to(stored), labels.to(at::kInt), chunk);
      auto memory = load_h5_dataset(p, in_memory());
      auto ds = load_h5_dataset(p, lazy(1024));
      ASSERT_NE(dynamic_cast<H5ClassificationDataset*>(ds.get()), nullptr);
      expect_same_batches(*ds, *memory, 300, 11);
      EXPECT_TRUE(at::equal(ds->get_batch({299, 0}).inputs,
                            at::stack({images[299], images[0]}).to(stored).to(at::kFloat)));
    }
  }
}

TEST_F(H5LazyTest, LazyTokensEqualInMemory) {
  at::Tensor stream = (at::arange(5003, at::kLong) * 7919 % 1000).to(at::kShort);
  const std::string p = path("tok.h5");
  {
    h5::File f = h5::File::create(p);
    f.write_tensor("tokens", stream);
    f.set_int_attr("vocab_size", 1000);
  }
  for (int64_t t : {1, 7, 64, 5002}) {
    for (int64_t cache : {int64_t{4} << 20, int64_t{2048}, int64_t{0}}) {
      SCOPED_TRACE(fmt::format("T {} cache {}", t, cache));
      H5DatasetOptions m = in_memory(), l = lazy(cache);
      m.context_length = l.context_length = t;
      l.vocab_size = m.vocab_size = 1000;
      auto memory = load_h5_dataset(p, m);
      auto ds = load_h5_dataset(p, l);
      auto* tok = dynamic_cast<H5TokenDataset*>(ds.get());
      ASSERT_NE(tok, nullptr);
      ASSERT_EQ(ds->size(), memory->size());
      expect_same_batches(*ds, *memory, ds->size(), 3);
    }
  }
}

TEST_F(H5LazyTest, ConcurrentGetBatchFromFourThreads) {
  at::Tensor images = at::randint(0, 256, {2000, 64}, at::kByte);
  at::Tensor labels = at::randint(0, 10, {2000}, at::kLong);
  const std::string p = write_images("mt.h5", images, labels, 50);
  auto memory = load_h5_dataset(p, in_memory());
  auto ds = load_h5_dataset(p, lazy(16 << 10));  // small: the threads evict each other's blocks
  std::vector<std::thread> threads;
  std::vector<int> bad(4, 0), done(4, 0);
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (const auto& idx : random_index_lists(2000, 150, 100 + w)) {
        Batch x = ds->get_batch(idx), y = memory->get_batch(idx);
        if (!at::equal(x.inputs, y.inputs) || !at::equal(x.targets, y.targets)) ++bad[w];
        ++done[w];
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad, std::vector<int>(4, 0));
  EXPECT_EQ(done, std::vector<int>(4, 151));
}

TEST_F(H5LazyTest, DescribeAndChoiceOfPath) {
  at::Tensor images = at::zeros({100, 3, 8, 8}, at::kByte);  // 19,200 bytes
  const std::string p = write_images("d.h5", images, at::zeros({100}, at::kLong), 10);
  H5DatasetOptions o;
  o.in_memory_max_bytes = 19200;  // at most: in memory
  EXPECT_NE(dynamic_cast<ClassificationDataset*>(load_h5_dataset(p, o).get()), nullptr);
  o.in_memory_max_bytes = 19199;
  auto ds = load_h5_dataset(p, o);
  EXPECT_EQ(ds->describe(), p + ": 100 samples of [3, 8, 8] uint8->float32, 1 classes, read "
                                "lazily (blocks of 10 samples, cache 4 MiB)");
}

// ---- Errors -------------------------------------------------------------------------------

TEST_F(H5LazyTest, LazyTokensAreRangeCheckedAsRead) {
  at::Tensor stream = at::arange(20000, at::kLong) % 200;
  stream[15000] = 256;
  const std::string p = path("badtok.h5");
  {
    h5::File f = h5::File::create(p);
    f.write_tensor("tokens", stream);
  }
  H5DatasetOptions o = lazy(64 << 10);
  o.context_length = 10;
  o.vocab_size = 256;
  auto ds = load_h5_dataset(p, o);  // not read yet: opening does not scan
  EXPECT_EQ(ds->get_batch({0, 1}).inputs.size(0), 2);
  const std::string msg = error_of([&] { ds->get_batch({3, 1500}); });
  EXPECT_EQ(msg, "'" + p +
                     "': token 256 at index 15000 of 'tokens' is outside [0, 256) "
                     "(MODEL.GPT.VOCAB_SIZE)");
  EXPECT_THROW(ds->get_batch({1499}), ConfigError);  // same block, never cached
  // Without any limit, a lazy open scans for the largest token (and negative ones).
  o.vocab_size = 0;
  auto scanned = load_h5_dataset(p, o);
  EXPECT_EQ(dynamic_cast<H5TokenDataset*>(scanned.get())->vocab_size(), 257);
  stream[19999] = -3;
  const std::string neg = path("negtok.h5");
  {
    h5::File f = h5::File::create(neg);
    f.write_tensor("tokens", stream);
  }
  EXPECT_NE(error_of([&] { load_h5_dataset(neg, o); }).find("token -3 at index 19999"),
            std::string::npos);
}

TEST_F(H5LazyTest, AttributeAndExtentErrors) {
  at::Tensor labels = at::zeros({4}, at::kLong);
  const std::string bad_std =
      write_images("std.h5", at::zeros({4, 2}, at::kByte), labels, 0, {{"std", 0.0}});
  EXPECT_EQ(error_of([&] { load_h5_dataset(bad_std, lazy()); }),
            "'" + bad_std + "': attributes mean = 0 and std = 0 must be finite float32 values, std > 0");
  const std::string float_mean =
      write_images("fmean.h5", at::zeros({4, 2}), labels, 0, {{"mean", 0.5}});
  EXPECT_NE(error_of([&] { load_h5_dataset(float_mean, in_memory()); })
                .find("attributes mean/std normalize uint8 images, but 'images' holds float32"),
            std::string::npos);
  const std::string empty_sample = write_images("e.h5", at::zeros({4, 0}, at::kByte), labels);
  EXPECT_EQ(error_of([&] { load_h5_dataset(empty_sample, lazy()); }),
            "'" + empty_sample +
                "': 'images' has shape (4, 0): a sample must have extents >= 1 and take at most "
                "1073741824 bytes");
  // A huge declared sample in a file that stores nothing (chunked, never written): refused
  // before anything is allocated.
  const std::string huge = path("huge.h5");
  {
    h5::ApiScope scope;
    hid_t file = H5Fcreate(huge.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[2] = {1000000, hsize_t{1} << 40}, chunk[2] = {1, 1024};
    hid_t space = H5Screate_simple(2, dims, nullptr);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, chunk);
    hid_t d = H5Dcreate2(file, "images", H5T_STD_U8LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    hsize_t ldims[1] = {1000000};
    hid_t lspace = H5Screate_simple(1, ldims, nullptr);
    hid_t l = H5Dcreate2(file, "labels", H5T_STD_I64LE, lspace, H5P_DEFAULT, H5P_DEFAULT,
                         H5P_DEFAULT);
    H5Dclose(l);
    H5Sclose(lspace);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Fclose(file);
  }
  EXPECT_NE(error_of([&] { load_h5_dataset(huge, lazy()); }).find("a sample must have extents"),
            std::string::npos);
}

TEST_F(H5LazyTest, ScriptConvertsAnImageFolder) {
  if (std::system("/usr/bin/python3 -c 'import h5py, numpy, PIL' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "/usr/bin/python3 cannot import h5py, numpy and PIL (python3-pil)";
  }
  // root/<class>/<image>: 2 'cat' images (one in a subfolder), 1 'dog', a non-image.
  const std::string root = path("folder");
  const std::string make =
      "/usr/bin/python3 -c \"import os; from PIL import Image; r='" + root +
      "'; os.makedirs(r + '/dog'); os.makedirs(r + '/cat/sub'); "
      "Image.new('RGB', (10, 6), (255, 0, 0)).save(r + '/cat/a.png'); "
      "Image.new('RGB', (3, 3), (0, 255, 0)).save(r + '/cat/sub/b.jpg'); "
      "Image.new('L', (8, 8), 128).save(r + '/dog/c.bmp'); "
      "open(r + '/dog/notes.txt', 'w').write('x')\"";
  ASSERT_EQ(std::system(make.c_str()), 0);
  const std::string p = path("folder.h5");
  ASSERT_EQ(std::system(("/usr/bin/python3 " + source_dir() +
                         "/tools/make_h5_dataset.py --kind image-folder --root " + root +
                         " --size 4 5 --out " + p + " >/dev/null")
                            .c_str()),
            0);
  for (const H5DatasetOptions& o : {in_memory(), lazy()}) {
    auto ds = load_h5_dataset(p, o);
    ASSERT_EQ(ds->size(), 3);
    Batch b = ds->get_batch({0, 1, 2});
    EXPECT_EQ(b.inputs.sizes().vec(), (std::vector<int64_t>{3, 3, 4, 5}));
    EXPECT_TRUE(at::equal(b.targets, at::tensor({0, 0, 1}, at::kLong)));  // cat, cat, dog
    // Red, green (JPEG: near), grey: normalized with the file's own mean/std, so the
    // red image's red channel is above its green channel.
    EXPECT_GT(b.inputs[0][0][0][0].item<float>(), b.inputs[0][1][0][0].item<float>());
    EXPECT_GT(b.inputs[1][1][2][2].item<float>(), b.inputs[1][0][2][2].item<float>());
    EXPECT_NEAR(b.inputs.mean().item<float>(), 0.0f, 1e-4);
  }
}

// ---- Fashion-MNIST converted by tools/make_h5_dataset.py -----------------------------------

TEST_F(H5LazyTest, ConvertedFashionMnistEqualsBuiltIn) {
  if (std::system("/usr/bin/python3 -c 'import h5py, numpy' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "/usr/bin/python3 cannot import h5py";
  }
  if (!std::filesystem::exists(std::string(kFashionMnistRoot) + "/train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  }
  const std::string p = path("fmnist_train.h5");
  const std::string cmd = "/usr/bin/python3 " + source_dir() +
                          "/tools/make_h5_dataset.py --kind fashion-mnist --split train --out " +
                          p + " >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  Config cfg = Config::defaults();
  auto builtin = build_dataset("fashion_mnist_train", cfg, true);
  auto through_config = build_dataset(p, cfg, true);  // the default path (in memory: 47 MB)
  auto lazily = load_h5_dataset(p, lazy());
  ASSERT_EQ(lazily->size(), 60000);
  EXPECT_NE(dynamic_cast<H5ClassificationDataset*>(lazily.get()), nullptr);
  // Every sample, in batches of 1000, then random lists.
  for (int64_t s = 0; s < 60000; s += 1000) {
    std::vector<int64_t> idx(1000);
    for (int64_t k = 0; k < 1000; ++k) idx[k] = s + k;
    Batch want = builtin->get_batch(idx);
    for (const Dataset* ds : {through_config.get(), lazily.get()}) {
      Batch got = ds->get_batch(idx);
      ASSERT_TRUE(at::equal(got.inputs, want.inputs)) << "samples from " << s;
      ASSERT_TRUE(at::equal(got.targets, want.targets)) << "samples from " << s;
    }
  }
  expect_same_batches(*lazily, *builtin, 60000, 5);
}

}  // namespace
}  // namespace dtrain::data
