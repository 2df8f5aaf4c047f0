// Samples/s of data::DataLoader alone and feeding one-process training of the cnn config,
// against torch.utils.data.DataLoader(num_workers=N) and the same model in PyTorch
// (bench/loader_peer.py, started by this program in each round), on Fashion-MNIST with
// per-sample random crop + horizontal flip; with physical-limit references measured in
// the same run (issue 13).
//
//   build/bin/dtrain_loader_bench --json results.jsonl       # ~1.5-2.5 min on 2 cores
//
// Each round measures, for every --workers N, the loader alone and training fed by it, and
// training on one batch held in memory (the model's limit, "compute"); each measurement
// of dtrain is followed (or preceded: the order alternates) by the same measurement of
// the peer, which runs as a child process taking one request at a time, so that each
// per-round ratio compares two runs seconds apart. Medians of the per-round ratios are
// reported, with the inline loader's breakdown (sampler, get_batch, augmentation) and a
// memcpy of a batch's bytes as references.
//
// Flags (defaults in brackets): --config YAML [configs/cnn_fashion_mnist.yaml of the
// source tree], --workers comma list of NUM_WORKERS [0,1,2], --rounds [5], --batch [128],
// --prefetch PREFETCH_FACTOR [2], --padding INPUT.CROP.PADDING [4], --warmup untimed
// loader batches [5], --loader-batches timed batches of the peer [100],
// --dtrain-loader-batches timed batches of dtrain's loader [400], --warmup-steps [5],
// --train-iters timed training steps [30], --threads intra-op threads [1], --malloc
// retain|default: glibc keeps freed memory in both processes, or its defaults [retain],
// --peer path of loader_peer.py, "none" to skip it [bench/loader_peer.py of the source
// tree], --python [/usr/bin/python3], --json FILE append the result [none].
#include <fcntl.h>
#include <malloc.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
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

// --malloc retain: glibc's largest mmap threshold (HEAP_MAX_SIZE / 2 on 64-bit) and a
// trim threshold of 1 GiB.
constexpr int kRetainMmapThreshold = 32 << 20;
constexpr int kRetainTrimThreshold = 1 << 30;

struct Options {
  std::string config_path;
  std::vector<int64_t> workers;
  int64_t rounds = 5;
  int64_t batch = 128;
  int64_t prefetch = 2;
  int64_t padding = 4;
  int64_t warmup = 5;
  int64_t loader_batches = 100;
  int64_t dtrain_loader_batches = 400;
  int64_t warmup_steps = 5;
  int64_t train_iters = 30;
  int64_t threads = 1;
  std::string peer;
  std::string python;
  std::string json_path;
  std::string malloc;
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
  double minor_faults = 0.0;  // of the process, per batch (step)
};

// One figure's rounds.
struct Series {
  std::vector<double> samples_per_s, cpu_share, minor_faults;
  void add(const Rate& r) {
    samples_per_s.push_back(r.samples_per_s);
    cpu_share.push_back(r.cpu_share);
    minor_faults.push_back(r.minor_faults);
  }
};

int64_t minor_faults() {
  struct rusage u {};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

// A timer of `samples` over the code run by `body`.
template <typename Fn>
Rate timed(int64_t batches, int64_t batch, Fn&& body) {
  const double cpu0 = process_cpu_seconds();
  const int64_t faults0 = minor_faults();
  Stopwatch sw;
  body();
  Rate r;
  r.seconds = sw.seconds();
  r.cpu_share = (process_cpu_seconds() - cpu0) / r.seconds;
  r.samples_per_s = static_cast<double>(batches * batch) / r.seconds;
  r.minor_faults = static_cast<double>(minor_faults() - faults0) / static_cast<double>(batches);
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

  // (a) the loader alone: next() of --dtrain-loader-batches batches after --warmup (more
  // than the peer's --loader-batches: at ~10x the peer's rate, so that the timed window
  // is ~0.1-0.3 s here rather than a few tens of milliseconds).
  Rate loader_rate(int64_t workers) const {
    auto l = loader(workers);
    for (int64_t i = 0; i < o_.warmup; ++i) l->next();
    return timed(o_.dtrain_loader_batches, o_.batch, [&] {
      for (int64_t i = 0; i < o_.dtrain_loader_batches; ++i) l->next();
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
    return timed(o_.train_iters, o_.batch, [&] {
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

  // The same steps as compute_rate() written as a bare LibTorch loop (forward, loss,
  // zero_grad, backward, step, loss.item()) without SimpleTrainer and DataParallel: what
  // the trainer adds to a step.
  Rate bare_rate() const {
    std::vector<int64_t> first(static_cast<size_t>(o_.batch));
    for (int64_t i = 0; i < o_.batch; ++i) first[static_cast<size_t>(i)] = i;
    data::Batch b = dataset_->get_batch(first);
    at::manual_seed(static_cast<uint64_t>(std::max<int64_t>(cfg_.get_int("SEED"), 0)));
    auto model = models::build_model(cfg_);
    model->train();
    auto opt = optim::build_optimizer(cfg_, model->named_parameters());
    auto step = [&] {
      at::Tensor loss = engine::task_loss(model->task(), model->forward(b.inputs), b.targets);
      opt->zero_grad();
      loss.backward();
      opt->step();
      return loss.item<double>();
    };
    for (int64_t i = 0; i < o_.warmup_steps; ++i) step();
    return timed(o_.train_iters, o_.batch, [&] {
      for (int64_t i = 0; i < o_.train_iters; ++i) step();
    });
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

// bench/loader_peer.py --serve as a child process: one request line in, one JSON line
// out, so that each dtrain measurement and the peer's same one run seconds apart. When
// the peer cannot start or dies, ask() returns null and the run goes on without it.
// Not thread-safe.
class Peer {
 public:
  Peer(const Options& o, const Config& cfg) {
    std::vector<std::string> args{o.python, o.peer, "--serve", "--root",
                                  cfg.get_string("DATASETS.FASHION_MNIST.ROOT")};
    auto add = [&](const std::string& flag, const std::string& v) {
      args.push_back("--" + flag);
      args.push_back(v);
    };
    add("batch", std::to_string(o.batch));
    add("prefetch", std::to_string(o.prefetch));
    add("padding", std::to_string(o.padding));
    add("warmup", std::to_string(o.warmup));
    add("loader-batches", std::to_string(o.loader_batches));
    add("warmup-steps", std::to_string(o.warmup_steps));
    add("train-iters", std::to_string(o.train_iters));
    args.push_back("--channels");
    for (int64_t c : cfg.get_int_list("MODEL.CNN.CHANNELS")) args.push_back(std::to_string(c));
    add("hidden", std::to_string(cfg.get_int("MODEL.CNN.HIDDEN_DIM")));
    add("lr", fmt::format("{}", cfg.get_float("SOLVER.BASE_LR")));
    add("momentum", fmt::format("{}", cfg.get_float("SOLVER.MOMENTUM")));
    add("weight-decay", fmt::format("{}", cfg.get_float("SOLVER.WEIGHT_DECAY")));
    add("threads", std::to_string(o.threads));
    for (const auto& a : args) command_ += (command_.empty() ? "" : " ") + a;

    int to_child[2], from_child[2];
    DTRAIN_CHECK(::pipe2(to_child, O_CLOEXEC) == 0 && ::pipe2(from_child, O_CLOEXEC) == 0,
                 "pipe: {}", std::strerror(errno));
    std::fflush(stdout);
    pid_ = ::fork();
    DTRAIN_CHECK(pid_ >= 0, "fork: {}", std::strerror(errno));
    if (pid_ == 0) {
      ::dup2(to_child[0], 0);
      ::dup2(from_child[1], 1);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      std::fprintf(stderr, "dtrain_loader_bench: cannot run %s: %s\n", argv[0],
                   std::strerror(errno));
      ::_exit(127);
    }
    ::close(to_child[0]);
    ::close(from_child[1]);
    in_ = ::fdopen(to_child[1], "w");
    out_ = ::fdopen(from_child[0], "r");
    hello_ = read_line();
  }
  ~Peer() {
    if (in_) {
      std::fputs("quit\n", in_);
      std::fclose(in_);
    }
    if (out_) std::fclose(out_);
    int status = 0;
    if (pid_ > 0) ::waitpid(pid_, &status, 0);
  }
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;

  // The peer's first line ({"ready": true, "dataset_load_s", "torch_version"}), or null.
  const nlohmann::json& hello() const { return hello_; }
  const std::string& command() const { return command_; }

  // The result of `request` ("compute", "loader N", "train N"): samples/s (0 when the
  // peer failed) and minor page faults per batch of the peer's main process.
  Rate ask(const std::string& request) {
    Rate out;
    if (hello_.is_null() || !in_) return out;
    std::fprintf(in_, "%s\n", request.c_str());
    std::fflush(in_);
    nlohmann::json r = read_line();
    if (r.is_null() || !r.contains("samples_per_s")) {
      fmt::print("  peer gave no result for '{}'{}\n", request,
                 r.is_null() ? "" : ": " + r.dump());
      return out;
    }
    out.samples_per_s = r["samples_per_s"].get<double>();
    out.seconds = r.value("seconds", 0.0);
    out.minor_faults = r.value("minor_faults", 0.0);
    return out;
  }

 private:
  nlohmann::json read_line() {
    char* line = nullptr;
    size_t cap = 0;
    const ssize_t n = out_ ? ::getline(&line, &cap, out_) : -1;
    nlohmann::json j = nullptr;
    if (n > 0) j = nlohmann::json::parse(std::string(line, static_cast<size_t>(n)), nullptr, false);
    std::free(line);
    if (j.is_discarded()) j = nullptr;
    if (j.is_null()) hello_ = nullptr;  // the peer is gone or talks nonsense: stop asking
    return j;
  }

  pid_t pid_ = -1;
  FILE* in_ = nullptr;
  FILE* out_ = nullptr;
  std::string command_;
  nlohmann::json hello_ = nullptr;
};

std::string join_ratios(const std::vector<double>& v) {
  std::string s;
  for (double x : v) s += fmt::format("{}{:.2f}", s.empty() ? "" : " ", x);
  return s;
}

int run(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines as they come, also into a file
  Flags flags(argc, argv);
  Options o;
  o.config_path =
      flags.get("config", std::string(DTRAIN_SOURCE_DIR) + "/configs/cnn_fashion_mnist.yaml");
  o.workers = parse_int_list("workers", flags.get("workers", "0,1,2"));
  o.rounds = flags.get_int("rounds", 5);
  o.batch = flags.get_int("batch", 128);
  o.prefetch = flags.get_int("prefetch", 2);
  o.padding = flags.get_int("padding", 4);
  o.warmup = flags.get_int("warmup", 5);
  o.loader_batches = flags.get_int("loader-batches", 100);
  o.dtrain_loader_batches = flags.get_int("dtrain-loader-batches", 400);
  o.warmup_steps = flags.get_int("warmup-steps", 5);
  o.train_iters = flags.get_int("train-iters", 30);
  o.threads = flags.get_int("threads", 1);
  o.peer = flags.get("peer", std::string(DTRAIN_SOURCE_DIR) + "/bench/loader_peer.py");
  o.python = flags.get("python", "/usr/bin/python3");
  o.json_path = flags.get("json", "");
  o.malloc = flags.get("malloc", "retain");
  flags.check_all_used();
  DTRAIN_CHECK_T(ConfigError, o.malloc == "retain" || o.malloc == "default",
                 "--malloc: expected retain or default, got '{}'", o.malloc);
  DTRAIN_CHECK_T(ConfigError,
                 o.rounds > 0 && o.batch > 0 && o.prefetch > 0 && o.padding >= 0 &&
                     o.warmup >= 0 && o.loader_batches > 0 && o.dtrain_loader_batches > 0 && o.warmup_steps >= 0 &&
                     o.train_iters > 0 && o.threads > 0,
                 "--rounds, --batch, --prefetch, --loader-batches, --train-iters and --threads "
                 "must be positive, --padding, --warmup and --warmup-steps >= 0");
  const bool with_peer = o.peer != "none";

  if (o.malloc == "retain") {
    // glibc serves blocks up to 32 MiB from the heap and keeps freed memory, in this
    // process and (through the environment) in the peer: every step's temporaries reuse
    // touched pages instead of new mappings (see bench/README.md: on this VM a fresh page
    // costs more than the step's arithmetic).
    DTRAIN_CHECK(mallopt(M_MMAP_THRESHOLD, kRetainMmapThreshold) == 1 &&
                     mallopt(M_TRIM_THRESHOLD, kRetainTrimThreshold) == 1,
                 "mallopt refused the --malloc retain thresholds");
    ::setenv("MALLOC_MMAP_THRESHOLD_", std::to_string(kRetainMmapThreshold).c_str(), 1);
    ::setenv("MALLOC_TRIM_THRESHOLD_", std::to_string(kRetainTrimThreshold).c_str(), 1);
  }
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
      "{} intra-op thread(s), model {} channels [{}] hidden {}, {} round(s), malloc {}; {} "
      "cores, load average {}\n"
      "  data set loaded in {:.2f} s: {}\n",
      cfg.get_string_list("DATASETS.TRAIN").front(), o.config_path, o.batch, o.padding,
      o.prefetch, o.threads, cfg.get_string("MODEL.NAME"),
      fmt::join(cfg.get_int_list("MODEL.CNN.CHANNELS"), ", "), cfg.get_int("MODEL.CNN.HIDDEN_DIM"),
      o.rounds, o.malloc, ::sysconf(_SC_NPROCESSORS_ONLN), load_average(), bench.load_seconds(),
      bench.dataset().describe());
  if (with_peer && ::access(o.peer.c_str(), R_OK) != 0) {
    throw ConfigError(fmt::format("--peer '{}' cannot be read (\"none\" skips the peer)", o.peer));
  }
  std::unique_ptr<Peer> peer;
  if (with_peer) {
    peer = std::make_unique<Peer>(o, cfg);
    if (peer->hello().is_null()) {
      fmt::print("  the peer did not start ({}); going on without it\n", peer->command());
    } else {
      fmt::print("  peer: {} (torch {}, data set loaded in {:.2f} s)\n", o.peer,
                 peer->hello().value("torch_version", "?"),
                 peer->hello().value("dataset_load_s", 0.0));
    }
  }

  // Per workers, per round: dtrain and torch samples/s of each part.
  const size_t nw = o.workers.size();
  std::vector<Series> d_loader(nw), t_loader(nw), d_train(nw), t_train(nw);
  Series d_compute, t_compute, d_bare;
  std::vector<double> d_get_batch, d_augment, d_sampler, d_raw;
  nlohmann::json rounds_json = nlohmann::json::array();

  int64_t item = 0;  // which side goes first alternates from one measurement to the next
  for (int64_t round = 1; round <= o.rounds; ++round) {
    fmt::print("== round {}/{}, load average {}\n", round, o.rounds, load_average());
    nlohmann::json rj = nlohmann::json::array();
    // dtrain's and the peer's measurement of one thing, back to back in alternating order.
    auto pair = [&](const std::string& part, int64_t workers, const std::function<Rate()>& mine,
                    Series& d, Series& t) {
      const bool peer_first = item++ % 2 == 1;
      const std::string request = part == "compute" ? part : fmt::format("{} {}", part, workers);
      Rate theirs;
      if (peer && peer_first) theirs = peer->ask(request);
      const Rate r = mine();
      if (peer && !peer_first) theirs = peer->ask(request);
      d.add(r);
      t.add(theirs);
      fmt::print("  {:<8}{:>7}: dtrain {:9.1f} samples/s ({:.2f} cores, {:6.0f} faults/batch), "
                 "torch {:9.1f} ({:6.0f} faults/batch){}\n",
                 part, part == "compute" ? "" : fmt::format("{} wkr", workers), r.samples_per_s,
                 r.cpu_share, r.minor_faults, theirs.samples_per_s, theirs.minor_faults,
                 theirs.samples_per_s > 0
                     ? fmt::format(": {:.2f}x", r.samples_per_s / theirs.samples_per_s)
                     : "");
      rj.push_back({{"part", part}, {"workers", workers}, {"peer_first", peer_first},
                    {"dtrain_samples_per_s", r.samples_per_s}, {"dtrain_cpu_share", r.cpu_share},
                    {"dtrain_minor_faults_per_batch", r.minor_faults},
                    {"torch_samples_per_s", theirs.samples_per_s},
                    {"torch_minor_faults_per_batch", theirs.minor_faults}});
    };
    pair("compute", 0, [&] { return bench.compute_rate(); }, d_compute, t_compute);
    const Rate bare = bench.bare_rate();
    d_bare.add(bare);
    fmt::print("  bare LibTorch step loop (no trainer): {:9.1f} samples/s\n", bare.samples_per_s);
    for (size_t w = 0; w < nw; ++w) {
      const int64_t n = o.workers[w];
      pair("loader", n, [&] { return bench.loader_rate(n); }, d_loader[w], t_loader[w]);
      pair("train", n, [&] { return bench.train_rate(bench.loader(n)); }, d_train[w], t_train[w]);
    }
    const auto bd = bench.breakdown();
    d_sampler.push_back(bd.sampler_s);
    d_get_batch.push_back(bd.get_batch_s);
    d_augment.push_back(bd.augment_s);
    d_raw.push_back(static_cast<double>(o.batch) / bd.get_batch_s);
    rounds_json.push_back({{"round", round},
                           {"runs", rj},
                           {"breakdown_s", {{"sampler", bd.sampler_s},
                                            {"get_batch", bd.get_batch_s},
                                            {"augment", bd.augment_s}}}});
  }
  peer.reset();

  // Ratios per round, then their median (both sides ran within the same round).
  auto ratios = [](const std::vector<double>& a, const std::vector<double>& b) {
    std::vector<double> r;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
      if (b[i] > 0) r.push_back(a[i] / b[i]);
    }
    return r;
  };
  const double per_batch_us = 1e6;  // microseconds
  fmt::print(
      "\nloader summary | medians of {} round(s), samples/s; ratio = median of the per-round "
      "dtrain/torch ratios (goal >= 1); load average now {}\n",
      o.rounds, load_average());
  fmt::print("  references (dtrain, inline, one thread):\n"
             "    memcpy of a batch's bytes       {:11.0f} samples/s\n"
             "    get_batch, no augmentation      {:11.0f} samples/s ({:.1f} us/batch)\n"
             "    Augmenter::apply                {:11.0f} samples/s ({:.1f} us/batch)\n"
             "    sampler next()                  {:11.0f} samples/s ({:.1f} us/batch)\n",
             memcpy_sps, median(d_raw), median(d_get_batch) * per_batch_us,
             static_cast<double>(o.batch) / median(d_augment), median(d_augment) * per_batch_us,
             static_cast<double>(o.batch) / std::max(median(d_sampler), 1e-12),
             median(d_sampler) * per_batch_us);
  fmt::print("  {:<26} {:>10} {:>10} {:>6}  {:<30} {:>6} {:>14}\n", "", "dtrain", "torch",
             "ratio", "ratio per round", "cores", "faults/batch");
  nlohmann::json summary = nlohmann::json::array();
  auto row = [&](const std::string& name, const std::string& part, int64_t workers,
                 const Series& d, const Series& t) {
    const auto r = ratios(d.samples_per_s, t.samples_per_s);
    fmt::print("  {:<26} {:10.1f} {:>10} {:>6}  {:<30} {:6.2f} {:6.0f} {:>7}\n", name,
               median(d.samples_per_s),
               t.samples_per_s.empty() ? "-" : fmt::format("{:.1f}", median(t.samples_per_s)),
               r.empty() ? "-" : fmt::format("{:.2f}", median(r)), join_ratios(r),
               median(d.cpu_share), median(d.minor_faults),
               r.empty() ? "" : fmt::format("{:.0f}", median(t.minor_faults)));
    summary.push_back({{"part", part},
                       {"workers", workers},
                       {"dtrain_samples_per_s", median(d.samples_per_s)},
                       {"torch_samples_per_s", median(t.samples_per_s)},
                       {"ratio", r.empty() ? 0.0 : median(r)},
                       {"ratios", r},
                       {"dtrain_cpu_share", median(d.cpu_share)},
                       {"dtrain_minor_faults_per_batch", median(d.minor_faults)},
                       {"torch_minor_faults_per_batch", median(t.minor_faults)}});
  };
  for (size_t w = 0; w < nw; ++w) {
    row(fmt::format("loader alone, {} workers", o.workers[w]), "loader", o.workers[w], d_loader[w],
        t_loader[w]);
  }
  for (size_t w = 0; w < nw; ++w) {
    row(fmt::format("training, {} workers", o.workers[w]), "train", o.workers[w], d_train[w],
        t_train[w]);
  }
  row("compute (no loader)", "compute", 0, d_compute, t_compute);
  row("bare step loop (dtrain)", "bare", 0, d_bare, Series{});
  fmt::print("  training / compute, i.e. what the loader leaves of the model's rate (medians of "
             "per-round ratios):\n");
  for (size_t w = 0; w < nw; ++w) {
    const auto rd = ratios(d_train[w].samples_per_s, d_compute.samples_per_s);
    const auto rt = ratios(t_train[w].samples_per_s, t_compute.samples_per_s);
    fmt::print("    {} workers: dtrain {:.2f}, torch {}\n", o.workers[w], median(rd),
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
                      {"dtrain_loader_batches", o.dtrain_loader_batches},
                      {"train_iters", o.train_iters},
                      {"rounds", o.rounds},
                      {"malloc", o.malloc},
                      {"memcpy_samples_per_s", memcpy_sps},
                      {"bare_step_samples_per_s", median(d_bare.samples_per_s)},
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
