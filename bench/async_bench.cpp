// Asynchronous checkpoints (issue 6). Two parts, both on every rank at once:
//  - stall: the time Checkpointer::save_async keeps the caller, for the full training
//    state of dtrain_ckpt_bench (gpt parameters + AdamW state), against a plain memcpy of
//    the same tensors into preallocated host buffers (at::Tensor::copy_) and against a
//    synchronous Checkpointer::save, in rotating order within each round;
//  - training: the total time of a training run (SimpleTrainer + DataParallel + SGD on
//    a wide mlp) with a PeriodicCheckpointer every --period iterations, synchronous and
//    asynchronous, against the same run without checkpoints, back to back in rotating
//    order within each round.
//
//   mpirun -np 2 --bind-to none build/bin/dtrain_async_bench --dir /tmp/async-bench
//
// Flags (defaults in brackets): --part all|stall|train [all], --dir scratch, emptied of
// what the run writes [/tmp/dtrain-async-bench], --repeats rounds of each part [3],
// --layers [12] --embd [768] --heads [12] --vocab [2048] --ctx [128] (gpt shape of the
// stall part), --drop-caches 0|1 drop the page cache before each timed step of the
// stall part [1], --hidden mlp hidden widths, comma-separated [4096,4096], --batch
// samples per rank per step [32], --iters steps per training run [70], --period
// checkpoint period [20], --warmup untimed steps [3], --json FILE append the result
// [none].
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/utils.h>

#include "bench/bench_util.h"
#include "checkpoint/checkpointer.h"
#include "checkpoint/module_state.h"
#include "runtime/base/error.h"
#include "runtime/base/logging.h"
#include "runtime/dist/mpi_communicator.h"
#include "runtime/dist/mpi_runtime.h"

namespace dtrain::bench {
namespace {

namespace stdfs = std::filesystem;
using checkpoint::Checkpointer;

double max_over_ranks(dist::Communicator& comm, double x) {
  return comm.all_reduce_double(x, dist::ReduceOp::kMax);
}

// Deletes `dir` (checkpoints written there) once every rank is done with it.
void remove_on_root(dist::Communicator& comm, const std::string& dir) {
  comm.barrier();
  if (comm.rank() == 0) {
    std::error_code ec;
    stdfs::remove_all(dir, ec);
  }
  comm.barrier();
}

// "ok" when `ratio` (as printed, 2 decimals) is at most `goal`.
const char* at_most(double ratio, double goal) {
  return std::round(ratio * 100.0) / 100.0 <= goal ? "ok" : "BELOW";
}

std::vector<int64_t> parse_int_list(const std::string& flag, const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    try {
      size_t pos = 0;
      const int64_t v = std::stoll(item, &pos);
      if (pos == item.size() && v > 0) {
        out.push_back(v);
        continue;
      }
    } catch (const std::exception&) {
    }
    throw ConfigError(fmt::format("--{}: expected positive integers separated by commas, got '{}'",
                                  flag, text));
  }
  DTRAIN_CHECK_T(ConfigError, !out.empty(), "--{}: empty list", flag);
  return out;
}

// Stall of save_async vs memcpy and a synchronous save, for the gpt + AdamW state.
nlohmann::json stall_part(dist::Communicator& comm, const models::GptOptions& g,
                          const std::string& dir, int64_t repeats, bool drop) {
  const int rank = comm.rank(), world = comm.size();
  GptTrainingState state = make_gpt_training_state(g);
  checkpoint::RngState rng;
  const std::string save_dir = dir + "/stall";
  Checkpointer ckpt(state.model, save_dir, comm,
                    {{"optimizer", {state.opt_state.get(), checkpoint::Scope::kReplicated}},
                     {"rng", {&rng, checkpoint::Scope::kPerRank}}});
  // What a snapshot copies: every replicated tensor and this rank's RNG state.
  NamedTensors tensors = replicated_tensors(*state.model_state, *state.opt_state);
  for (const auto& [k, v] : rng.state_dict()) {
    if (auto t = std::get_if<at::Tensor>(&v)) tensors.emplace_back("rng/" + k, *t);
  }
  const int64_t bytes = total_bytes(tensors);

  bool dropped = false;
  // Every timed step starts with the page cache dropped (when permitted) and the ranks
  // released together.
  auto settle = [&] {
    if (drop && rank == 0) dropped = drop_page_cache();
    comm.barrier();
  };
  at::NoGradGuard no_grad;
  // memcpy into fresh buffers (at::empty + copy_, what a first snapshot does); the
  // buffers are then kept as the preallocated ones.
  std::vector<at::Tensor> buffers;
  settle();
  Stopwatch sw;
  for (const auto& [n, t] : tensors) {
    buffers.push_back(at::empty(t.sizes(), t.options()));
    buffers.back().copy_(t.detach());
  }
  const double memcpy_fresh = max_over_ranks(comm, sw.seconds());

  // First asynchronous save: the snapshot's buffers are new.
  settle();
  sw.reset();
  ckpt.save_async("async_first");
  const double call_first = max_over_ranks(comm, sw.seconds());
  const double stall_first = max_over_ranks(comm, ckpt.last_save_stall_seconds());
  ckpt.finish_async();
  const double total_first = max_over_ranks(comm, ckpt.last_save_seconds());
  remove_on_root(comm, save_dir);

  std::vector<double> memcpy_s, stall_s, call_s, async_total_s, async_write_s;
  std::vector<double> sync_s, sync_write_s, sync_coord_s, vs_memcpy, vs_sync;
  for (int64_t r = 0; r < repeats; ++r) {
    for (int k = 0; k < 3; ++k) {
      const int which = static_cast<int>((k + r) % 3);  // 0 memcpy, 1 save_async, 2 save
      settle();
      if (which == 0) {
        sw.reset();
        for (size_t i = 0; i < tensors.size(); ++i) buffers[i].copy_(tensors[i].second.detach());
        if (std::getenv("ABENCH_DEBUG")) fmt::print(stderr, "DEBUG rank {} memcpy {:.3f}\n", rank, sw.seconds());
        memcpy_s.push_back(max_over_ranks(comm, sw.seconds()));
      } else if (which == 1) {
        sw.reset();
        ckpt.save_async(fmt::format("async_{}", r));
        if (std::getenv("ABENCH_DEBUG")) fmt::print(stderr, "DEBUG rank {} call {:.3f} stall {:.3f}\n", rank, sw.seconds(), ckpt.last_save_stall_seconds());
        call_s.push_back(max_over_ranks(comm, sw.seconds()));
        stall_s.push_back(max_over_ranks(comm, ckpt.last_save_stall_seconds()));
        ckpt.finish_async();
        async_total_s.push_back(max_over_ranks(comm, ckpt.last_save_seconds()));
        async_write_s.push_back(ckpt.last_save_max_write_seconds());
        remove_on_root(comm, save_dir);
      } else {
        ckpt.save(fmt::format("sync_{}", r));
        sync_s.push_back(max_over_ranks(comm, ckpt.last_save_stall_seconds()));
        sync_write_s.push_back(ckpt.last_save_max_write_seconds());
        sync_coord_s.push_back(max_over_ranks(comm, ckpt.last_save_seconds()) - sync_write_s.back());
        remove_on_root(comm, save_dir);
      }
    }
    vs_memcpy.push_back(stall_s.back() / memcpy_s.back());
    vs_sync.push_back(stall_s.back() / sync_s.back());
  }
  DTRAIN_CHECK(ckpt.commits() == 2 * repeats + 1, "rank {}: {} checkpoints committed, expected {}",
               rank, ckpt.commits(), 2 * repeats + 1);

  const double stall = median(stall_s), mc = median(memcpy_s), sync = median(sync_s);
  const double r_memcpy = median(vs_memcpy), r_sync = median(vs_sync);
  if (rank == 0) {
    fmt::print(
        "async checkpoint stall | gpt ({} layers, embd {}, vocab {}): {:.1f} M params, {} of "
        "state (params + AdamW + RNG), {} tensors | {} rank(s), {} rounds\n"
        "  page cache dropped before each step: {}\n"
        "  {:46s} {:>9s}   {:>10s}  {}\n"
        "  {:46s} {:8.3f} s                (runs: {:.3f})\n"
        "  {:46s} {:8.3f} s                (once)\n"
        "  {:46s} {:8.3f} s                (runs: {:.3f}; slowest shard write {:.3f})\n"
        "  {:46s} {:8.3f} s                (call {:.3f} s; save committed after {:.3f} s)\n"
        "  {:46s} {:8.3f} s                (runs: {:.3f}; call {:.3f} s; committed after "
        "{:.3f} s, slowest write {:.3f} s)\n"
        "  {:46s} {:8.2f}     {:>10s}  {}  (per round: {:.2f})\n"
        "  {:46s} {:8.2f}     {:>10s}  {}  (per round: {:.2f})\n"
        "  {:46s} {:8.2f}     {:>10s}  (info: page faults of fresh buffers)\n"
        "  {:46s} {:8.3f} s   {:>10s}  {}  (runs: {:.3f}; the issue's bar is at 4 ranks)\n",
        g.n_layer, g.n_embd, g.vocab_size, state.params / 1e6, format_bytes(bytes), tensors.size(),
        world, repeats, !drop ? "no (--drop-caches 0)" : dropped ? "yes" : "NO (not permitted)",
        "figure", "value", "goal", "",
        "memcpy of the state (preallocated buffers)", mc, fmt::join(memcpy_s, ", "),
        "memcpy into fresh buffers", memcpy_fresh,
        "synchronous save (stall = whole save)", sync, fmt::join(sync_s, ", "),
        fmt::join(sync_write_s, ", "),
        "save_async stall, first save (fresh buffers)", stall_first, call_first, total_first,
        "save_async stall, steady state (reused)", stall, fmt::join(stall_s, ", "),
        fmt::join(call_s, ", "), fmt::join(async_total_s, ", "), fmt::join(async_write_s, ", "),
        "stall / memcpy", r_memcpy, "<= 1.5", at_most(r_memcpy, 1.5), fmt::join(vs_memcpy, ", "),
        "stall / synchronous save", r_sync, "<= 0.1", at_most(r_sync, 0.1), fmt::join(vs_sync, ", "),
        "first stall / memcpy into fresh buffers", stall_first / memcpy_fresh, "",
        "sync save coordination (save - slowest write)", median(sync_coord_s), "< 0.020 s",
        median(sync_coord_s) < 0.020 ? "ok" : "BELOW", fmt::join(sync_coord_s, ", "));
    std::fflush(stdout);
  }
  return {{"params", state.params},
          {"bytes", bytes},
          {"stall_repeats", repeats},
          {"cache_dropped", dropped},
          {"memcpy_s", mc},
          {"memcpy_runs_s", memcpy_s},
          {"memcpy_fresh_s", memcpy_fresh},
          {"sync_save_s", sync},
          {"sync_save_runs_s", sync_s},
          {"sync_write_runs_s", sync_write_s},
          {"sync_coord_s", median(sync_coord_s)},
          {"sync_coord_runs_s", sync_coord_s},
          {"stall_first_s", stall_first},
          {"stall_first_call_s", call_first},
          {"async_first_total_s", total_first},
          {"stall_s", stall},
          {"stall_runs_s", stall_s},
          {"stall_call_runs_s", call_s},
          {"async_total_runs_s", async_total_s},
          {"async_write_runs_s", async_write_s},
          {"stall_vs_memcpy", r_memcpy},
          {"stall_vs_sync", r_sync}};
}

struct TrainOptions {
  std::vector<int64_t> hidden;
  int64_t batch = 32, iters = 70, period = 20, warmup = 3, repeats = 3;
};

// Total training time with periodic synchronous / asynchronous checkpoints vs none.
nlohmann::json train_part(dist::Communicator& comm, const TrainOptions& o, const std::string& dir) {
  const int rank = comm.rank(), world = comm.size();
  torch::manual_seed(0);
  BenchModel m = make_bench_model("mlp", o.hidden);
  BenchTrainer bt = make_bench_trainer(m, o.batch, comm);
  for (int64_t i = 0; i < o.warmup; ++i) bt.trainer->run_step();  // also makes the momentum
  optim::OptimizerState opt_state(*bt.optimizer, m.model->named_parameters());
  checkpoint::RngState rng;
  checkpoint::ModuleState model_state(m.model);
  const int64_t bytes = total_bytes(replicated_tensors(model_state, opt_state));
  int64_t params = 0;
  for (const auto& p : m.model->parameters()) params += p.numel();

  const char* kNames[] = {"none", "sync", "async"};
  std::vector<std::unique_ptr<Checkpointer>> ckpts(3);
  for (int v = 1; v < 3; ++v) {
    ckpts[v] = std::make_unique<Checkpointer>(
        m.model, fmt::format("{}/train-{}", dir, kNames[v]), comm,
        std::map<std::string, checkpoint::Checkpointable>{
            {"optimizer", {&opt_state, checkpoint::Scope::kReplicated}},
            {"rng", {&rng, checkpoint::Scope::kPerRank}}});
  }
  // One untimed save each, so that the timed runs see what a long job does: the async
  // snapshot's buffers exist already (the first save's fresh buffers are in the stall part).
  ckpts[1]->save("warmup");
  ckpts[2]->save_async("warmup");
  ckpts[2]->finish_async();
  for (int v = 1; v < 3; ++v) remove_on_root(comm, ckpts[v]->save_dir());

  const std::string load_before = load_average();
  std::vector<std::vector<double>> total(3), save_calls(3), finish_s(3);
  std::vector<double> async_ratio, sync_ratio;
  for (int64_t r = 0; r < o.repeats; ++r) {
    double t[3] = {0, 0, 0};
    for (int k = 0; k < 3; ++k) {
      const int v = static_cast<int>((k + r) % 3);
      Checkpointer* c = ckpts[v].get();
      std::optional<checkpoint::PeriodicCheckpointer> periodic;
      if (c != nullptr) {
        periodic.emplace(*c, o.period, std::nullopt, /*max_to_keep=*/0, "model",
                         /*async=*/v == 2);
      }
      const int64_t commits0 = c ? c->commits() : 0;
      std::vector<double> calls;  // periodic.step() of the saving iterations (the stall)
      double fin = 0.0;
      comm.barrier();
      Stopwatch sw;
      for (int64_t i = 0; i < o.iters; ++i) {
        bt.trainer->run_step();
        if (periodic) {
          Stopwatch sc;
          periodic->step(i);
          if ((i + 1) % o.period == 0) calls.push_back(sc.seconds());
        }
      }
      if (periodic) {
        Stopwatch sf;
        periodic->finish();
        fin = sf.seconds();
      }
      comm.barrier();
      t[v] = max_over_ranks(comm, sw.seconds());
      total[v].push_back(t[v]);
      for (double& x : calls) x = max_over_ranks(comm, x);
      save_calls[v].insert(save_calls[v].end(), calls.begin(), calls.end());
      finish_s[v].push_back(max_over_ranks(comm, fin));
      if (c != nullptr) {
        DTRAIN_CHECK(c->commits() - commits0 == o.iters / o.period,
                     "rank {}: {} checkpoints committed in a {} run, expected {}", rank,
                     c->commits() - commits0, kNames[v], o.iters / o.period);
        remove_on_root(comm, c->save_dir());
      }
    }
    async_ratio.push_back(t[2] / t[0]);
    sync_ratio.push_back(t[1] / t[0]);
  }
  const std::string load_after = load_average();

  const double ra = median(async_ratio), rs = median(sync_ratio);
  const double none_s = median(total[0]);
  const int64_t saves = o.iters / o.period;
  auto stall_share = [&](int v) {  // save calls per run, as a share of the run without
    double sum = 0.0;
    for (double x : save_calls[v]) sum += x;
    return sum / static_cast<double>(o.repeats) / none_s;
  };
  if (rank == 0) {
    std::string shape = "784";
    for (int64_t h : o.hidden) shape += fmt::format("-{}", h);
    shape += "-10";
    fmt::print(
        "async checkpoint training overhead | mlp {} ({:.1f} M params; checkpoint of params + "
        "momentum {}), SGD, batch {}/rank | {} rank(s), {} iterations per run, a checkpoint "
        "every {} ({} per run), {} rounds | load average {} -> {}\n"
        "  {:46s} {:>9s}   {:>10s}\n"
        "  {:46s} {:8.2f} s                (runs: {:.2f}; {:.4f} s/step)\n"
        "  {:46s} {:8.2f} s                (runs: {:.2f}; save calls {:.3f} s median, "
        "{:.1f}% of the run)\n"
        "  {:46s} {:8.2f} s                (runs: {:.2f}; save calls {:.3f} s median, "
        "{:.1f}% of the run; finish() {:.3f} s)\n"
        "  {:46s} {:8.3f}     {:>10s}  {}  (per round: {:.3f})\n"
        "  {:46s} {:8.3f}     {:>10s}  (info; per round: {:.3f})\n",
        shape, params / 1e6, format_bytes(bytes), o.batch, world, o.iters, o.period, saves,
        o.repeats, load_before, load_after, "figure", "value", "goal",
        "training, no checkpoints", none_s, fmt::join(total[0], ", "),
        none_s / static_cast<double>(o.iters),
        "training, synchronous checkpoints", median(total[1]), fmt::join(total[1], ", "),
        median(save_calls[1]), 100.0 * stall_share(1),
        "training, asynchronous checkpoints", median(total[2]), fmt::join(total[2], ", "),
        median(save_calls[2]), 100.0 * stall_share(2), median(finish_s[2]),
        "async / no checkpoints", ra, "<= 1.05", at_most(ra, 1.05), fmt::join(async_ratio, ", "),
        "sync / no checkpoints", rs, "", fmt::join(sync_ratio, ", "));
    std::fflush(stdout);
  }
  return {{"train_params", params},
          {"train_bytes", bytes},
          {"train_hidden", o.hidden},
          {"train_batch", o.batch},
          {"train_iters", o.iters},
          {"train_period", o.period},
          {"train_repeats", o.repeats},
          {"train_none_s", none_s},
          {"train_sync_s", median(total[1])},
          {"train_async_s", median(total[2])},
          {"train_none_runs_s", total[0]},
          {"train_sync_runs_s", total[1]},
          {"train_async_runs_s", total[2]},
          {"train_sync_save_calls_s", save_calls[1]},
          {"train_async_save_calls_s", save_calls[2]},
          {"train_async_finish_runs_s", finish_s[2]},
          {"train_async_vs_none", ra},
          {"train_sync_vs_none", rs},
          {"train_load_before", load_before},
          {"train_load_after", load_after}};
}

int run(int argc, char** argv) {
  dist::MpiCommunicator comm;
  const int rank = comm.rank(), world = comm.size();
  log::init(rank, world);

  Flags flags(argc, argv);
  const std::string part = flags.get("part", "all");
  const std::string dir = flags.get("dir", "/tmp/dtrain-async-bench");
  const int64_t repeats = flags.get_int("repeats", 3);
  const models::GptOptions g = gpt_options_from_flags(flags);
  const bool drop = flags.get_int("drop-caches", 1) != 0;
  TrainOptions o;
  o.hidden = parse_int_list("hidden", flags.get("hidden", "4096,4096"));
  o.batch = flags.get_int("batch", 32);
  o.iters = flags.get_int("iters", 70);
  o.period = flags.get_int("period", 20);
  o.warmup = flags.get_int("warmup", 3);
  o.repeats = repeats;
  const std::string json_path = flags.get("json", "");
  flags.check_all_used();
  DTRAIN_CHECK_T(ConfigError, part == "all" || part == "stall" || part == "train",
                 "--part: expected all, stall or train, got '{}'", part);
  DTRAIN_CHECK_T(ConfigError, repeats > 0 && o.batch > 0 && o.period > 0 && o.warmup >= 0,
                 "--repeats, --batch and --period must be positive, --warmup >= 0");
  DTRAIN_CHECK_T(ConfigError, o.iters >= o.period,
                 "--iters ({}) must be at least --period ({})", o.iters, o.period);

  at::set_num_threads(1);
  if (rank == 0) stdfs::create_directories(dir);
  comm.barrier();
  Stopwatch all;
  nlohmann::json j = {{"bench", "async"}, {"impl", "dtrain"}, {"world", world},
                      {"load_before", load_average()}};
  if (part != "train") j.update(stall_part(comm, g, dir, repeats, drop));
  if (part != "stall") j.update(train_part(comm, o, dir));
  j["seconds"] = all.seconds();
  j["load_after"] = load_average();
  if (rank == 0) {
    fmt::print("async bench: {:.0f} s; load average {} -> {}\n", all.seconds(),
               j["load_before"].get<std::string>(), j["load_after"].get<std::string>());
    std::fflush(stdout);
    append_json_line(json_path, j);
  }
  return 0;
}

}  // namespace
}  // namespace dtrain::bench

int main(int argc, char** argv) {
  dtrain::dist::MpiRuntime mpi(&argc, &argv);
  try {
    return dtrain::bench::run(argc, argv);
  } catch (const std::exception& e) {
    // A rank that fails may leave the others inside a collective: abort them all.
    std::cerr << "dtrain_async_bench: " << e.what() << "\n";
    dtrain::dist::MpiRuntime::abort(1);
  }
}
