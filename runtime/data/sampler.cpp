// DistributedSampler: per-epoch global order, rank slices, resumable position (sampler.h).
#include "runtime/data/sampler.h"

#include <algorithm>
#include <numeric>

#include "runtime/base/error.h"
#include "runtime/data/rng.h"

namespace dtrain::data {
namespace {

constexpr char kOwner[] = "DistributedSampler";
// mix_seed stream of the epoch orders; each epoch then mixes in its number.
constexpr uint64_t kOrderStream = 0x5EED'0DE5'0000'0001ull;

}  // namespace

DistributedSampler::DistributedSampler(int64_t dataset_size, int64_t global_batch, int rank,
                                       int world_size, uint64_t seed, bool shuffle, bool drop_last)
    : dataset_size_(dataset_size),
      global_batch_(global_batch),
      rank_(rank),
      world_size_(world_size),
      seed_(seed),
      shuffle_(shuffle),
      drop_last_(drop_last) {
  DTRAIN_CHECK_T(ConfigError, world_size >= 1 && rank >= 0 && rank < world_size,
                 "DistributedSampler: rank {} is outside a world of {}", rank, world_size);
  DTRAIN_CHECK_T(ConfigError, global_batch >= 1,
                 "DistributedSampler: SOLVER.IMS_PER_BATCH must be >= 1, got {}", global_batch);
  DTRAIN_CHECK_T(ConfigError, global_batch % world_size == 0,
                 "DistributedSampler: SOLVER.IMS_PER_BATCH ({}) is not divisible by the world "
                 "size ({}); use a multiple of {}",
                 global_batch, world_size, world_size);
  DTRAIN_CHECK_T(ConfigError, dataset_size >= global_batch,
                 "DistributedSampler: the dataset holds {} samples, fewer than one global batch "
                 "(SOLVER.IMS_PER_BATCH = {})",
                 dataset_size, global_batch);
}

std::vector<int64_t> DistributedSampler::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order(static_cast<size_t>(dataset_size_));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (shuffle_) {
    Rng rng(mix_seed(mix_seed(seed_, kOrderStream), static_cast<uint64_t>(epoch)));
    data::shuffle(order, rng);
  }
  return order;
}

std::vector<int64_t> DistributedSampler::next() {
  // Roll over when no complete batch (drop_last) or no sample at all is left.
  const bool exhausted =
      drop_last_ ? position_ + global_batch_ > dataset_size_ : position_ >= dataset_size_;
  if (exhausted) {
    ++epoch_;
    position_ = 0;
  }
  if (order_epoch_ != epoch_) {
    order_ = epoch_order(epoch_);
    order_epoch_ = epoch_;
  }
  // The global batch is order_[position_, position_ + B); a final partial batch (only
  // without drop_last) is padded by wrapping to the start of the order, as PyTorch's
  // DistributedSampler does, so that every rank gets B / W samples.
  const int64_t per_rank = per_rank_batch();
  const int64_t first = position_ + rank_ * per_rank;
  std::vector<int64_t> mine(static_cast<size_t>(per_rank));
  for (int64_t k = 0; k < per_rank; ++k) mine[k] = order_[(first + k) % dataset_size_];
  position_ = std::min(position_ + global_batch_, dataset_size_);
  return mine;
}

StateDict DistributedSampler::state_dict() const {
  return state_dict_at(epoch_, position_);
}

StateDict DistributedSampler::state_dict_at(int64_t epoch, int64_t position) const {
  StateDict s;
  s["epoch"] = epoch;
  s["position"] = position;
  s["seed"] = static_cast<int64_t>(seed_);  // bit pattern of the uint64 seed
  s["global_batch"] = global_batch_;
  s["dataset_size"] = dataset_size_;
  return s;
}

void DistributedSampler::load_state_dict(const StateDict& state) {
  const int64_t seed = state_int(state, "seed", kOwner);
  const int64_t global_batch = state_int(state, "global_batch", kOwner);
  const int64_t dataset_size = state_int(state, "dataset_size", kOwner);
  const int64_t epoch = state_int(state, "epoch", kOwner);
  const int64_t position = state_int(state, "position", kOwner);
  // Incompatibilities with this run are ConfigErrors (never a reason to try an older
  // checkpoint); the saved seed wins over SEED (a resumed run continues the sample order
  // it was on, as its restored RNG states continue theirs; SEED -1 picks a new seed).
  DTRAIN_CHECK_T(ConfigError, global_batch == global_batch_,
                 "DistributedSampler state: the checkpoint has global batch {} but this run "
                 "uses SOLVER.IMS_PER_BATCH = {}",
                 global_batch, global_batch_);
  DTRAIN_CHECK_T(ConfigError, dataset_size == dataset_size_,
                 "DistributedSampler state: the checkpoint was written for a dataset of {} "
                 "samples but this one has {} (DATASETS.TRAIN changed?)",
                 dataset_size, dataset_size_);
  DTRAIN_CHECK_T(CheckpointError,
                 epoch >= 0 && position >= 0 && position <= dataset_size_ &&
                     (position % global_batch_ == 0 || position == dataset_size_),
                 "DistributedSampler state: invalid position (epoch {}, position {}) for {} "
                 "samples in batches of {}",
                 epoch, position, dataset_size_, global_batch_);
  seed_ = static_cast<uint64_t>(seed);
  epoch_ = epoch;
  position_ = position;
}

}  // namespace dtrain::data
