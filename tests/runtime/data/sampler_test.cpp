// Tests of DistributedSampler (coverage, determinism, resume across world sizes, errors)
// and of the platform-stable Rng it uses.
#include "runtime/data/sampler.h"

#include <algorithm>
#include <numeric>
#include <set>

#include <gtest/gtest.h>

#include "runtime/base/error.h"
#include "runtime/data/rng.h"
#include "tests/gtest_util.h"

namespace dtrain::data {
namespace {

// All ranks of a world, built in-process.
std::vector<DistributedSampler> make_world(int world, int64_t n, int64_t batch, uint64_t seed,
                                           bool shuffle = true, bool drop_last = true) {
  std::vector<DistributedSampler> ranks;
  for (int r = 0; r < world; ++r) ranks.emplace_back(n, batch, r, world, seed, shuffle, drop_last);
  return ranks;
}

// One step of every rank, concatenated in rank order: the global batch.
std::vector<int64_t> global_step(std::vector<DistributedSampler>& ranks) {
  std::vector<int64_t> all;
  for (auto& s : ranks) {
    std::vector<int64_t> mine = s.next();
    EXPECT_EQ(static_cast<int64_t>(mine.size()), s.per_rank_batch());
    all.insert(all.end(), mine.begin(), mine.end());
  }
  return all;
}

using dtrain::testing::error_of;

TEST(RngTest, EngineIsTheStandardMt19937_64) {
  Rng rng(5489);  // the standard's default seed; its 10000th output is specified
  uint64_t x = 0;
  for (int i = 0; i < 10000; ++i) x = rng.next();
  EXPECT_EQ(x, 9981545732273789042ull);
}

TEST(RngTest, BelowUniformAndShuffleIsAPermutation) {
  Rng rng(1);
  std::vector<int> counts(7, 0);
  for (int i = 0; i < 70000; ++i) {
    const uint64_t v = rng.below(7);
    ASSERT_LT(v, 7u);
    ++counts[v];
  }
  for (int c : counts) EXPECT_NEAR(c, 10000, 500);
  std::vector<int64_t> v(1000);
  std::iota(v.begin(), v.end(), 0);
  shuffle(v, rng);
  EXPECT_FALSE(std::is_sorted(v.begin(), v.end()));
  std::vector<int64_t> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) EXPECT_EQ(sorted[i], i);
  double sum = 0, sq = 0;
  for (int i = 0; i < 100000; ++i) {
    const double z = rng.normal();
    sum += z;
    sq += z * z;
  }
  EXPECT_NEAR(sum / 100000, 0.0, 0.02);
  EXPECT_NEAR(sq / 100000, 1.0, 0.02);
  EXPECT_NE(mix_seed(0, 1), mix_seed(0, 2));
  EXPECT_NE(mix_seed(0, 1), mix_seed(1, 1));
}

TEST(RngTest, GoldenOrderIsStable) {
  // Locks the order algorithm: a change here silently changes every resumed job's data.
  DistributedSampler s(10, 2, 0, 1, /*seed=*/42);
  EXPECT_EQ(s.epoch_order(0), (std::vector<int64_t>{5, 3, 8, 2, 6, 1, 9, 7, 4, 0}));
  EXPECT_EQ(s.epoch_order(1), (std::vector<int64_t>{2, 8, 3, 9, 4, 7, 1, 6, 0, 5}));
}

TEST(SamplerTest, RanksAreDisjointAndCoverTheEpoch) {
  const int64_t n = 96, batch = 16;
  for (int world : {1, 2, 4}) {
    auto ranks = make_world(world, n, batch, /*seed=*/7);
    const std::vector<int64_t> order = ranks[0].epoch_order(0);
    std::vector<int64_t> seen;
    for (int64_t step = 0; step < n / batch; ++step) {
      std::vector<int64_t> all = global_step(ranks);
      // The global batch is the next slice of the epoch's order, rank r taking part r.
      EXPECT_EQ(all, std::vector<int64_t>(order.begin() + step * batch,
                                          order.begin() + (step + 1) * batch))
          << "world " << world << " step " << step;
      seen.insert(seen.end(), all.begin(), all.end());
    }
    std::sort(seen.begin(), seen.end());
    std::vector<int64_t> expected(n);
    std::iota(expected.begin(), expected.end(), 0);
    EXPECT_EQ(seen, expected) << "world " << world;
    for (auto& s : ranks) {
      EXPECT_EQ(s.epoch(), 0);
      EXPECT_EQ(s.position(), n);
    }
  }
}

TEST(SamplerTest, SameOrderForEveryWorldSize) {
  // The global batch sequence does not depend on how many ranks split it.
  auto w1 = make_world(1, 50, 8, 3);
  auto w2 = make_world(2, 50, 8, 3);
  auto w4 = make_world(4, 50, 8, 3);
  for (int step = 0; step < 20; ++step) {  // crosses several epochs
    std::vector<int64_t> a = global_step(w1);
    EXPECT_EQ(global_step(w2), a) << step;
    EXPECT_EQ(global_step(w4), a) << step;
  }
}

TEST(SamplerTest, DeterministicAndSeedDependent) {
  DistributedSampler a(100, 10, 0, 1, 5), b(100, 10, 0, 1, 5), c(100, 10, 0, 1, 6);
  EXPECT_EQ(a.epoch_order(0), b.epoch_order(0));
  EXPECT_NE(a.epoch_order(0), c.epoch_order(0));
  EXPECT_NE(a.epoch_order(0), a.epoch_order(1));
  for (int i = 0; i < 25; ++i) EXPECT_EQ(a.next(), b.next());
  DistributedSampler plain(10, 5, 0, 1, 5, /*shuffle=*/false);
  EXPECT_EQ(plain.next(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(plain.next(), (std::vector<int64_t>{5, 6, 7, 8, 9}));
  EXPECT_EQ(plain.next(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(plain.epoch(), 1);
}

TEST(SamplerTest, EpochRolloverWithDropLast) {
  // 70 samples in batches of 16: 4 batches, 6 samples dropped, then epoch 1.
  DistributedSampler s(70, 16, 0, 1, 11);
  const std::vector<int64_t> order0 = s.epoch_order(0), order1 = s.epoch_order(1);
  for (int step = 0; step < 4; ++step) {
    EXPECT_EQ(s.next(),
              std::vector<int64_t>(order0.begin() + 16 * step, order0.begin() + 16 * (step + 1)));
  }
  EXPECT_EQ(s.epoch(), 0);
  EXPECT_EQ(s.position(), 64);
  EXPECT_EQ(s.next(), std::vector<int64_t>(order1.begin(), order1.begin() + 16));
  EXPECT_EQ(s.epoch(), 1);
  EXPECT_EQ(s.position(), 16);
}

TEST(SamplerTest, WithoutDropLastTheLastBatchWrapsAround) {
  auto ranks = make_world(2, 70, 16, 11, /*shuffle=*/true, /*drop_last=*/false);
  const std::vector<int64_t> order = ranks[0].epoch_order(0);
  for (int step = 0; step < 4; ++step) global_step(ranks);
  std::vector<int64_t> last = global_step(ranks);  // order[64, 70) + order[0, 10)
  std::vector<int64_t> expected(order.begin() + 64, order.end());
  expected.insert(expected.end(), order.begin(), order.begin() + 10);
  EXPECT_EQ(last, expected);
  EXPECT_EQ(ranks[0].position(), 70);
  EXPECT_EQ(ranks[0].epoch(), 0);
  std::vector<int64_t> next = global_step(ranks);
  EXPECT_EQ(ranks[0].epoch(), 1);
  const std::vector<int64_t> order1 = ranks[0].epoch_order(1);
  EXPECT_EQ(next, std::vector<int64_t>(order1.begin(), order1.begin() + 16));
}

TEST(SamplerTest, ResumeMidEpochContinuesIdentically) {
  DistributedSampler a(100, 12, 1, 3, 9);
  for (int i = 0; i < 5; ++i) a.next();
  const StateDict state = a.state_dict();
  EXPECT_EQ(state_int(state, "epoch", "t"), 0);
  EXPECT_EQ(state_int(state, "position", "t"), 60);
  EXPECT_EQ(state_int(state, "seed", "t"), 9);
  EXPECT_EQ(state_int(state, "global_batch", "t"), 12);
  EXPECT_EQ(state_int(state, "dataset_size", "t"), 100);
  DistributedSampler b(100, 12, 1, 3, 9);
  b.load_state_dict(state);
  EXPECT_EQ(b.epoch(), 0);
  EXPECT_EQ(b.position(), 60);
  for (int i = 0; i < 30; ++i) EXPECT_EQ(a.next(), b.next()) << i;  // crosses epochs
}

TEST(SamplerTest, ResumeWithAnotherWorldSize) {
  for (int from : {1, 2, 4}) {
    for (int to : {1, 2, 4}) {
      auto before = make_world(from, 90, 8, 21);
      for (int i = 0; i < 13; ++i) global_step(before);  // epoch 1, mid-epoch
      const StateDict state = before[0].state_dict();
      auto after = make_world(to, 90, 8, 21);
      for (auto& s : after) s.load_state_dict(state);
      for (int i = 0; i < 25; ++i) {
        EXPECT_EQ(global_step(after), global_step(before)) << from << "->" << to << " " << i;
      }
    }
  }
}

TEST(SamplerTest, ResumeAtTheEndOfAnEpoch) {
  DistributedSampler a(32, 16, 0, 1, 2);
  a.next();
  a.next();  // position 32: the next call rolls over
  DistributedSampler b(32, 16, 0, 1, 2);
  b.load_state_dict(a.state_dict());
  EXPECT_EQ(a.next(), b.next());
  EXPECT_EQ(b.epoch(), 1);
}

TEST(SamplerTest, ConstructorErrors) {
  std::string msg = error_of([] { DistributedSampler(100, 10, 0, 4, 0); });
  EXPECT_NE(msg.find("SOLVER.IMS_PER_BATCH (10) is not divisible by the world size (4)"),
            std::string::npos)
      << msg;
  EXPECT_THROW(DistributedSampler(100, 10, 0, 4, 0), ConfigError);
  msg = error_of([] { DistributedSampler(8, 16, 0, 2, 0); });
  EXPECT_NE(msg.find("8 samples, fewer than one global batch"), std::string::npos) << msg;
  msg = error_of([] { DistributedSampler(100, 16, 2, 2, 0); });
  EXPECT_NE(msg.find("rank 2"), std::string::npos) << msg;
  EXPECT_THROW(DistributedSampler(100, 0, 0, 1, 0), ConfigError);
}

TEST(SamplerTest, LoadStateErrors) {
  DistributedSampler a(100, 10, 0, 2, 1);
  a.next();
  const StateDict state = a.state_dict();

  // The saved seed wins (a resumed run continues its sample order): the same batches.
  DistributedSampler other_seed(100, 10, 0, 2, 2);
  other_seed.load_state_dict(state);
  EXPECT_EQ(state_int(other_seed.state_dict(), "seed", "t"), 1);
  EXPECT_EQ(other_seed.position(), a.position());
  EXPECT_EQ(other_seed.next(), a.next());

  // An incompatible run is a ConfigError naming the key, not damage.
  DistributedSampler other_batch(100, 20, 0, 2, 1);
  std::string msg = error_of([&] { other_batch.load_state_dict(state); });
  EXPECT_NE(msg.find("global batch 10"), std::string::npos) << msg;
  EXPECT_NE(msg.find("IMS_PER_BATCH = 20"), std::string::npos) << msg;
  EXPECT_THROW(other_batch.load_state_dict(state), ConfigError);
  EXPECT_EQ(other_batch.position(), 0);  // unchanged

  DistributedSampler other_size(120, 10, 0, 2, 1);
  msg = error_of([&] { other_size.load_state_dict(state); });
  EXPECT_NE(msg.find("dataset of 100 samples but this one has 120"), std::string::npos) << msg;

  StateDict missing = state;
  missing.erase("position");
  msg = error_of([&] { a.load_state_dict(missing); });
  EXPECT_NE(msg.find("'position'"), std::string::npos) << msg;

  StateDict odd = state;
  odd["position"] = int64_t{15};
  msg = error_of([&] { a.load_state_dict(odd); });
  EXPECT_NE(msg.find("invalid position"), std::string::npos) << msg;
}

}  // namespace
}  // namespace dtrain::data
