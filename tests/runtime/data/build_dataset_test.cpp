// Tests of build_dataset: config keys -> synthetic datasets or HDF5 files, and its errors.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "runtime/base/config.h"
#include "runtime/base/error.h"
#include "runtime/data/dataset.h"
#include "runtime/data/in_memory.h"
#include "runtime/data/synthetic.h"
#include "runtime/h5/h5.h"
#include "tests/gtest_util.h"
#include "tests/test_util.h"

namespace dtrain::data {
namespace {

using dtrain::testing::error_of;

Config small_config() {
  Config cfg = Config::defaults();
  cfg.set("DATASETS.SYNTHETIC.NUM_TRAIN", int64_t{96});
  cfg.set("DATASETS.SYNTHETIC.NUM_TEST", int64_t{32});
  cfg.set("SEED", int64_t{5});
  return cfg;
}

TEST(BuildDatasetTest, SyntheticClassificationFromConfig) {
  Config cfg = small_config();
  cfg.set("DATASETS.SYNTHETIC.INPUT_SHAPE", std::vector<int64_t>{3, 4, 4});
  cfg.set("DATASETS.SYNTHETIC.NUM_CLASSES", int64_t{4});
  auto train = build_dataset("synthetic_classification", cfg, true);
  auto test = build_dataset("synthetic_classification", cfg, false);
  EXPECT_EQ(train->size(), 96);
  EXPECT_EQ(test->size(), 32);
  Batch b = train->get_batch({0, 1});
  EXPECT_EQ(b.inputs.sizes().vec(), (std::vector<int64_t>{2, 3, 4, 4}));
  // Same as constructing it directly with the same options.
  SyntheticClassificationOptions o;
  o.num_samples = 96;
  o.input_shape = {3, 4, 4};
  o.num_classes = 4;
  o.noise = cfg.get_float("DATASETS.SYNTHETIC.NOISE");
  o.seed = 5;
  SyntheticClassification direct(o);
  EXPECT_TRUE(at::equal(dynamic_cast<ClassificationDataset&>(*train).inputs(), direct.inputs()));
  EXPECT_NE(train->describe().find("seed 5"), std::string::npos);
}

TEST(BuildDatasetTest, SyntheticTokensFromConfig) {
  Config cfg = small_config();
  cfg.set("MODEL.NAME", std::string("gpt"));
  cfg.set("MODEL.GPT.CONTEXT_LENGTH", int64_t{16});
  cfg.set("MODEL.GPT.VOCAB_SIZE", int64_t{32});
  auto ds = build_dataset("synthetic_tokens", cfg, true);
  EXPECT_EQ(ds->size(), 96);
  Batch b = ds->get_batch({3});
  EXPECT_EQ(b.inputs.sizes().vec(), (std::vector<int64_t>{1, 16}));
  EXPECT_LT(b.targets.max().item<int64_t>(), 32);
}

TEST(BuildDatasetTest, Hdf5FileFromConfig) {
  testutil::TempDir tmp("dtrain_build_dataset_test_");
  const std::string p = tmp / "data.h5";
  {
    h5::File f = h5::File::create(p);
    f.write_tensor("images", at::zeros({8, 784}));
    f.write_tensor("labels", at::tensor({0, 1, 2, 3, 4, 5, 6, 12}, at::kLong));
  }
  Config cfg = small_config();
  cfg.set("MODEL.MLP.NUM_CLASSES", int64_t{20});
  auto ds = build_dataset(p, cfg, true);
  EXPECT_EQ(ds->size(), 8);
  EXPECT_EQ(dynamic_cast<ClassificationDataset&>(*ds).num_classes(), 20);
  cfg.set("MODEL.MLP.NUM_CLASSES", int64_t{10});  // label 12 no longer fits the model
  std::string msg = error_of([&] { build_dataset(p, cfg, true); });
  EXPECT_NE(msg.find("label 12 at index 7"), std::string::npos) << msg;
  EXPECT_NE(msg.find("MODEL.MLP.NUM_CLASSES"), std::string::npos) << msg;
}

TEST(BuildDatasetTest, Errors) {
  Config cfg = small_config();
  std::string msg = error_of([&] { build_dataset("imagenet", cfg, false); });
  EXPECT_EQ(msg,
            "unknown dataset 'imagenet' in DATASETS.TEST: expected synthetic_classification, "
            "synthetic_tokens, fashion_mnist_train, fashion_mnist_test or a path ending in .h5 / "
            ".hdf5");
  EXPECT_THROW(build_dataset("imagenet", cfg, true), ConfigError);
  cfg.set("DATASETS.SYNTHETIC.NUM_CLASSES", int64_t{100});
  msg = error_of([&] { build_dataset("synthetic_classification", cfg, true); });
  EXPECT_NE(msg.find("DATASETS.SYNTHETIC.NUM_CLASSES (100) exceeds MODEL.MLP.NUM_CLASSES (10)"),
            std::string::npos)
      << msg;
  msg = error_of([&] { build_dataset("/no/such/file.h5", cfg, true); });
  EXPECT_NE(msg.find("'/no/such/file.h5'"), std::string::npos) << msg;
}

}  // namespace
}  // namespace dtrain::data
