// Tests of the DataLoader (runtime/data/data_loader.h): the same batches with 0, 1 or 4
// workers, the checkpointed position is the last batch handed out, resume (also on
// another world size) continues exactly, worker errors reach the training thread.
#include "runtime/data/data_loader.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <utility>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "runtime/base/error.h"
#include "runtime/data/in_memory.h"
#include "tests/gtest_util.h"

namespace dtrain::data {
namespace {

constexpr int64_t kSamples = 100;
constexpr int64_t kGlobalBatch = 8;  // 12 batches per epoch, 4 samples dropped

std::shared_ptr<Dataset> images() {
  static std::shared_ptr<Dataset> ds = [] {
    at::manual_seed(11);
    return std::make_shared<ClassificationDataset>(
        at::randint(0, 256, {kSamples, 1, 6, 6}).to(at::kByte),
        at::randint(0, 10, {kSamples}, at::kLong), 10, "bytes", ByteNormalization{0.3f, 0.4f});
  }();
  return ds;
}

std::shared_ptr<const Augmenter> augmenter() {
  return std::make_shared<const Augmenter>(AugmentOptions{FlipMode::kHorizontal, 2});
}

std::unique_ptr<DataLoader> make_loader(int workers, int rank = 0, int world = 1,
                                        std::shared_ptr<Dataset> ds = images()) {
  auto sampler =
      std::make_shared<DistributedSampler>(ds->size(), kGlobalBatch, rank, world, /*seed=*/5);
  return std::make_unique<DataLoader>(ds, sampler, augmenter(), DataLoaderOptions{workers, 2});
}

std::vector<Batch> take(DataLoader& loader, int n) {
  std::vector<Batch> out;
  for (int i = 0; i < n; ++i) out.push_back(loader.next());
  return out;
}

// (epoch, position) of a sampler state dict.
std::pair<int64_t, int64_t> where(const StateDict& s) {
  return {std::get<int64_t>(s.at("epoch")), std::get<int64_t>(s.at("position"))};
}

void expect_same(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(at::equal(a[i].inputs, b[i].inputs)) << "batch " << i;
    EXPECT_TRUE(at::equal(a[i].targets, b[i].targets)) << "batch " << i;
  }
}

TEST(DataLoaderTest, WorkersGiveBitwiseTheInlineBatchesAcrossEpochs) {
  auto inline_loader = make_loader(0);
  const auto expected = take(*inline_loader, 30);  // 2.5 epochs
  // Augmentation really ran: no batch equals the plain samples.
  auto plain = std::make_shared<DistributedSampler>(kSamples, kGlobalBatch, 0, 1, 5);
  EXPECT_FALSE(at::equal(images()->get_batch(plain->next()).inputs, expected[0].inputs));
  for (int workers : {1, 4}) {
    SCOPED_TRACE(workers);
    auto loader = make_loader(workers);
    expect_same(take(*loader, 30), expected);
  }
}

TEST(DataLoaderTest, StateIsTheLastBatchHandedOutNotTheOnesReadAhead) {
  auto inline_loader = make_loader(0);
  auto threaded = make_loader(4);  // reads 8 batches ahead
  for (int i = 0; i < 15; ++i) {
    inline_loader->next();
    threaded->next();
    EXPECT_EQ(where(threaded->state_dict()), where(inline_loader->state_dict()))
        << "after batch " << i;
  }
  EXPECT_EQ(where(threaded->state_dict()), std::make_pair(int64_t{1}, 3 * kGlobalBatch));
  // The sampler itself is ahead: it handed the workers more.
  EXPECT_GT(threaded->sampler().position() + threaded->sampler().epoch() * kSamples,
            3 * kGlobalBatch + kSamples);
}

TEST(DataLoaderTest, ResumeContinuesWithTheNextBatchWhateverTheWorkers) {
  auto reference = make_loader(0);
  const auto all = take(*reference, 25);
  for (int saved_workers : {0, 1, 4}) {
    for (int resumed_workers : {0, 1, 4}) {
      SCOPED_TRACE(::testing::Message() << saved_workers << " -> " << resumed_workers);
      auto first = make_loader(saved_workers);
      take(*first, 10);
      const StateDict state = first->state_dict();
      auto resumed = make_loader(resumed_workers);
      take(*resumed, 3);  // it had read ahead already: load_state_dict drops that
      resumed->load_state_dict(state);
      expect_same(take(*resumed, 15), std::vector<Batch>(all.begin() + 10, all.end()));
    }
  }
}

TEST(DataLoaderTest, TwoRanksResumedOnFourSeeTheSameSamples) {
  // Two ranks with workers, 7 batches; then four ranks resume from rank 0's state.
  std::vector<std::unique_ptr<DataLoader>> two, four;
  for (int r = 0; r < 2; ++r) two.push_back(make_loader(r == 0 ? 4 : 1, r, 2));
  for (auto& l : two) take(*l, 7);
  const StateDict state = two[0]->state_dict();
  EXPECT_EQ(where(state), where(two[1]->state_dict()));
  for (int r = 0; r < 4; ++r) {
    four.push_back(make_loader(r % 2 == 0 ? 4 : 0, r, 4));
    four.back()->load_state_dict(state);
  }
  for (int step = 0; step < 10; ++step) {
    std::vector<at::Tensor> two_inputs, four_inputs, two_targets, four_targets;
    for (auto& l : two) {
      Batch b = l->next();
      two_inputs.push_back(b.inputs);
      two_targets.push_back(b.targets);
    }
    for (auto& l : four) {
      Batch b = l->next();
      four_inputs.push_back(b.inputs);
      four_targets.push_back(b.targets);
    }
    EXPECT_TRUE(at::equal(at::cat(two_inputs), at::cat(four_inputs))) << "step " << step;
    EXPECT_TRUE(at::equal(at::cat(two_targets), at::cat(four_targets))) << "step " << step;
  }
}

// Throws for sample 13, sleeps a little per batch so that workers overlap.
class FlakyDataset : public Dataset {
 public:
  int64_t size() const override { return images()->size(); }
  Batch get_batch(const std::vector<int64_t>& indices) const override {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    for (int64_t i : indices) DTRAIN_CHECK_T(ConfigError, i != 13, "flaky.h5: sample 13 is bad");
    return images()->get_batch(indices);
  }
  std::string describe() const override { return "flaky"; }
};

TEST(DataLoaderTest, AWorkersErrorReachesNextWithItsTypeAndMessage) {
  for (int workers : {0, 1, 4}) {
    auto loader = make_loader(workers, 0, 1, std::make_shared<FlakyDataset>());
    std::string msg = dtrain::testing::ThrownMessage<ConfigError>([&] {
      for (int i = 0; i < 13; ++i) loader->next();  // sample 13 is in the first epoch
    });
    EXPECT_CONTAINS(msg, "flaky.h5: sample 13 is bad");
  }
}

TEST(DataLoaderTest, DestroyingWhileWorkersAreBusyReturns) {
  auto loader = make_loader(4, 0, 1, std::make_shared<FlakyDataset>());
  auto sampler = std::make_shared<DistributedSampler>(kSamples, kGlobalBatch, 0, 1, 6);
  DataLoader busy(std::make_shared<FlakyDataset>(), sampler, nullptr, {4, 8});
  busy.next();  // 32 batches queued, some in flight; the destructor must not hang
}

TEST(DataLoaderTest, BadOptionsAreConfigErrorsNamingTheKey) {
  auto sampler = std::make_shared<DistributedSampler>(kSamples, kGlobalBatch, 0, 1, 5);
  EXPECT_CONTAINS(dtrain::testing::ThrownMessage<ConfigError>(
                      [&] { DataLoader(images(), sampler, nullptr, {-1, 2}); }),
                  "DATALOADER.NUM_WORKERS");
  EXPECT_CONTAINS(dtrain::testing::ThrownMessage<ConfigError>(
                      [&] { DataLoader(images(), sampler, nullptr, {2, 0}); }),
                  "DATALOADER.PREFETCH_FACTOR");
}

}  // namespace
}  // namespace dtrain::data
