// DataLoader: this rank's training batches (sampler indices -> dataset samples ->
// augmentation), made inline or by DATALOADER.NUM_WORKERS threads ahead of the training
// step, like PyTorch's DataLoader(num_workers=N, prefetch_factor=F).
//
//   DataLoader loader(dataset, sampler, augmenter, {/*num_workers=*/4, /*prefetch=*/2});
//   Batch b = loader.next();          // blocks until the next batch in order is ready
//   checkpointables["sampler"] = {&loader};   // saved with the Checkpointer (default_trainer.cpp)
//
// Batches come out in the sampler's order whatever the number of workers, and every
// sample's augmentation depends only on (seed, epoch, index) (augment.h): the batches
// are bitwise the same with 0, 1 or N workers. Workers read ahead up to
// num_workers * prefetch_factor batches; state_dict() is the sampler's state after the
// last batch next() handed out (not after the ones read ahead), so a checkpoint resumes
// at the first batch the training step has not seen. load_state_dict() drops the batches
// read ahead and moves the sampler. next(), state_dict() and load_state_dict() are for
// one thread (the training loop); the workers are internal.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "runtime/base/stateful.h"
#include "runtime/data/augment.h"
#include "runtime/data/dataset.h"
#include "runtime/data/sampler.h"

namespace dtrain::data {

struct DataLoaderOptions {
  int num_workers = 0;     // 0: batches are made inline by next()
  int prefetch_factor = 2;  // batches read ahead per worker (>= 1)
};

class DataLoader : public Stateful {
 public:
  // `augmenter` may be null (no augmentation). Throws ConfigError for a negative
  // num_workers or a prefetch_factor < 1 (naming DATALOADER.*).
  DataLoader(std::shared_ptr<Dataset> dataset, std::shared_ptr<DistributedSampler> sampler,
             std::shared_ptr<const Augmenter> augmenter = nullptr, DataLoaderOptions options = {});
  // Stops the workers (a batch being made is finished and dropped).
  ~DataLoader() override;
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The next batch in the sampler's order. An error while making it (a bad file, an
  // index out of range) is rethrown here, as the type the worker saw.
  Batch next();

  Dataset& dataset() { return *dataset_; }
  DistributedSampler& sampler() { return *sampler_; }
  const DataLoaderOptions& options() const { return options_; }

  // The sampler's keys (sampler.h) at the last batch handed out.
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

 private:
  struct Job {
    std::vector<int64_t> indices;
    uint64_t seed = 0;
    int64_t epoch = 0;
    std::promise<Batch> result;
  };
  struct Pending {
    std::future<Batch> batch;
    int64_t epoch = 0;     // sampler position after this batch
    int64_t position = 0;
  };

  Batch make_batch(const std::vector<int64_t>& indices, uint64_t seed, int64_t epoch) const;
  void fill_queue();
  void drop_read_ahead();
  void worker_loop();

  std::shared_ptr<Dataset> dataset_;
  std::shared_ptr<DistributedSampler> sampler_;
  std::shared_ptr<const Augmenter> augmenter_;
  DataLoaderOptions options_;
  float padding_value_ = 0.0f;
  // Sampler position after the last batch next() returned.
  int64_t consumed_epoch_ = 0;
  int64_t consumed_position_ = 0;

  std::deque<Pending> pending_;  // training thread only
  std::mutex mutex_;             // guards jobs_ and stop_ (shared with the workers)
  std::condition_variable work_ready_;
  std::deque<Job> jobs_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

// DataLoaderOptions from DATALOADER.NUM_WORKERS and DATALOADER.PREFETCH_FACTOR.
DataLoaderOptions data_loader_options(const Config& cfg);

}  // namespace dtrain::data
