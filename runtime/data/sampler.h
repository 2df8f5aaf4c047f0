// DistributedSampler: deterministic, resumable, world-size-independent batch order.
//
// Each epoch has one global order of sample indices (a permutation from SEED + epoch,
// or 0..N-1 without shuffle). Iteration k of an epoch consumes the global batch
// order[k*B, (k+1)*B) where B = SOLVER.IMS_PER_BATCH; rank r takes the contiguous slice
// [r*B/W, (r+1)*B/W) of it. The position is (epoch, global index into the order), so a
// job resumed with a different world size continues at the same sample.
//
//   DistributedSampler s(ds->size(), /*global_batch=*/64, rank, world, seed);
//   std::vector<int64_t> mine = s.next();    // this rank's 64/world indices
//
// Not thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/base/stateful.h"

namespace dtrain::data {

class DistributedSampler : public Stateful {
 public:
  // Throws dtrain::ConfigError when global_batch is not divisible by world_size, or
  // when the dataset holds fewer samples than one global batch.
  DistributedSampler(int64_t dataset_size, int64_t global_batch, int rank, int world_size,
                     uint64_t seed, bool shuffle = true, bool drop_last = true);

  // This rank's indices for the next global batch; moves to the next epoch when the
  // current one has no complete batch left (or, without drop_last, none at all).
  std::vector<int64_t> next();

  int64_t epoch() const { return epoch_; }
  // Index into the epoch's global order of the next sample to hand out.
  int64_t position() const { return position_; }
  int64_t per_rank_batch() const { return global_batch_ / world_size_; }
  // The seed of the orders (SEED, or the checkpoint's after load_state_dict).
  uint64_t seed() const { return seed_; }

  // The epoch's global order (exposed for tests).
  std::vector<int64_t> epoch_order(int64_t epoch) const;

  // Keys: "epoch", "position", "seed", "global_batch", "dataset_size". Loading checks
  // that seed, global batch and dataset size match (clear error otherwise); the world
  // size may differ.
  StateDict state_dict() const override;
  // state_dict() as it was at (epoch, position): what a data loader that read ahead
  // saves for the batches it has handed out.
  StateDict state_dict_at(int64_t epoch, int64_t position) const;
  void load_state_dict(const StateDict& state) override;

 private:
  int64_t dataset_size_;
  int64_t global_batch_;
  int rank_;
  int world_size_;
  uint64_t seed_;
  bool shuffle_;
  bool drop_last_;
  int64_t epoch_ = 0;
  int64_t position_ = 0;
  std::vector<int64_t> order_;  // cached order of epoch_
  int64_t order_epoch_ = -1;
};

}  // namespace dtrain::data
