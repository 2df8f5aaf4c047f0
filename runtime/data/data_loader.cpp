// DataLoader: inline or threaded batches in the sampler's order (data_loader.h).
#include "runtime/data/data_loader.h"

#include <utility>

#include "runtime/base/error.h"

namespace dtrain::data {

DataLoaderOptions data_loader_options(const Config& cfg) {
  DataLoaderOptions o;
  o.num_workers = static_cast<int>(cfg.get_int("DATALOADER.NUM_WORKERS"));
  o.prefetch_factor = static_cast<int>(cfg.get_int("DATALOADER.PREFETCH_FACTOR"));
  return o;
}

DataLoader::DataLoader(std::shared_ptr<Dataset> dataset,
                       std::shared_ptr<DistributedSampler> sampler,
                       std::shared_ptr<const Augmenter> augmenter, DataLoaderOptions options)
    : dataset_(std::move(dataset)),
      sampler_(std::move(sampler)),
      augmenter_(std::move(augmenter)),
      options_(options) {
  DTRAIN_CHECK_T(ConfigError, options_.num_workers >= 0,
                 "DATALOADER.NUM_WORKERS must be >= 0, got {}", options_.num_workers);
  DTRAIN_CHECK_T(ConfigError, options_.prefetch_factor >= 1,
                 "DATALOADER.PREFETCH_FACTOR must be >= 1, got {}", options_.prefetch_factor);
  if (augmenter_ && augmenter_->options().enabled()) padding_value_ = dataset_->padding_value();
  consumed_epoch_ = sampler_->epoch();
  consumed_position_ = sampler_->position();
  workers_.reserve(static_cast<size_t>(options_.num_workers));
  for (int i = 0; i < options_.num_workers; ++i) workers_.emplace_back([this] { worker_loop(); });
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    jobs_.clear();
  }
  work_ready_.notify_all();
  for (auto& t : workers_) t.join();
}

Batch DataLoader::make_batch(const std::vector<int64_t>& indices, uint64_t seed,
                             int64_t epoch) const {
  Batch b = dataset_->get_batch(indices);
  if (augmenter_) augmenter_->apply(b, seed, epoch, indices, padding_value_);
  return b;
}

void DataLoader::worker_loop() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_ready_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
      if (stop_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    try {
      job.result.set_value(make_batch(job.indices, job.seed, job.epoch));
    } catch (...) {
      job.result.set_exception(std::current_exception());
    }
  }
}

void DataLoader::fill_queue() {
  const size_t depth = static_cast<size_t>(options_.num_workers) *
                       static_cast<size_t>(options_.prefetch_factor);
  // Drawn outside the lock (a new epoch's order is a shuffle of the whole dataset), so
  // that workers keep taking jobs meanwhile.
  std::vector<Job> fresh;
  while (pending_.size() < depth) {
    Job job;
    job.indices = sampler_->next();
    job.seed = sampler_->seed();
    job.epoch = sampler_->epoch();
    pending_.push_back({job.result.get_future(), sampler_->epoch(), sampler_->position()});
    fresh.push_back(std::move(job));
  }
  if (fresh.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& job : fresh) jobs_.push_back(std::move(job));
  }
  for (size_t i = 0; i < fresh.size(); ++i) work_ready_.notify_one();
}

Batch DataLoader::next() {
  if (options_.num_workers == 0) {
    std::vector<int64_t> indices = sampler_->next();
    Batch b = make_batch(indices, sampler_->seed(), sampler_->epoch());
    consumed_epoch_ = sampler_->epoch();
    consumed_position_ = sampler_->position();
    return b;
  }
  fill_queue();
  Pending p = std::move(pending_.front());
  pending_.pop_front();
  Batch b = p.batch.get();  // rethrows a worker's exception
  consumed_epoch_ = p.epoch;
  consumed_position_ = p.position;
  fill_queue();  // keep the workers busy while the step runs
  return b;
}

void DataLoader::drop_read_ahead() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    jobs_.clear();  // their promises break; nobody waits on them
  }
  // Batches a worker is making finish into promises whose futures are gone.
  pending_.clear();
}

StateDict DataLoader::state_dict() const {
  return sampler_->state_dict_at(consumed_epoch_, consumed_position_);
}

void DataLoader::load_state_dict(const StateDict& state) {
  drop_read_ahead();
  sampler_->load_state_dict(state);
  consumed_epoch_ = sampler_->epoch();
  consumed_position_ = sampler_->position();
}

}  // namespace dtrain::data
