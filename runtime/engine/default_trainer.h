// DefaultTrainer: the whole training job built from a frozen config (detectron2's
// DefaultTrainer), and default_setup() (output dir, config.yaml, environment log).
//
//   dtrain::engine::default_setup(cfg, *comm);
//   dtrain::engine::DefaultTrainer trainer(cfg, comm);
//   trainer.train();                       // iterations [start_iter, SOLVER.MAX_ITER)
//   auto metrics = trainer.test();         // DATASETS.TEST
//
// Every method is collective (all ranks call it). Not thread-safe.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/checkpointer.h"
#include "models/model.h"
#include "runtime/base/config.h"
#include "runtime/dist/communicator.h"
#include "runtime/engine/best_checkpointer.h"
#include "runtime/engine/preemption.h"
#include "runtime/engine/simple_trainer.h"
#include "runtime/engine/threads.h"
#include "runtime/optim/optim.h"
#include "runtime/optim/optimizer_state.h"

namespace dtrain::engine {

// Rank 0 creates OUTPUT_DIR and writes OUTPUT_DIR/config.yaml; every rank logs the
// world size and versions once (rank 0 also the config). Collective (ends in a barrier
// so no rank looks at OUTPUT_DIR before it exists).
void default_setup(const Config& cfg, dist::Communicator& comm);

// The device for MODEL.DEVICE: cpu, or for cuda the GPU local_rank (ConfigError when
// no GPU is usable or there are fewer visible GPUs than local ranks).
at::Device resolve_device(const std::string& device, int local_rank);

// The seed SEED stands for, the same on every rank: SEED itself when >= 0; for -1 rank 0's
// choice, broadcast: with `resume`, the seed OUTPUT_DIR/config.yaml recorded for the run
// being resumed (so that data order and sampler state match its checkpoint), else a new
// random one. `dtrain train` resolves it before default_setup() writes config.yaml, so
// that file always holds the seed used. Collective.
int64_t resolve_seed(const Config& cfg, dist::Communicator& comm, bool resume = false);

// The BestMetric of TEST.BEST_CHECKPOINT.* (nullptr when METRIC is empty). Throws
// ConfigError naming the keys for a MODE other than max/min, for a METRIC without
// DATASETS.TEST, or for one whose dataset is not in DATASETS.TEST.
std::unique_ptr<BestMetric> make_best_metric(const Config& cfg);

class DefaultTrainer {
 public:
  // Builds model, data, optimizer, scheduler, data parallelism and the default hooks.
  // Throws dtrain::ConfigError for an inconsistent config (e.g. IMS_PER_BATCH not
  // divisible by the world size).
  DefaultTrainer(const Config& cfg, std::shared_ptr<dist::Communicator> comm);

  // detectron2's resume_or_load: with `resume` and OUTPUT_DIR/last_checkpoint, restores
  // the complete state and continues after the saved iteration; otherwise loads
  // MODEL.WEIGHTS (if set) into the model only and starts at iteration 0. A resume also
  // keeps the checkpoint's intra-op thread count (keep_checkpoint_threads).
  void resume_or_load(bool resume);
  // Trains from start_iter() to SOLVER.MAX_ITER.
  void train();
  // Evaluates on every DATASETS.TEST set: "<dataset>/<metric>" -> value.
  std::map<std::string, double> test();

  int64_t start_iter() const { return start_iter_; }
  void set_start_iter(int64_t iter) { start_iter_ = iter; }
  SimpleTrainer& trainer() { return *trainer_; }
  models::Model& model() { return *model_; }
  std::shared_ptr<models::Model> model_ptr() { return model_; }
  torch::optim::Optimizer& optimizer() { return *optimizer_; }
  optim::LRScheduler& scheduler() { return *scheduler_; }
  data::DistributedSampler& sampler() { return *sampler_; }
  data::DataLoader& loader() { return *loader_; }
  dist::Communicator& comm() { return *comm_; }
  checkpoint::Checkpointer& checkpointer() { return *checkpointer_; }
  const Config& cfg() const { return cfg_; }

  // The hooks of detectron2's build_hooks(): timer, LR scheduler, periodic
  // checkpointer, preemption (CHECKPOINT.PREEMPT_SIGNALS), evaluation, the best
  // checkpointer (TEST.BEST_CHECKPOINT.METRIC), and (on rank 0) the metric writers, in
  // that order. train() throws Preempted (on every rank) after
  // a preemption checkpoint was committed.
  std::vector<std::shared_ptr<HookBase>> build_hooks();

 private:
  const Config cfg_;
  std::map<std::string, std::shared_ptr<data::Dataset>> test_sets_;
  std::shared_ptr<dist::Communicator> comm_;
  int64_t seed_ = 0;
  std::shared_ptr<models::Model> model_;
  std::shared_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<optim::LRScheduler> scheduler_;
  std::shared_ptr<data::DistributedSampler> sampler_;
  std::shared_ptr<data::DataLoader> loader_;
  std::shared_ptr<DataParallel> data_parallel_;
  std::unique_ptr<SimpleTrainer> trainer_;
  std::unique_ptr<optim::OptimizerState> optimizer_state_;
  checkpoint::RngState rng_state_;
  ThreadCountState threads_state_;  // intra-op threads, kept on resume (threads.h)
  std::unique_ptr<BestMetric> best_;  // TEST.BEST_CHECKPOINT, when METRIC is set
  std::unique_ptr<checkpoint::Checkpointer> checkpointer_;
  std::unique_ptr<checkpoint::PeriodicCheckpointer> periodic_checkpointer_;
  std::unique_ptr<PreemptionWatcher> preemption_;
  int64_t start_iter_ = 0;
};

}  // namespace dtrain::engine
