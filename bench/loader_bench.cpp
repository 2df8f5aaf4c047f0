// Samples/s of data::DataLoader alone and feeding one-process training of the cnn config,
// against torch.utils.data.DataLoader(num_workers=N) and the same model in PyTorch
// (bench/loader_peer.py, started by this program in each round), on Fashion-MNIST with
// per-sample random crop + horizontal flip; with physical-limit references measured in
// the same run (issue 13).
//
//   build/bin/dtrain_loader_bench --rounds 3 --json results.jsonl
//
// Flags (defaults in brackets): --config YAML [configs/cnn_fashion_mnist.yaml of the
// source tree], --workers comma list of NUM_WORKERS [0,1,2], --rounds [3], --batch [128],
// --prefetch PREFETCH_FACTOR [2], --padding INPUT.CROP.PADDING [4], --warmup untimed
// loader batches [5], --loader-batches timed batches [100], --warmup-steps [3],
// --train-iters timed training steps [15], --threads intra-op threads [1], --peer path
// of loader_peer.py, "none" to skip it [bench/loader_peer.py of the source tree],
// --python [/usr/bin/python3], --json FILE append the result [none].
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/utils.h>

#include "bench/bench_util.h"
#include "models/model.h"
#include "runtime/base/config.h"
#include "runtime/base/error.h"
#include "runtime/base/logging.h"
#include "runtime/data/augment.h"
#include "runtime/data/data_loader.h"
#include "runtime/data/dataset.h"
#include "runtime/data/in_memory.h"
#include "runtime/data/sampler.h"
#include "runtime/dist/local_communicator.h"
#include "runtime/engine/data_parallel.h"
#include "runtime/engine/simple_trainer.h"
#include "runtime/optim/optim.h"

#ifndef DTRAIN_SOURCE_DIR
#define DTRAIN_SOURCE_DIR "."
#endif

namespace dtrain::bench {
namespace {

struct Options {
  std::string config_path;
  std::vector<int64_t> workers;
  int64_t rounds = 3;
  int64_t batch = 128;
  int64_t prefetch = 2;
  int64_t padding = 4;
  int64_t warmup = 5;
  int64_t loader_batches = 100;
  int64_t warmup_steps = 3;
  int64_t train_iters = 15;
  int64_t threads = 1;
  std::string peer;
  std::string python;
  std::string json_path;
};

std::vector<int64_t> parse_int_list(const std::string& flag, const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream s(text);
  std::string item;
  while (std::getline(s, item, ',')) {
    try {
      size_t pos = 0;
      const int64_t v = std::stoll(item, &pos);
      if (pos == item.size() && v >= 0) {
        out.push_back(v);
        continue;
      }
    } catch (const std::exception&) {
    }
    throw ConfigError(fmt::format("--{}: expected a comma list of integers >= 0, got '{}'", flag,
                                  text));
  }
  DTRAIN_CHECK_T(ConfigError, !out.empty(), "--{}: empty list", flag);
  return out;
}

// One timed run: samples handed out per wall second, and this process's CPU seconds per
// wall second over the same span (all its threads: up to 1 + workers).
struct Rate {
  double samples_per_s = 0.0;
  double seconds = 0.0;
  double cpu_share = 0.0;
};

// A timer of `samples` over the code run by `body`.
template <typename Fn>
Rate timed(int64_t samples, Fn&& body) {
  const double cpu0 = process_cpu_seconds();
  Stopwatch sw;
  body();
  Rate r;
  r.seconds = sw.seconds();
  r.cpu_share = (process_cpu_seconds() - cpu0) / r.seconds;
  r.samples_per_s = static_cast<double>(samples) / r.seconds;
  return r;
}

class Bench {
 public:
  Bench(Config cfg, const Options& o) : cfg_(std::move(cfg)), o_(o) {
    const auto& sets = cfg_.get_string_list("DATASETS.TRAIN");
    DTRAIN_CHECK_T(ConfigError, sets.size() == 1, "DATASETS.TRAIN must name one dataset");
    dataset_name_ = sets.front();
    Stopwatch sw;
    dataset_ = data::build_dataset(dataset_name_, cfg_, /*train=*/true);
    load_s_ = sw.seconds();
    augmenter_ = std::make_shared<const data::Augmenter>(data::AugmentOptions::from_config(cfg_));
    augmenter_->check_sample_shape(dataset_->sample_shape(), dataset_name_);
  }

  const data::Dataset& dataset() const { return *dataset_; }
  double load_seconds() const { return load_s_; }

  std::shared_ptr<data::DistributedSampler> sampler() const {
    return std::make_shared<data::DistributedSampler>(dataset_->size(), o_.batch, 0, 1,
                                                      static_cast<uint64_t>(cfg_.get_int("SEED")));
  }

  std::shared_ptr<data::DataLoader> loader(int64_t workers) const {
    return std::make_shared<data::DataLoader>(
        dataset_, sampler(), augmenter_,
        data::DataLoaderOptions{static_cast<int>(workers), static_cast<int>(o_.prefetch)});
  }

  // (a) the loader alone: next() of --loader-batches batches after --warmup.
  Rate loader_rate(int64_t workers) const {
    auto l = loader(workers);
    for (int64_t i = 0; i < o_.warmup; ++i) l->next();
    return timed(o_.batch * o_.loader_batches, [&] {
      for (int64_t i = 0; i < o_.loader_batches; ++i) l->next();
    });
  }

  // (b) SimpleTrainer steps fed by `loader` (what DefaultTrainer builds for the config:
  // build_model, build_optimizer, DataParallel over a world of one).
  Rate train_rate(std::shared_ptr<data::DataLoader> loader) const {
    at::manual_seed(static_cast<uint64_t>(std::max<int64_t>(cfg_.get_int("SEED"), 0)));
    auto model = models::build_model(cfg_);
    std::shared_ptr<torch::optim::Optimizer> opt =
        optim::build_optimizer(cfg_, model->named_parameters());
    dist::LocalCommunicator comm;
    auto dp = std::make_shared<engine::DataParallel>(
        model, comm,
        engine::DataParallelOptions{cfg_.get_float("DIST.BUCKET_CAP_MB"),
                                    cfg_.get_bool("DIST.BROADCAST_BUFFERS"),
                                    cfg_.get_bool("DIST.OVERLAP_GRAD_REDUCE"),
                                    cfg_.get_bool("DIST.GRADIENT_AS_BUCKET_VIEW")});
    engine::SimpleTrainer trainer(model, std::move(loader), opt, dp);
    for (int64_t i = 0; i < o_.warmup_steps; ++i) trainer.run_step();
    return timed(o_.batch * o_.train_iters, [&] {
      for (int64_t i = 0; i < o_.train_iters; ++i) trainer.run_step();
    });
  }

  // The model's limit: the same steps on one batch of the data set held in memory as
  // float32 (no augmentation, inline: the loader's share is a 400 kB memcpy).
  Rate compute_rate() const {
    std::vector<int64_t> first(static_cast<size_t>(o_.batch));
    for (int64_t i = 0; i < o_.batch; ++i) first[static_cast<size_t>(i)] = i;
    data::Batch b = dataset_->get_batch(first);
    auto one = std::make_shared<data::ClassificationDataset>(b.inputs, b.targets, 10, "one batch");
    auto s = std::make_shared<data::DistributedSampler>(o_.batch, o_.batch, 0, 1, 0);
    return train_rate(std::make_shared<data::DataLoader>(one, s));
  }

  // Where an inline (0-worker) batch spends its time: sampler, get_batch (uint8 ->
  // normalized float32 gather), Augmenter::apply; the medians over --loader-batches
  // batches, in seconds per batch.
  struct Breakdown {
    double sampler_s = 0.0, get_batch_s = 0.0, augment_s = 0.0;
  };
  Breakdown breakdown() const {
    auto s = sampler();
    std::vector<double> ts, tg, ta;
    for (int64_t i = 0; i < o_.warmup + o_.loader_batches; ++i) {
      Stopwatch sw;
      std::vector<int64_t> idx = s->next();
      const double t0 = sw.seconds();
      data::Batch b = dataset_->get_batch(idx);
      const double t1 = sw.seconds();
      augmenter_->apply(b, s->seed(), s->epoch(), idx, dataset_->padding_value());
      const double t2 = sw.seconds();
      if (i < o_.warmup) continue;
      ts.push_back(t0);
      tg.push_back(t1 - t0);
      ta.push_back(t2 - t1);
    }
    return {median(ts), median(tg), median(ta)};
  }

  // memcpy of one batch's float32 bytes (inputs + int64 targets) between two buffers
  // that stay in cache: the bound of any loader that hands out a fresh batch.
  double memcpy_samples_per_s() const {
    const int64_t per_sample = 784 * 4 + 8;
    const size_t bytes = static_cast<size_t>(per_sample * o_.batch);
    std::vector<char> src(bytes, 1), dst(bytes);
    const int reps = 2000;
    std::vector<double> t;
    for (int k = 0; k < 5; ++k) {
      Stopwatch sw;
      for (int i = 0; i < reps; ++i) {
        std::memcpy(dst.data(), src.data(), bytes);
        src[static_cast<size_t>(i) % bytes] = dst[(static_cast<size_t>(i) * 7) % bytes];
      }
      t.push_back(sw.seconds() / reps);
    }
    return static_cast<double>(o_.batch) / median(t);
  }

 private:
  Config cfg_;
  Options o_;
  std::string dataset_name_;
  std::shared_ptr<data::Dataset> dataset_;
  std::shared_ptr<const data::Augmenter> augmenter_;
  double load_s_ = 0.0;
};

// Runs the peer for one round; returns its JSON line ("runs": [{part, workers,
// samples_per_s}]), or null when it failed.
nlohmann::json run_peer(const Options& o, const Config& cfg, int64_t round,
                        const std::string& out_path) {
  std::remove(out_path.c_str());
  std::string workers;
  for (int64_t n : o.workers) workers += fmt::format(" {}", n);
  std::string channels;
  for (int64_t c : cfg.get_int_list("MODEL.CNN.CHANNELS")) channels += fmt::format(" {}", c);
  const std::string cmd = fmt::format(
      "'{}' '{}' --root '{}' --workers{} --batch {} --prefetch {} --padding {} --warmup {} "
      "--loader-batches {} --warmup-steps {} --train-iters {} --channels{} --hidden {} "
      "--lr {} --momentum {} --weight-decay {} --threads {} --round {} --json '{}'",
      o.python, o.peer, cfg.get_string("DATASETS.FASHION_MNIST.ROOT"), workers, o.batch,
      o.prefetch, o.padding, o.warmup, o.loader_batches, o.warmup_steps, o.train_iters, channels,
      cfg.get_int("MODEL.CNN.HIDDEN_DIM"), cfg.get_float("SOLVER.BASE_LR"),
      cfg.get_float("SOLVER.MOMENTUM"), cfg.get_float("SOLVER.WEIGHT_DECAY"), o.threads, round,
      out_path);
  std::fflush(stdout);
  const int rc = std::system(cmd.c_str());
  if (rc != 0) {
    fmt::print("  peer failed (status {}): {}\n", rc, cmd);
    return nullptr;
  }
  std::ifstream in(out_path);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty()) last = line;
  }
  if (last.empty()) return nullptr;
  return nlohmann::json::parse(last);
}

double peer_rate(const nlohmann::json& peer, const std::string& part, int64_t workers) {
  if (peer.is_null()) return 0.0;
  for (const auto& r : peer["runs"]) {
    if (r["part"] == part && r["workers"].get<int64_t>() == workers) {
      return r["samples_per_s"].get<double>();
    }
  }
  return 0.0;
}

std::string join_ratios(const std::vector<double>& v) {
  std::string s;
  for (double x : v) s += fmt::format("{}{:.2f}", s.empty() ? "" : " ", x);
  return s;
}

int run(int argc, char** argv) {
  Flags flags(argc, argv);
  Options o;
  o.config_path =
      flags.get("config", std::string(DTRAIN_SOURCE_DIR) + "/configs/cnn_fashion_mnist.yaml");
  o.workers = parse_int_list("workers", flags.get("workers", "0,1,2"));
  o.rounds = flags.get_int("rounds", 3);
  o.batch = flags.get_int("batch", 128);
  o.prefetch = flags.get_int("prefetch", 2);
  o.padding = flags.get_int("padding", 4);
  o.warmup = flags.get_int("warmup", 5);
  o.loader_batches = flags.get_int("loader-batches", 100);
  o.warmup_steps = flags.get_int("warmup-steps", 3);
  o.train_iters = flags.get_int("train-iters", 15);
  o.threads = flags.get_int("threads", 1);
  o.peer = flags.get("peer", std::string(DTRAIN_SOURCE_DIR) + "/bench/loader_peer.py");
  o.python = flags.get("python", "/usr/bin/python3");
  o.json_path = flags.get("json", "");
  flags.check_all_used();
  DTRAIN_CHECK_T(ConfigError,
                 o.rounds > 0 && o.batch > 0 && o.prefetch > 0 && o.padding >= 0 &&
                     o.warmup >= 0 && o.loader_batches > 0 && o.warmup_steps >= 0 &&
                     o.train_iters > 0 && o.threads > 0,
                 "--rounds, --batch, --prefetch, --loader-batches, --train-iters and --threads "
                 "must be positive, --padding, --warmup and --warmup-steps >= 0");
  const bool with_peer = o.peer != "none";

  log::init(0, 1);
  at::set_num_threads(static_cast<int>(o.threads));
  Config cfg = Config::from_file(o.config_path);
  cfg.set("SOLVER.IMS_PER_BATCH", o.batch);
  cfg.set("INPUT.RANDOM_FLIP", std::string("horizontal"));
  cfg.set("INPUT.CROP.ENABLED", o.padding > 0);
  cfg.set("INPUT.CROP.PADDING", o.padding);
  if (cfg.get_int("SEED") < 0) cfg.set("SEED", int64_t{0});
  cfg.freeze();

  Bench bench(cfg, o);
  const double memcpy_sps = bench.memcpy_samples_per_s();
  fmt::print(
      "loader | {} ({}), batch {}, crop padding {} + horizontal flip, prefetch factor {}, "
      "{} intra-op thread(s), model {} channels [{}] hidden {}, {} round(s); {} cores, load "
      "average {}\n"
      "  data set loaded in {:.2f} s: {}\n",
      cfg.get_string_list("DATASETS.TRAIN").front(), o.config_path, o.batch, o.padding,
      o.prefetch, o.threads, cfg.get_string("MODEL.NAME"),
      fmt::join(cfg.get_int_list("MODEL.CNN.CHANNELS"), ", "), cfg.get_int("MODEL.CNN.HIDDEN_DIM"),
      o.rounds, ::sysconf(_SC_NPROCESSORS_ONLN), load_average(), bench.load_seconds(),
      bench.dataset().describe());
  if (with_peer && ::access(o.peer.c_str(), R_OK) != 0) {
    throw ConfigError(fmt::format("--peer '{}' cannot be read (\"none\" skips the peer)", o.peer));
  }
  const std::string peer_out =
      fmt::format("/tmp/dtrain-loader-peer-{}.jsonl", static_cast<long>(::getpid()));

  // Per round, per workers: dtrain and torch samples/s of both parts.
  const size_t nw = o.workers.size();
  std::vector<std::vector<double>> d_loader(nw), t_loader(nw), d_train(nw), t_train(nw);
  std::vector<std::vector<double>> d_loader_cpu(nw), d_train_cpu(nw);
  std::vector<double> d_compute, t_compute, d_get_batch, d_augment, d_sampler, d_raw;
  nlohmann::json rounds_json = nlohmann::json::array();

  for (int64_t round = 1; round <= o.rounds; ++round) {
    const bool peer_first = round % 2 == 0;
    fmt::print("== round {}/{} ({} first), load average {}\n", round, o.rounds,
               with_peer && peer_first ? "torch" : "dtrain", load_average());
    nlohmann::json peer = nullptr;
    if (with_peer && peer_first) peer = run_peer(o, cfg, round, peer_out);

    nlohmann::json dj = nlohmann::json::array();
    const Rate compute = bench.compute_rate();
    d_compute.push_back(compute.samples_per_s);
    fmt::print("dtrain compute (one batch in memory): {:9.1f} samples/s\n", compute.samples_per_s);
    dj.push_back({{"part", "compute"}, {"workers", 0}, {"samples_per_s", compute.samples_per_s},
                  {"cpu_share", compute.cpu_share}});
    const auto bd = bench.breakdown();
    d_sampler.push_back(bd.sampler_s);
    d_get_batch.push_back(bd.get_batch_s);
    d_augment.push_back(bd.augment_s);
    d_raw.push_back(static_cast<double>(o.batch) / bd.get_batch_s);
    for (size_t w = 0; w < nw; ++w) {
      const Rate l = bench.loader_rate(o.workers[w]);
      fmt::print("dtrain loader  workers {}: {:9.1f} samples/s (CPU {:.2f} cores)\n", o.workers[w],
                 l.samples_per_s, l.cpu_share);
      const Rate t = bench.train_rate(bench.loader(o.workers[w]));
      fmt::print("dtrain train   workers {}: {:9.1f} samples/s (CPU {:.2f} cores)\n", o.workers[w],
                 t.samples_per_s, t.cpu_share);
      d_loader[w].push_back(l.samples_per_s);
      d_loader_cpu[w].push_back(l.cpu_share);
      d_train[w].push_back(t.samples_per_s);
      d_train_cpu[w].push_back(t.cpu_share);
      dj.push_back({{"part", "loader"}, {"workers", o.workers[w]},
                    {"samples_per_s", l.samples_per_s}, {"cpu_share", l.cpu_share}});
      dj.push_back({{"part", "train"}, {"workers", o.workers[w]},
                    {"samples_per_s", t.samples_per_s}, {"cpu_share", t.cpu_share}});
    }
    if (with_peer && !peer_first) peer = run_peer(o, cfg, round, peer_out);
    t_compute.push_back(peer_rate(peer, "compute", 0));
    for (size_t w = 0; w < nw; ++w) {
      t_loader[w].push_back(peer_rate(peer, "loader", o.workers[w]));
      t_train[w].push_back(peer_rate(peer, "train", o.workers[w]));
    }
    rounds_json.push_back({{"round", round},
                           {"peer_first", peer_first},
                           {"dtrain", dj},
                           {"torch", peer.is_null() ? nlohmann::json(nullptr) : peer["runs"]},
                           {"breakdown_s", {{"sampler", bd.sampler_s},
                                            {"get_batch", bd.get_batch_s},
                                            {"augment", bd.augment_s}}}});
  }
  std::remove(peer_out.c_str());

  // Ratios per round, then their median (both sides ran within the same round).
  auto ratios = [](const std::vector<double>& a, const std::vector<double>& b) {
    std::vector<double> r;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
      if (b[i] > 0) r.push_back(a[i] / b[i]);
    }
    return r;
  };
  const double batch_ms = 1e3;
  fmt::print(
      "\nloader summary | medians of {} round(s), samples/s; ratio = median of the per-round "
      "dtrain/torch ratios (goal >= 1); load average now {}\n",
      o.rounds, load_average());
  fmt::print("  references (dtrain, inline, one thread):\n"
             "    memcpy of a batch's bytes       {:11.0f} samples/s\n"
             "    get_batch, no augmentation      {:11.0f} samples/s ({:.3f} ms/batch)\n"
             "    Augmenter::apply                {:11.0f} samples/s ({:.3f} ms/batch)\n"
             "    sampler next()                  {:11.0f} samples/s ({:.3f} ms/batch)\n",
             memcpy_sps, median(d_raw), median(d_get_batch) * batch_ms,
             static_cast<double>(o.batch) / median(d_augment), median(d_augment) * batch_ms,
             static_cast<double>(o.batch) / std::max(median(d_sampler), 1e-12),
             median(d_sampler) * batch_ms);
  fmt::print("  {:<28} {:>10} {:>10} {:>7}  {:<24} {}\n", "", "dtrain", "torch", "ratio",
             "per round", "dtrain CPU (cores)");
  nlohmann::json summary = nlohmann::json::array();
  auto row = [&](const std::string& name, const std::string& part, int64_t workers,
                 const std::vector<double>& d, const std::vector<double>& t,
                 const std::vector<double>& cpu) {
    const auto r = ratios(d, t);
    fmt::print("  {:<28} {:10.1f} {:10.1f} {:>7}  {:<24} {}\n", name, median(d), median(t),
               r.empty() ? "-" : fmt::format("{:.2f}", median(r)), join_ratios(r),
               cpu.empty() ? "" : fmt::format("{:.2f}", median(cpu)));
    summary.push_back({{"part", part}, {"workers", workers}, {"dtrain_samples_per_s", median(d)},
                       {"torch_samples_per_s", median(t)},
                       {"ratio", r.empty() ? 0.0 : median(r)}, {"ratios", r}});
  };
  for (size_t w = 0; w < nw; ++w) {
    row(fmt::format("loader alone, workers {}", o.workers[w]), "loader", o.workers[w], d_loader[w],
        t_loader[w], d_loader_cpu[w]);
  }
  for (size_t w = 0; w < nw; ++w) {
    row(fmt::format("training, workers {}", o.workers[w]), "train", o.workers[w], d_train[w],
        t_train[w], d_train_cpu[w]);
  }
  row("compute (no loader)", "compute", 0, d_compute, t_compute, {});
  fmt::print("  training / compute (the loader's cost in training):\n");
  for (size_t w = 0; w < nw; ++w) {
    const auto rd = ratios(d_train[w], d_compute);
    const auto rt = ratios(t_train[w], t_compute);
    fmt::print("    workers {}: dtrain {:.2f}, torch {}\n", o.workers[w], median(rd),
               rt.empty() ? "-" : fmt::format("{:.2f}", median(rt)));
  }
  std::fflush(stdout);

  nlohmann::json j = {{"bench", "loader"},
                      {"impl", "dtrain"},
                      {"config", o.config_path},
                      {"batch", o.batch},
                      {"padding", o.padding},
                      {"prefetch", o.prefetch},
                      {"threads", o.threads},
                      {"workers", o.workers},
                      {"loader_batches", o.loader_batches},
                      {"train_iters", o.train_iters},
                      {"rounds", o.rounds},
                      {"memcpy_samples_per_s", memcpy_sps},
                      {"get_batch_samples_per_s", median(d_raw)},
                      {"augment_s_per_batch", median(d_augment)},
                      {"get_batch_s_per_batch", median(d_get_batch)},
                      {"sampler_s_per_batch", median(d_sampler)},
                      {"summary", summary},
                      {"per_round", rounds_json},
                      {"load_average", load_average()}};
  append_json_line(o.json_path, j);
  return 0;
}

}  // namespace
}  // namespace dtrain::bench

int main(int argc, char** argv) {
  return dtrain::bench::bench_main(argc, argv, "dtrain_loader_bench", dtrain::bench::run);
}
