// DefaultTrainer and default_setup (see default_trainer.h).
#include "runtime/engine/default_trainer.h"

#include <filesystem>
#include <optional>
#include <random>

#include <ATen/ATen.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/version.h>

#include "checkpoint/inspect.h"
#include "runtime/base/error.h"
#include "runtime/base/env.h"
#include "runtime/base/fs.h"
#include "runtime/base/logging.h"
#include "runtime/dist/agree.h"
#include "runtime/dist/rank_env.h"
#include "runtime/engine/evaluator.h"
#include "runtime/engine/hooks.h"
#include "runtime/engine/resume_config.h"
#include "runtime/engine/tensorboard_writer.h"

namespace dtrain::engine {

void default_setup(const Config& cfg, dist::Communicator& comm) {
  const std::string& out = cfg.get_string("OUTPUT_DIR");
  dist::on_root(comm, fmt::format("setting up OUTPUT_DIR '{}'", out), [&] {
    fs::create_directories_durable(out);
    fs::write_file_atomic(out + "/config.yaml", cfg.to_yaml());
    return std::string();
  });
  if (comm.rank() == 0) {
    DTRAIN_LOG_INFO("dtrain world size {} (backend {}, {} ranks on this node), LibTorch {}",
                    comm.size(), comm.backend_name(), comm.local_size(), TORCH_VERSION);
    DTRAIN_LOG_INFO("Full config saved to {}/config.yaml", out);
  }
  comm.barrier();
}

at::Device resolve_device(const std::string& device, int local_rank) {
  if (device == "cpu") return at::Device(at::kCPU);
  DTRAIN_CHECK_T(ConfigError, device.rfind("cuda", 0) == 0,
                 "MODEL.DEVICE must be 'cpu' or 'cuda', got '{}'", device);
  DTRAIN_CHECK_T(ConfigError, at::hasCUDA(),
                 "MODEL.DEVICE is '{}' but no GPU is usable (this LibTorch has no CUDA, or no "
                 "GPU is visible)",
                 device);
  const int gpus = static_cast<int>(at::detail::getCUDAHooks().getNumGPUs());
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(dist::select_cuda_device(local_rank, gpus)));
}

int64_t resolve_seed(const Config& cfg, dist::Communicator& comm, bool resume) {
  const int64_t seed = cfg.get_int("SEED");
  if (seed >= 0) return seed;
  std::string source;
  const std::string drawn = dist::on_root(comm, "resolving SEED -1", [&] {
    const std::string saved = cfg.get_string("OUTPUT_DIR") + "/config.yaml";
    if (resume && std::filesystem::exists(saved)) {
      try {
        const int64_t s = Config::from_file(saved).get_int("SEED");
        if (s >= 0) {
          source = fmt::format(" (the seed of the run being resumed, from {})", saved);
          return std::to_string(s);
        }
      } catch (const Error& e) {
        DTRAIN_LOG_WARN("SEED -1: cannot read the seed of the run being resumed from {} ({}); "
                        "drawing a new one",
                        saved, e.what());
      }
    }
    return std::to_string(std::random_device{}() & 0x7fffffff);
  });
  DTRAIN_LOG_INFO("SEED -1: using seed {}{}", drawn, source);  // rank 0 logs
  return std::stoll(drawn);
}

std::unique_ptr<BestMetric> make_best_metric(const Config& cfg) {
  const std::string metric = cfg.get_string("TEST.BEST_CHECKPOINT.METRIC");
  if (metric.empty()) return nullptr;
  const BestMetric::Mode mode = BestMetric::parse_mode(cfg.get_string("TEST.BEST_CHECKPOINT.MODE"));
  const auto& test_sets = cfg.get_string_list("DATASETS.TEST");
  DTRAIN_CHECK_T(ConfigError, !test_sets.empty(),
                 "TEST.BEST_CHECKPOINT.METRIC is '{}' but DATASETS.TEST is empty: model_best "
                 "needs an evaluation (set DATASETS.TEST, and TEST.EVAL_PERIOD to evaluate "
                 "during training)",
                 metric);
  const std::string name = best_metric_storage_name(metric);
  bool known_dataset = false;
  for (const auto& ds : test_sets) known_dataset |= name.rfind("eval/" + ds + "/", 0) == 0;
  DTRAIN_CHECK_T(ConfigError, known_dataset,
                 "TEST.BEST_CHECKPOINT.METRIC '{}' must be '<dataset>/<metric>' with a dataset "
                 "of DATASETS.TEST ({}), e.g. '{}/accuracy'",
                 metric, fmt::join(test_sets, ", "), test_sets.front());
  return std::make_unique<BestMetric>(name, mode);
}

DefaultTrainer::DefaultTrainer(const Config& cfg, std::shared_ptr<dist::Communicator> comm)
    : cfg_(cfg), comm_(std::move(comm)) {
  const int world = comm_->size();
  const int64_t global_batch = cfg.get_int("SOLVER.IMS_PER_BATCH");
  DTRAIN_CHECK_T(ConfigError, global_batch > 0 && global_batch % world == 0,
                 "SOLVER.IMS_PER_BATCH ({}) must be a positive multiple of the world size ({})",
                 global_batch, world);
  best_ = make_best_metric(cfg);
  seed_ = resolve_seed(cfg, *comm_);

  // Same initialization on every rank (then broadcast from rank 0 anyway); afterwards a
  // per-rank stream so that e.g. dropout differs between ranks, as in detectron2.
  at::manual_seed(static_cast<uint64_t>(seed_));
  model_ = models::build_model(cfg);
  model_->to(resolve_device(cfg.get_string("MODEL.DEVICE"), comm_->local_rank()));
  at::manual_seed(static_cast<uint64_t>(seed_) + static_cast<uint64_t>(comm_->rank()));

  const auto& train_sets = cfg.get_string_list("DATASETS.TRAIN");
  DTRAIN_CHECK_T(ConfigError, train_sets.size() == 1,
                 "DATASETS.TRAIN must name exactly one dataset, got {}", train_sets.size());
  auto dataset = data::build_dataset(train_sets.front(), cfg, /*train=*/true);
  if (comm_->rank() == 0) DTRAIN_LOG_INFO("Training data: {}", dataset->describe());
  sampler_ = std::make_shared<data::DistributedSampler>(
      dataset->size(), global_batch, comm_->rank(), world, static_cast<uint64_t>(seed_),
      cfg.get_bool("DATALOADER.SHUFFLE"), cfg.get_bool("DATALOADER.DROP_LAST"));
  auto augmenter = std::make_shared<const data::Augmenter>(data::AugmentOptions::from_config(cfg));
  if (augmenter->options().enabled()) {
    augmenter->check_sample_shape(dataset->sample_shape(), train_sets.front());
  }
  loader_ = std::make_shared<data::DataLoader>(dataset, sampler_, augmenter,
                                               data::data_loader_options(cfg));

  optimizer_ = optim::build_optimizer(cfg, model_->named_parameters());
  scheduler_ = optim::build_lr_scheduler(cfg, *optimizer_);
  data_parallel_ = std::make_shared<DataParallel>(
      model_, *comm_,
      DataParallelOptions{cfg.get_float("DIST.BUCKET_CAP_MB"), cfg.get_bool("DIST.BROADCAST_BUFFERS"),
                          cfg.get_bool("DIST.OVERLAP_GRAD_REDUCE"),
                          cfg.get_bool("DIST.GRADIENT_AS_BUCKET_VIEW")});
  SimpleTrainer::ClipFn clip;
  if (cfg.get_bool("SOLVER.CLIP_GRADIENTS.ENABLED")) {
    clip = [this](const std::vector<at::Tensor>& params) { optim::clip_gradients(cfg_, params); };
  }
  optimizer_state_ = std::make_unique<optim::OptimizerState>(*optimizer_, model_->named_parameters());
  checkpoint::CheckpointerOptions ckpt_options;
  ckpt_options.config_yaml = cfg.to_yaml();
  ckpt_options.strict = cfg.get_bool("CHECKPOINT.STRICT");
  ckpt_options.matching_heuristics = cfg.get_bool("CHECKPOINT.MATCHING_HEURISTICS");
  ckpt_options.allow_symlinked_shards = cfg.get_bool("CHECKPOINT.ALLOW_SYMLINKED_SHARDS");
  ckpt_options.load_strategy = checkpoint::parse_load_strategy(cfg.get_string("CHECKPOINT.LOAD_STRATEGY"));
  if (cfg.get_int("CHECKPOINT.LOCAL.PERIOD") > 0) {
    checkpoint::LocalTierOptions local;
    local.period = cfg.get_int("CHECKPOINT.LOCAL.PERIOD");
    local.dir = cfg.get_string("CHECKPOINT.LOCAL.DIR");
    local.replicas = static_cast<int>(cfg.get_int("CHECKPOINT.LOCAL.REPLICAS"));
    local.keep = static_cast<int>(cfg.get_int("CHECKPOINT.LOCAL.KEEP"));
    local.write = checkpoint::parse_local_write(cfg.get_string("CHECKPOINT.LOCAL.WRITE"));
    ckpt_options.local = local;
  }
  std::map<std::string, checkpoint::Checkpointable> checkpointables{
      {"optimizer", {optimizer_state_.get()}},
      {"scheduler", {scheduler_.get()}},
      // The loader saves the sampler's position at the last batch it handed out.
      {"sampler", {loader_.get()}},
      {"rng", {&rng_state_, checkpoint::Scope::kPerRank}},
      {"threads", {&threads_state_, checkpoint::Scope::kPerRank}}};
  // Every checkpoint carries the best so far, so that a resume keeps it.
  if (best_) checkpointables["best_checkpointer"] = {best_.get()};
  checkpointer_ = std::make_unique<checkpoint::Checkpointer>(
      model_, cfg.get_string("OUTPUT_DIR"), *comm_, std::move(checkpointables), ckpt_options);
  periodic_checkpointer_ = std::make_unique<checkpoint::PeriodicCheckpointer>(
      *checkpointer_, cfg.get_int("SOLVER.CHECKPOINT_PERIOD"), cfg.get_int("SOLVER.MAX_ITER"),
      cfg.get_int("CHECKPOINT.MAX_TO_KEEP"), "model", cfg.get_bool("CHECKPOINT.ASYNC"),
      checkpoint::parse_on_save_error(cfg.get_string("CHECKPOINT.ON_SAVE_ERROR")));
  std::vector<int> signals;
  for (const auto& name : cfg.get_string_list("CHECKPOINT.PREEMPT_SIGNALS")) {
    signals.push_back(signal_from_name(name));
  }
  if (!signals.empty()) {
    preemption_ = std::make_unique<PreemptionWatcher>(
        signals, cfg.get_float("CHECKPOINT.PREEMPT_DEADLINE_S"));
  }
  trainer_ = std::make_unique<SimpleTrainer>(
      model_, loader_, optimizer_, data_parallel_, clip);
  trainer_->register_hooks(build_hooks());
}

std::vector<std::shared_ptr<HookBase>> DefaultTrainer::build_hooks() {
  std::vector<std::shared_ptr<HookBase>> hooks;
  hooks.push_back(std::make_shared<IterationTimer>());
  hooks.push_back(std::make_shared<LRSchedulerHook>(*scheduler_));
  hooks.push_back(std::make_shared<PeriodicCheckpointerHook>(*periodic_checkpointer_, *checkpointer_));
  if (checkpointer_->local_tier() != nullptr) {
    hooks.push_back(std::make_shared<LocalSnapshotHook>(*checkpointer_, cfg_.get_int("CHECKPOINT.LOCAL.PERIOD")));
  }
  if (preemption_) {
    hooks.push_back(std::make_shared<PreemptionHook>(*preemption_, *checkpointer_, *comm_));
  }
  if (!cfg_.get_string_list("DATASETS.TEST").empty()) {
    hooks.push_back(std::make_shared<EvalHook>(cfg_.get_int("TEST.EVAL_PERIOD"),
                                               [this] { return test(); }));
    // After the EvalHook of the same iteration; saves through the PeriodicCheckpointer
    // so that retention also runs after the commit of an asynchronous save it finishes.
    if (best_) {
      hooks.push_back(std::make_shared<BestCheckpointer>(
          cfg_.get_int("TEST.EVAL_PERIOD"), *best_, *comm_,
          [this](const std::string& name, const StateDict& extra) {
            periodic_checkpointer_->save(name, extra);
          }));
    }
  }
  if (comm_->rank() == 0) {
    const std::string out = cfg_.get_string("OUTPUT_DIR");
    std::vector<std::shared_ptr<EventWriter>> writers{
        std::make_shared<CommonMetricPrinter>(cfg_.get_int("SOLVER.MAX_ITER")),
        std::make_shared<JsonWriter>(out + "/metrics.json")};
    if (cfg_.get_bool("LOG.TENSORBOARD")) {
      writers.push_back(std::make_shared<TensorboardXWriter>(out));
    }
    // The evaluation schedule tells a resumed run's writers which records it rewrites.
    std::optional<int64_t> eval_period;
    if (!cfg_.get_string_list("DATASETS.TEST").empty()) eval_period = cfg_.get_int("TEST.EVAL_PERIOD");
    hooks.push_back(
        std::make_shared<PeriodicWriter>(writers, cfg_.get_int("LOG.PERIOD"), eval_period));
  }
  return hooks;
}

namespace {

// The config differences between this run and checkpoint `dir` ("" on other ranks,
// or when it cannot be read: the report is advice, never a reason to fail).
std::string config_changes(const Config& cfg, const std::string& dir, int rank) {
  if (rank != 0 || dir.empty()) return "";
  try {
    return describe_config_changes(cfg, checkpoint::read_config_yaml(dir), dir);
  } catch (const std::exception& e) {
    return fmt::format("cannot read the config {} was saved with: {}", dir, e.what());
  }
}

}  // namespace

void DefaultTrainer::resume_or_load(bool resume) {
  StateDict extra;
  try {
    extra = checkpointer_->resume_or_load(cfg_.get_string("MODEL.WEIGHTS"), resume);
  } catch (const ConfigError& e) {
    // The run does not fit the checkpoint (agreed on every rank): say which keys changed.
    if (!resume) throw;
    std::string tagged;  // the checkpoint tried first; a damaged tag names none
    try {
      tagged = checkpointer_->get_checkpoint_file();
    } catch (const CheckpointError&) {
    }
    const std::string changes = config_changes(cfg_, tagged, comm_->rank());
    throw ConfigError(changes.empty() ? std::string(e.what()) : std::string(e.what()) + "\n" + changes);
  }
  auto it = extra.find("iteration");
  if (resume && it != extra.end()) {
    if (auto iter = std::get_if<int64_t>(&it->second); iter && *iter >= 0) start_iter_ = *iter + 1;
    // A local snapshot is of this very config (its job key includes it).
    const std::string changes = checkpointer_->loaded_from_local()
                                    ? std::string()
                                    : config_changes(cfg_, checkpointer_->loaded_from(), comm_->rank());
    if (!changes.empty()) DTRAIN_LOG_WARN("{}", changes);
  }
  // The thread count splits floating-point sums: keep the checkpoint's (threads.h).
  if (resume) keep_checkpoint_threads(threads_state_.saved());
}

void DefaultTrainer::train() {
  trainer_->train(start_iter_, cfg_.get_int("SOLVER.MAX_ITER"));
}

std::map<std::string, double> DefaultTrainer::test() {
  std::map<std::string, double> results;
  for (const auto& name : cfg_.get_string_list("DATASETS.TEST")) {
    auto& ds = test_sets_[name];
    if (!ds) ds = data::build_dataset(name, cfg_, /*train=*/false);
    auto metrics = evaluate(*model_, *ds, *comm_, cfg_.get_int("TEST.IMS_PER_BATCH"));
    std::string line;
    for (const auto& [k, v] : metrics) {
      results[name + "/" + k] = v;
      line += fmt::format("{}={:.4f} ", k, v);
    }
    if (comm_->rank() == 0) DTRAIN_LOG_INFO("Evaluation on {}: {}", name, line);
  }
  return results;
}

}  // namespace dtrain::engine
