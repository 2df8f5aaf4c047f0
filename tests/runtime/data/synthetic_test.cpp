// Tests of the synthetic datasets and the in-memory datasets under them: determinism,
// splits, shapes, the token chain's structure, errors, and that the global torch RNG is
// left alone.
#include "runtime/data/synthetic.h"

#include <cmath>
#include <map>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "runtime/base/error.h"
#include "tests/gtest_util.h"

namespace dtrain::data {
namespace {

using dtrain::testing::error_of;

SyntheticClassificationOptions small_images(bool train, uint64_t seed = 0) {
  SyntheticClassificationOptions o;
  o.num_samples = 64;
  o.input_shape = {3, 8, 8};
  o.num_classes = 5;
  o.noise = 0.5;
  o.seed = seed;
  o.train = train;
  return o;
}

TEST(SyntheticClassificationTest, DeterministicPerSeedAndSplit) {
  SyntheticClassification a(small_images(true)), b(small_images(true));
  SyntheticClassification test(small_images(false)), other(small_images(true, 1));
  EXPECT_TRUE(at::equal(a.inputs(), b.inputs()));
  EXPECT_TRUE(at::equal(a.labels(), b.labels()));
  EXPECT_FALSE(at::equal(a.inputs(), test.inputs()));
  EXPECT_FALSE(at::equal(a.inputs(), other.inputs()));
  // Both splits share the class centres; another seed has others.
  EXPECT_TRUE(at::equal(SyntheticClassification::class_centers(small_images(true)),
                        SyntheticClassification::class_centers(small_images(false))));
  EXPECT_FALSE(at::equal(SyntheticClassification::class_centers(small_images(true)),
                         SyntheticClassification::class_centers(small_images(true, 1))));
}

TEST(SyntheticClassificationTest, SamplesAreCentrePlusNoise) {
  SyntheticClassificationOptions o = small_images(true);
  o.num_samples = 2000;
  SyntheticClassification ds(o);
  at::Tensor centers = SyntheticClassification::class_centers(o);
  EXPECT_EQ(centers.sizes().vec(), (std::vector<int64_t>{5, 3, 8, 8}));
  at::Tensor residual = ds.inputs() - centers.index_select(0, ds.labels());
  EXPECT_NEAR(residual.mean().item<double>(), 0.0, 0.01);
  EXPECT_NEAR(residual.std().item<double>(), o.noise, 0.01);
  // Labels uniform over the classes.
  at::Tensor counts = at::bincount(ds.labels(), {}, 5);
  EXPECT_GT(counts.min().item<int64_t>(), 330);
  EXPECT_LT(counts.max().item<int64_t>(), 470);
  // Centres have unit variance; channel offsets make per-channel means differ by class.
  EXPECT_NEAR(centers.std().item<double>(), 1.0, 0.15);
  at::Tensor channel_means = centers.mean({2, 3});  // [5, 3]
  EXPECT_GT(channel_means.std().item<double>(), 0.3);
}

TEST(SyntheticClassificationTest, BatchesAndDescribe) {
  SyntheticClassification ds(small_images(true));
  EXPECT_EQ(ds.size(), 64);
  EXPECT_EQ(ds.num_classes(), 5);
  EXPECT_EQ(ds.sample_shape(), (std::vector<int64_t>{3, 8, 8}));
  Batch b = ds.get_batch({4, 17, 3, 4});
  EXPECT_EQ(b.inputs.sizes().vec(), (std::vector<int64_t>{4, 3, 8, 8}));
  EXPECT_EQ(b.inputs.scalar_type(), at::kFloat);
  EXPECT_EQ(b.targets.scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(b.inputs[1], ds.inputs()[17]));
  EXPECT_TRUE(at::equal(b.inputs[0], b.inputs[3]));
  EXPECT_EQ(b.targets[2].item<int64_t>(), ds.labels()[3].item<int64_t>());
  EXPECT_EQ(ds.get_batch({}).inputs.sizes().vec(), (std::vector<int64_t>{0, 3, 8, 8}));
  EXPECT_EQ(ds.describe(),
            "synthetic_classification(train, seed 0, noise 0.5): 64 samples of [3, 8, 8] "
            "float32, 5 classes");
  std::string msg = error_of([&] { ds.get_batch({1, 64}); });
  EXPECT_NE(msg.find("sample index 64 out of range [0, 64)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("synthetic_classification(train"), std::string::npos) << msg;
  EXPECT_THROW(ds.get_batch({-1}), Error);
}

TEST(SyntheticClassificationTest, InvalidOptionsNameTheKey) {
  SyntheticClassificationOptions o = small_images(true);
  o.num_classes = 0;
  std::string msg = error_of([&] { SyntheticClassification ds(o); });
  EXPECT_NE(msg.find("DATASETS.SYNTHETIC.NUM_CLASSES"), std::string::npos) << msg;
  o = small_images(false);
  o.num_samples = 0;
  msg = error_of([&] { SyntheticClassification ds(o); });
  EXPECT_NE(msg.find("DATASETS.SYNTHETIC.NUM_TEST"), std::string::npos) << msg;
  o = small_images(true);
  o.input_shape = {3, 0};
  EXPECT_THROW(SyntheticClassification ds(o), ConfigError);
  o = small_images(true);
  o.noise = -1;
  EXPECT_THROW(SyntheticClassification ds(o), ConfigError);
}

TEST(SyntheticDataTest, LeavesTheGlobalTorchRngAlone) {
  at::manual_seed(123);
  at::Tensor expected = at::randn({8});
  at::manual_seed(123);
  SyntheticClassification ds(small_images(true));
  SyntheticTokensOptions t;
  t.num_sequences = 4;
  t.context_length = 8;
  SyntheticTokens tokens(t);
  EXPECT_TRUE(at::equal(at::randn({8}), expected));
}

SyntheticTokensOptions small_tokens(bool train, int64_t vocab = 50) {
  SyntheticTokensOptions o;
  o.num_sequences = 400;
  o.context_length = 16;
  o.vocab_size = vocab;
  o.seed = 3;
  o.train = train;
  return o;
}

TEST(SyntheticTokensTest, SequencesAreShiftedWindowsOfTheWalk) {
  SyntheticTokens ds(small_tokens(true));
  EXPECT_EQ(ds.size(), 400);
  EXPECT_EQ(ds.stream().numel(), 400 * 16 + 1);
  Batch b = ds.get_batch({0, 7, 399});
  EXPECT_EQ(b.inputs.sizes().vec(), (std::vector<int64_t>{3, 16}));
  EXPECT_EQ(b.targets.sizes().vec(), (std::vector<int64_t>{3, 16}));
  EXPECT_EQ(b.inputs.scalar_type(), at::kLong);
  EXPECT_EQ(b.targets.scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(b.inputs[1], ds.stream().slice(0, 7 * 16, 8 * 16)));
  EXPECT_TRUE(at::equal(b.targets[1], ds.stream().slice(0, 7 * 16 + 1, 8 * 16 + 1)));
  EXPECT_TRUE(at::equal(b.inputs[2].slice(0, 1), b.targets[2].slice(0, 0, 15)));
  EXPECT_GE(ds.stream().min().item<int64_t>(), 0);
  EXPECT_LT(ds.stream().max().item<int64_t>(), 50);
  EXPECT_EQ(ds.describe(),
            "synthetic_tokens(train, seed 3): 400 sequences of 16 tokens (vocab 50) from a "
            "stream of 6401");
  EXPECT_THROW(ds.get_batch({400}), Error);
}

TEST(SyntheticTokensTest, DeterministicAndSplitsShareTheChain) {
  SyntheticTokens a(small_tokens(true)), b(small_tokens(true)), test(small_tokens(false));
  EXPECT_TRUE(at::equal(a.stream(), b.stream()));
  EXPECT_FALSE(at::equal(a.stream(), test.stream()));
  at::Tensor table = SyntheticTokens::successors(small_tokens(true));
  EXPECT_TRUE(at::equal(table, SyntheticTokens::successors(small_tokens(false))));
  EXPECT_EQ(table.sizes().vec(), (std::vector<int64_t>{50, 3}));
  // Every transition of both walks is in the table.
  for (const SyntheticTokens* ds : {&a, &test}) {
    const int64_t* s = ds->stream().data_ptr<int64_t>();
    for (int64_t i = 0; i + 1 < ds->stream().numel(); ++i) {
      const int64_t* row = table.data_ptr<int64_t>() + s[i] * 3;
      ASSERT_TRUE(row[0] == s[i + 1] || row[1] == s[i + 1] || row[2] == s[i + 1]) << i;
    }
  }
  // Successor 0 of every token forms one cycle through the whole vocabulary.
  std::vector<bool> seen(50, false);
  int64_t tok = 0;
  for (int i = 0; i < 50; ++i) {
    EXPECT_FALSE(seen[tok]);
    seen[tok] = true;
    tok = table[tok][0].item<int64_t>();
  }
  EXPECT_EQ(tok, 0);
}

TEST(SyntheticTokensTest, BigramModelFromTrainReachesTheEntropyRateOnTest) {
  // What a tiny GPT has to learn: the transition table. Estimated from the train split it
  // predicts the test split at (about) the chain's entropy rate, far below ln(vocab).
  const int64_t vocab = 64;
  SyntheticTokensOptions o = small_tokens(true, vocab);
  o.num_sequences = 2000;
  SyntheticTokens train(o);
  o.train = false;
  o.num_sequences = 200;
  SyntheticTokens test(o);
  std::vector<double> counts(vocab * vocab, 0.01);  // light smoothing
  const int64_t* s = train.stream().data_ptr<int64_t>();
  for (int64_t i = 0; i + 1 < train.stream().numel(); ++i) counts[s[i] * vocab + s[i + 1]] += 1;
  double nll = 0;
  const int64_t* t = test.stream().data_ptr<int64_t>();
  const int64_t n = test.stream().numel() - 1;
  for (int64_t i = 0; i < n; ++i) {
    double row = 0;
    for (int64_t j = 0; j < vocab; ++j) row += counts[t[i] * vocab + j];
    nll -= std::log(counts[t[i] * vocab + t[i + 1]] / row);
  }
  nll /= n;
  const double h = synthetic_tokens_entropy(vocab);
  EXPECT_NEAR(h, 0.898, 0.001);
  EXPECT_NEAR(nll, h, 0.05);
  EXPECT_LT(nll, std::log(static_cast<double>(vocab)) / 4);
  EXPECT_NEAR(synthetic_tokens_entropy(2), std::log(3.0) - 2.0 / 3 * std::log(2.0), 1e-12);
  EXPECT_EQ(synthetic_tokens_entropy(1), 0.0);
}

TEST(SyntheticTokensTest, TinyVocabularies) {
  for (int64_t vocab : {1, 2, 3}) {
    SyntheticTokens ds(small_tokens(true, vocab));
    EXPECT_LT(ds.stream().max().item<int64_t>(), vocab);
    EXPECT_EQ(SyntheticTokens::successors(small_tokens(true, vocab)).size(1),
              std::min<int64_t>(vocab, 3));
  }
}

TEST(SyntheticTokensTest, InvalidOptionsNameTheKey) {
  SyntheticTokensOptions o = small_tokens(true);
  o.vocab_size = 0;
  std::string msg = error_of([&] { SyntheticTokens ds(o); });
  EXPECT_NE(msg.find("MODEL.GPT.VOCAB_SIZE"), std::string::npos) << msg;
  o = small_tokens(true);
  o.context_length = 0;
  msg = error_of([&] { SyntheticTokens ds(o); });
  EXPECT_NE(msg.find("MODEL.GPT.CONTEXT_LENGTH"), std::string::npos) << msg;
}

TEST(InMemoryTest, Uint8InputsAreScaledToUnitRange) {
  at::Tensor images = at::arange(2 * 2 * 3, at::kByte).view({2, 2, 3}) * 20;
  at::Tensor labels = at::tensor({1, 0}, at::kLong);
  ClassificationDataset ds(images, labels, 2, "bytes");
  Batch b = ds.get_batch({1});
  EXPECT_TRUE(at::allclose(b.inputs[0], images[1].to(at::kFloat) / 255));
  EXPECT_EQ(b.targets[0].item<int64_t>(), 0);
  EXPECT_EQ(ds.describe(), "bytes: 2 samples of [2, 3] uint8->float32, 2 classes");
  EXPECT_THROW(ClassificationDataset(images, at::tensor({1}, at::kLong), 2, "x"), Error);
  EXPECT_THROW(ClassificationDataset(images.to(at::kInt), labels, 2, "x"), Error);
  EXPECT_THROW(TokenDataset(at::arange(4, at::kLong), 4, 10, "short"), Error);
}

}  // namespace
}  // namespace dtrain::data
