// Tests of HDF5 dataset files: both layouts written with the C++ h5 layer and with
// tools/make_h5_dataset.py (skipped without h5py), and the layout/dtype/range errors.
#include "runtime/data/h5_dataset.h"

#include <cstdlib>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "runtime/base/error.h"
#include "runtime/data/in_memory.h"
#include "runtime/h5/h5.h"
#include "tests/gtest_util.h"
#include "tests/test_util.h"

namespace dtrain::data {
namespace {

using dtrain::testing::error_of;

std::string source_dir() { return testutil::source_dir(DTRAIN_SOURCE_DIR); }

class H5DatasetTest : public ::testing::Test {
 protected:
  std::string path(const std::string& name) const { return tmp_ / name; }

  // Writes `tensors` (name -> tensor) and optional root int attributes to a new file.
  std::string write(const std::string& name, const std::map<std::string, at::Tensor>& tensors,
                    const std::map<std::string, int64_t>& attrs = {}) {
    const std::string p = path(name);
    h5::File f = h5::File::create(p);
    for (const auto& [k, t] : tensors) f.write_tensor(k, t);
    for (const auto& [k, v] : attrs) f.set_int_attr(k, v);
    f.close();
    return p;
  }

  testutil::TempDir tmp_{"dtrain_h5ds_"};
};

TEST_F(H5DatasetTest, LayoutAFloatImages) {
  at::Tensor images = at::randn({6, 2, 3});
  at::Tensor labels = at::tensor({0, 1, 2, 0, 1, 2}, at::kLong);
  const std::string p = write("a.h5", {{"images", images}, {"labels", labels}});
  auto ds = load_h5_dataset(p, {});
  auto* cls = dynamic_cast<ClassificationDataset*>(ds.get());
  ASSERT_NE(cls, nullptr);
  EXPECT_EQ(ds->size(), 6);
  EXPECT_EQ(cls->num_classes(), 3);  // max label + 1 without attribute or model limit
  Batch b = ds->get_batch({5, 0});
  EXPECT_TRUE(at::equal(b.inputs[0], images[5]));
  EXPECT_TRUE(at::equal(b.targets, at::tensor({2, 0}, at::kLong)));
  EXPECT_EQ(ds->describe(), p + ": 6 samples of [2, 3] float32, 3 classes");
}

TEST_F(H5DatasetTest, LayoutAUint8ImagesInt32LabelsAndAttributes) {
  at::Tensor images = at::randint(0, 256, {4, 3, 2, 2}, at::kByte);
  const std::string p = path("u8.h5");
  {
    h5::File f = h5::File::create(p);
    f.write_tensor("images", images);
    f.write_tensor("labels", at::tensor({3, 1, 0, 2}, at::kInt));
    f.set_int_attr("num_classes", 4);
    f.set_string_attr("description", "tiny test set");
  }
  H5DatasetOptions o;
  auto ds = load_h5_dataset(p, o);
  auto* cls = dynamic_cast<ClassificationDataset*>(ds.get());
  ASSERT_NE(cls, nullptr);
  EXPECT_EQ(cls->num_classes(), 4);
  EXPECT_EQ(cls->inputs().scalar_type(), at::kByte);  // kept compact in memory
  Batch b = ds->get_batch({2});
  EXPECT_EQ(b.inputs.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::allclose(b.inputs[0], images[2].to(at::kFloat) / 255));
  EXPECT_EQ(b.targets[0].item<int64_t>(), 0);
  EXPECT_EQ(ds->describe(),
            p + " (tiny test set): 4 samples of [3, 2, 2] uint8->float32, 4 classes");
  // The model's class count wins when given.
  o.num_classes = 10;
  EXPECT_EQ(dynamic_cast<ClassificationDataset*>(load_h5_dataset(p, o).get())->num_classes(), 10);
}

TEST_F(H5DatasetTest, LayoutBTokens) {
  at::Tensor stream = (at::arange(103, at::kLong) % 50).to(at::kShort);
  const std::string p = write("tok.h5", {{"tokens", stream}});
  H5DatasetOptions o;
  o.context_length = 10;
  o.vocab_size = 50;
  auto ds = load_h5_dataset(p, o);
  auto* tok = dynamic_cast<TokenDataset*>(ds.get());
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(ds->size(), 10);  // (103 - 1) / 10
  Batch b = ds->get_batch({9, 0});
  EXPECT_EQ(b.inputs.sizes().vec(), (std::vector<int64_t>{2, 10}));
  EXPECT_TRUE(at::equal(b.inputs[0], at::arange(90, 100, at::kLong) % 50));
  EXPECT_TRUE(at::equal(b.targets[0], at::arange(91, 101, at::kLong) % 50));
  EXPECT_TRUE(at::equal(b.inputs[1], at::arange(0, 10, at::kLong)));
  EXPECT_EQ(ds->describe(), p + ": 10 sequences of 10 tokens (vocab 50) from a stream of 103");
}

TEST_F(H5DatasetTest, LayoutErrorsNameTheFileAndDataset) {
  const std::string neither = write("neither.h5", {{"x", at::zeros({2})}, {"y", at::zeros({2})}});
  std::string msg = error_of([&] { load_h5_dataset(neither, {}); });
  EXPECT_EQ(msg, "'" + neither +
                     "' has neither 'images'+'labels' nor 'tokens' (it holds: x, y; see "
                     "docs/DATASETS.md)");
  EXPECT_THROW(load_h5_dataset(neither, {}), ConfigError);

  const std::string no_labels = write("nolabels.h5", {{"images", at::zeros({2, 3})}});
  msg = error_of([&] { load_h5_dataset(no_labels, {}); });
  EXPECT_EQ(msg, "'" + no_labels + "' has 'images' but no 'labels' dataset");

  const std::string both = write("both.h5", {{"images", at::zeros({2, 3})},
                                             {"labels", at::zeros({2}, at::kLong)},
                                             {"tokens", at::zeros({100}, at::kLong)}});
  msg = error_of([&] { load_h5_dataset(both, {}); });
  EXPECT_NE(msg.find("has both 'tokens' and 'images'/'labels'"), std::string::npos) << msg;

  const std::string mismatch =
      write("mismatch.h5", {{"images", at::zeros({5, 3})}, {"labels", at::zeros({4}, at::kLong)}});
  msg = error_of([&] { load_h5_dataset(mismatch, {}); });
  EXPECT_EQ(msg, "'" + mismatch + "': 'images' has 5 samples but 'labels' has 4");

  const std::string int_images = write("intimg.h5", {{"images", at::zeros({2, 3}, at::kInt)},
                                                     {"labels", at::zeros({2}, at::kLong)}});
  msg = error_of([&] { load_h5_dataset(int_images, {}); });
  EXPECT_NE(msg.find("'images' holds int32; expected float32 or uint8"), std::string::npos) << msg;

  const std::string flat =
      write("flat.h5", {{"images", at::zeros({2})}, {"labels", at::zeros({2}, at::kLong)}});
  msg = error_of([&] { load_h5_dataset(flat, {}); });
  EXPECT_NE(msg.find("at least 2 axes"), std::string::npos) << msg;

  const std::string float_labels =
      write("flab.h5", {{"images", at::zeros({2, 3})}, {"labels", at::zeros({2}, at::kFloat)}});
  msg = error_of([&] { load_h5_dataset(float_labels, {}); });
  EXPECT_NE(msg.find("'labels' must hold integers, got float32"), std::string::npos) << msg;

  const std::string missing = path("nope.h5");
  msg = error_of([&] { load_h5_dataset(missing, {}); });
  EXPECT_NE(msg.find("loading dataset file '" + missing + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("No such file or directory"), std::string::npos) << msg;
  EXPECT_THROW(load_h5_dataset(missing, {}), ConfigError);
}

TEST_F(H5DatasetTest, RangeErrors) {
  const std::string labels = write(
      "labels.h5", {{"images", at::zeros({3, 2})}, {"labels", at::tensor({0, 12, 1}, at::kLong)}});
  H5DatasetOptions o;
  o.num_classes = 10;
  o.classes_key = "MODEL.MLP.NUM_CLASSES";
  std::string msg = error_of([&] { load_h5_dataset(labels, o); });
  EXPECT_EQ(msg, "'" + labels +
                     "': label 12 at index 1 of 'labels' is outside [0, 10) "
                     "(MODEL.MLP.NUM_CLASSES)");
  const std::string negative =
      write("neg.h5", {{"images", at::zeros({2, 2})}, {"labels", at::tensor({0, -1}, at::kLong)}});
  msg = error_of([&] { load_h5_dataset(negative, {}); });
  EXPECT_NE(msg.find("label -1 at index 1"), std::string::npos) << msg;
  const std::string attr =
      write("attr.h5", {{"images", at::zeros({2, 2})}, {"labels", at::tensor({0, 5}, at::kLong)}},
            {{"num_classes", 5}});
  msg = error_of([&] { load_h5_dataset(attr, {}); });
  EXPECT_NE(msg.find("num_classes attribute"), std::string::npos) << msg;

  const std::string tokens = write("tokens.h5", {{"tokens", at::arange(300, at::kLong)}});
  H5DatasetOptions t;
  t.context_length = 8;
  t.vocab_size = 256;
  msg = error_of([&] { load_h5_dataset(tokens, t); });
  EXPECT_EQ(msg, "'" + tokens +
                     "': token 256 at index 256 of 'tokens' is outside [0, 256) "
                     "(MODEL.GPT.VOCAB_SIZE)");
  t.context_length = 300;
  t.vocab_size = 0;
  msg = error_of([&] { load_h5_dataset(tokens, t); });
  EXPECT_NE(msg.find("'tokens' holds 300 tokens, fewer than one sequence of CONTEXT_LENGTH + 1 "
                     "= 301"),
            std::string::npos)
      << msg;
  const std::string two_d = write("2d.h5", {{"tokens", at::zeros({10, 10}, at::kLong)}});
  msg = error_of([&] { load_h5_dataset(two_d, t); });
  EXPECT_NE(msg.find("'tokens' must be 1-D, got shape (10, 10)"), std::string::npos) << msg;
}

// ---- tools/make_h5_dataset.py ----------------------------------------------------------

bool have_h5py() {
  return std::system("/usr/bin/python3 -c 'import h5py, numpy' >/dev/null 2>&1") == 0;
}

int run_script(const std::string& args) {
  const std::string cmd =
      "/usr/bin/python3 " + source_dir() + "/tools/make_h5_dataset.py " + args + " >/dev/null";
  return std::system(cmd.c_str());
}

TEST_F(H5DatasetTest, ScriptWritesLoadableImages) {
  if (!have_h5py()) GTEST_SKIP() << "/usr/bin/python3 cannot import h5py";
  const std::string u8 = path("script_u8.h5");
  ASSERT_EQ(run_script("--kind images --num 40 --shape 3 8 8 --classes 5 --description demo "
                       "--out " +
                       u8),
            0);
  H5DatasetOptions o;
  o.num_classes = 5;
  auto ds = load_h5_dataset(u8, o);
  EXPECT_EQ(ds->describe(), u8 + " (demo): 40 samples of [3, 8, 8] uint8->float32, 5 classes");
  Batch b = ds->get_batch({0, 39});
  EXPECT_GE(b.inputs.min().item<float>(), 0.0f);
  EXPECT_LE(b.inputs.max().item<float>(), 1.0f);
  EXPECT_LT(b.targets.max().item<int64_t>(), 5);

  const std::string f32 = path("script_f32.hdf5");
  ASSERT_EQ(run_script("--kind images --num 10 --shape 784 --classes 10 --dtype float32 "
                       "--label-dtype int32 --out " +
                       f32),
            0);
  auto flat = load_h5_dataset(f32, {});
  EXPECT_EQ(flat->get_batch({3}).inputs.sizes().vec(), (std::vector<int64_t>{1, 784}));
}

TEST_F(H5DatasetTest, ScriptWritesLoadableTokens) {
  if (!have_h5py()) GTEST_SKIP() << "/usr/bin/python3 cannot import h5py";
  const std::string p = path("script_tokens.h5");
  ASSERT_EQ(run_script("--kind tokens --length 1000 --vocab 300 --out " + p), 0);
  H5DatasetOptions o;
  o.context_length = 32;
  o.vocab_size = 300;
  auto ds = load_h5_dataset(p, o);
  EXPECT_EQ(ds->size(), 999 / 32);
  Batch b = ds->get_batch({0, 30});
  EXPECT_TRUE(at::equal(b.inputs.slice(1, 1), b.targets.slice(1, 0, 31)));
  EXPECT_LT(b.inputs.max().item<int64_t>(), 300);
  // vocab_size attribute (300) is checked too: a smaller model vocabulary is refused.
  o.vocab_size = 100;
  EXPECT_THROW(load_h5_dataset(p, o), ConfigError);
}

}  // namespace
}  // namespace dtrain::data
