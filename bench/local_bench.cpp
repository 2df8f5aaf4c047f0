// The node-local checkpoint tier (CHECKPOINT.LOCAL, issue 15), on every rank at once:
//  - training: the total time of a training run (SimpleTrainer + DataParallel + SGD, as
//    dtrain_train_bench) with a local snapshot after every step and after every 5th,
//    against the same run without, back to back in rotating order within each round.
//    The physical bound is printed beside it: a memcpy of the rank's shard (its rows of
//    the parameters and momentum, what a snapshot copies) once per snapshot, measured in
//    the same run;
//  - stall: the time snapshot_local keeps the caller against that memcpy; and the stall
//    of a fresh run's first snapshot (it creates its shard file) against those of a
//    resumed run's first LOCAL.KEEP + 1 (they take over the previous files);
//  - resume: resume_or_load from the local tier against the same state from the
//    persistent tier (page cache dropped first when permitted: a cold load).
//
//   mpirun -np 2 --bind-to none build/bin/dtrain_local_bench --dir /tmp/local-bench
//
// Flags (defaults in brackets): --model mlp|resnet18 [mlp], --hidden mlp widths [512,512],
// --batch per rank [32], --iters steps per run [60], --warmup [3], --rounds [4],
// --dir scratch for the persistent tier [/tmp/dtrain-local-bench], --local-dir the
// tier's root [/dev/shm/dtrain-local-bench-{user}], --write auto|mapped|hdf5
// (CHECKPOINT.LOCAL.WRITE) [auto], --json FILE append the result [none]. glibc malloc is
// tuned as `dtrain train` tunes it (engine/malloc_tuning.h; DTRAIN_MALLOC_TUNING=0: off).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/utils.h>

#include "bench/bench_util.h"
#include "checkpoint/checkpointer.h"
#include "checkpoint/module_state.h"
#include "checkpoint/shard_plan.h"
#include "runtime/engine/malloc_tuning.h"
#include "runtime/base/error.h"
#include "runtime/base/logging.h"
#include "runtime/dist/mpi_communicator.h"

namespace dtrain::bench {
namespace {

namespace stdfs = std::filesystem;
using checkpoint::Checkpointer;

const char* at_most(double ratio, double goal) {
  return std::round(ratio * 1000.0) / 1000.0 <= goal ? "ok" : "BELOW";
}

void print_row(const std::string& figure, const std::string& value, const std::string& goal,
               const std::string& verdict, const std::string& note) {
  fmt::print("  {:46s} {:>10s}  {:>10s} {:5s}{}\n", figure, value, goal, verdict,
             note.empty() ? "" : "  (" + note + ")");
}

std::vector<int64_t> int_list(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoll(item));
  DTRAIN_CHECK_T(ConfigError, !out.empty(), "--hidden: expected widths separated by commas");
  return out;
}

struct Options {
  std::string model = "mlp";
  std::vector<int64_t> hidden;
  int64_t batch = 32, iters = 60, warmup = 3, rounds = 4;
  std::string dir, local_dir, write;
};

int run(int argc, char** argv) {
  const engine::MallocTuning malloc_tuning = engine::tune_malloc();
  dist::MpiCommunicator comm;
  const int rank = comm.rank(), world = comm.size();
  log::init(rank, world);
  Flags flags(argc, argv);
  Options o;
  o.model = flags.get("model", "mlp");
  o.hidden = int_list(flags.get("hidden", "512,512"));
  o.batch = flags.get_int("batch", 32);
  o.iters = flags.get_int("iters", 60);
  o.warmup = flags.get_int("warmup", 3);
  o.rounds = flags.get_int("rounds", 4);
  o.dir = flags.get("dir", "/tmp/dtrain-local-bench");
  o.local_dir = flags.get("local-dir", "/dev/shm/dtrain-local-bench-{user}");
  o.write = flags.get("write", "auto");
  const std::string json_path = flags.get("json", "");
  flags.check_all_used();
  DTRAIN_CHECK_T(ConfigError, o.iters >= 5 && o.rounds > 0 && o.batch > 0,
                 "--iters must be >= 5, --rounds and --batch positive");
  at::set_num_threads(1);

  torch::manual_seed(0);
  BenchModel m = make_bench_model(o.model, o.hidden);
  BenchTrainer bt = make_bench_trainer(m, o.batch, comm);
  for (int64_t i = 0; i < o.warmup; ++i) bt.trainer->run_step();  // also makes the momentum
  optim::OptimizerState opt_state(*bt.optimizer, m.model->named_parameters());
  checkpoint::RngState rng;
  checkpoint::CheckpointerOptions copts;
  copts.config_yaml = "bench: local\n";
  checkpoint::LocalTierOptions local;
  local.period = 1;
  local.dir = o.local_dir;
  local.keep = 2;
  local.write = checkpoint::parse_local_write(o.write);
  copts.local = local;
  const std::map<std::string, checkpoint::Checkpointable> checkpointables{
      {"optimizer", {&opt_state, checkpoint::Scope::kReplicated}}, {"rng", {&rng, checkpoint::Scope::kPerRank}}};
  // Released before the resumes below: each Checkpointer's local tier holds the job's
  // lock on the node (LocalTier::lock_job), which a second one in this process would wait for.
  auto owner = std::make_unique<Checkpointer>(m.model, o.dir, comm, checkpointables, copts);
  Checkpointer& ckpt = *owner;
  ckpt.resume_or_load("", /*resume=*/false);

  // The memcpy bound: this rank's shard rows into reused host buffers, as a snapshot does.
  checkpoint::CollectedState live;
  checkpoint::ModuleState ms(m.model);
  for (auto& [k, v] : ms.state_dict()) live.replicated.emplace_back("model/" + k, std::get<at::Tensor>(v));
  for (auto& [k, v] : opt_state.state_dict()) {
    if (auto t = std::get_if<at::Tensor>(&v)) live.replicated.emplace_back("optimizer/" + k, *t);
  }
  const auto plan = checkpoint::plan_shards(live.replicated_meta(), world);
  int64_t shard_bytes = 0, state_bytes = 0;
  for (const auto& p : plan) shard_bytes += p.shard == rank ? p.bytes : 0;
  for (const auto& [n, t] : live.replicated) state_bytes += t.numel() * static_cast<int64_t>(t.element_size());
  checkpoint::CollectedState buffers = checkpoint::snapshot(live, nullptr, &plan, rank);
  std::vector<double> memcpy_s;
  for (int i = 0; i < 20; ++i) {
    Stopwatch sw;
    buffers = checkpoint::snapshot(live, &buffers, &plan, rank);
    memcpy_s.push_back(sw.seconds());
  }
  const double memcpy = max_over_ranks(comm, median(memcpy_s));

  // A fresh run's first snapshot (mapped): with LOCAL.PERIOD 1 it creates its shard file
  // in its stall; with a longer period (5 here) LocalSnapshotHook offers the state's
  // layout at the steps before (Checkpointer::prepare_local) and the file is made during
  // them (a shorter gap than the creation: the snapshot waits for the rest).
  // Each in a tier of its own (another OUTPUT_DIR), removed after.
  auto first_stall_of = [&](bool offered) {
    Checkpointer c(m.model, o.dir + (offered ? "-first-ahead" : "-first"), comm, checkpointables, copts);
    c.resume_or_load("", /*resume=*/false);
    if (offered) c.prepare_local(0);
    const int64_t before = offered ? 4 : 1;  // LOCAL.PERIOD 5: four steps before it
    for (int64_t i = 0; i < before; ++i) bt.trainer->run_step();
    c.snapshot_local(before);
    const double s = max_over_ranks(comm, c.local_tier()->last_stall_seconds());
    c.end_local();
    return s;
  };
  const double first_stall = first_stall_of(false), first_stall_ahead = first_stall_of(true);

  // Training: none, every 5, every step. One untimed snapshot first (its buffers).
  ckpt.snapshot_local(0);
  ckpt.finish_local();
  const int64_t periods[3] = {0, 5, 1};
  std::vector<std::vector<double>> total(3);
  std::vector<double> stalls;
  std::vector<double> ratio5, ratio1;
  for (int64_t r = 0; r < o.rounds; ++r) {
    double t[3] = {0, 0, 0};
    for (int k = 0; k < 3; ++k) {
      const int v = static_cast<int>((k + r) % 3);
      const int64_t period = periods[v];
      comm.barrier();
      Stopwatch sw;
      for (int64_t i = 0; i < o.iters; ++i) {
        bt.trainer->run_step();
        if (period == 0) continue;
        if ((i + 1) % period == 0) {  // what LocalSnapshotHook::after_step does
          ckpt.snapshot_local(i);
          stalls.push_back(ckpt.local_tier()->last_stall_seconds());
        } else if (i % period == 0) {
          ckpt.finish_local();
          ckpt.prepare_local(i);  // nothing after the first snapshot
        } else {
          ckpt.poll_local();
          ckpt.prepare_local(i);
        }
      }
      if (period != 0) ckpt.finish_local();
      comm.barrier();
      t[v] = max_over_ranks(comm, sw.seconds());
      total[v].push_back(t[v]);
    }
    ratio5.push_back(t[1] / t[0]);
    ratio1.push_back(t[2] / t[0]);
  }
  DTRAIN_CHECK(ckpt.local_tier()->failures() == 0, "rank {}: {} local snapshots failed", rank,
               ckpt.local_tier()->failures());
  const double step = median(total[0]) / static_cast<double>(o.iters);
  const double stall = max_over_ranks(comm, median(stalls));
  const double r5 = median(ratio5), r1 = median(ratio1);
  // The bound: a memcpy of the shard per snapshot added to each step.
  const double bound1 = (step + memcpy) / step, bound5 = (step + memcpy / 5) / step;

  // Resume: the last snapshot (local) against the same state saved persistently.
  ckpt.snapshot_local(o.iters);
  ckpt.finish_local();
  ckpt.save("persistent", {{"iteration", o.iters}});
  const bool mapped = ckpt.local_tier()->mapped();
  owner.reset();  // keeps its snapshots
  auto time_resume = [&](bool from_local) {
    std::vector<double> s;
    for (int i = 0; i < 3; ++i) {
      if (!from_local && rank == 0) drop_page_cache();
      comm.barrier();
      checkpoint::CheckpointerOptions ro = copts;
      if (!from_local) ro.local.reset();
      Checkpointer c(m.model, o.dir, comm, checkpointables, ro);
      Stopwatch sw;
      c.resume_or_load("", /*resume=*/true);
      s.push_back(max_over_ranks(comm, sw.seconds()));
      DTRAIN_CHECK(c.loaded_from_local() == from_local, "the resume did not use the {} tier",
                   from_local ? "local" : "persistent");
    }
    return s;
  };
  const auto local_s = time_resume(true), persistent_s = time_resume(false);
  // A resumed run's first KEEP + 1 snapshots take over the previous process's shard
  // files (SlabPool::take), where a fresh run creates its first one. With LOCAL.PERIOD 1
  // in the stall; with LOCAL.PERIOD 5 during the steps before (Checkpointer::prepare_local
  // after each commit, as LocalSnapshotHook calls it). Each resumes from the last.
  struct Resumed {
    std::vector<double> stalls;
    int64_t adopted = 0, adopted_ahead = 0, created = 0;
  };
  int64_t resumed_at = o.iters;
  auto resumed_run = [&](int64_t period, bool last) {
    Resumed r;
    Checkpointer c(m.model, o.dir, comm, checkpointables, copts);
    c.resume_or_load("", /*resume=*/true);
    for (int64_t i = 1; i <= local.keep + 1; ++i) {
      for (int64_t k = 0; k < period; ++k) {
        bt.trainer->run_step();
        if (k + 1 < period) c.prepare_local(resumed_at);
      }
      resumed_at += period;
      c.snapshot_local(resumed_at);
      r.stalls.push_back(max_over_ranks(comm, c.local_tier()->last_stall_seconds()));
      c.finish_local();
    }
    r.adopted = c.local_tier()->shard_files_adopted();
    r.adopted_ahead = c.local_tier()->shard_files_adopted_ahead();
    r.created = c.local_tier()->shard_files_created_in_stall() + c.local_tier()->shard_files_created_ahead();
    if (last) c.end_local();  // removes the tier, as a finished run does
    return r;
  };
  const Resumed resumed1 = resumed_run(1, /*last=*/false), resumed5 = resumed_run(5, /*last=*/true);
  comm.barrier();
  if (rank == 0) stdfs::remove_all(o.dir);

  if (rank == 0) {
    fmt::print("local tier | {} {} ({} of state; this rank's shard {}), SGD, batch {}/rank | {} rank(s), "
               "{} iterations per run, {} rounds, tier in {} (LOCAL.WRITE {}, {}); malloc: {}\n",
               o.model, o.model == "mlp" ? fmt::format("{}", fmt::join(o.hidden, "-")) : "",
               format_bytes(state_bytes), format_bytes(shard_bytes), o.batch, world, o.iters, o.rounds,
               o.local_dir, o.write, mapped ? "mapped" : "hdf5", malloc_tuning.why);
    print_row("figure", "value", "goal", "", "");
    print_row("training step, no snapshots", fmt::format("{:.4f} s", step), "", "",
              fmt::format("runs: {:.2f} s", fmt::join(total[0], ", ")));
    print_row("memcpy of the rank's shard", fmt::format("{:.4f} s", memcpy), "", "",
              fmt::format("{:.1f}% of a step", 100.0 * memcpy / step));
    print_row("every 5 iterations / none", fmt::format("{:.3f}", r5), "<= 1.02", at_most(r5, 1.02),
              fmt::format("memcpy bound {:.3f}; per round {:.3f}", bound5, fmt::join(ratio5, ", ")));
    const bool memcpy_heavy = memcpy > 0.03 * step;
    const double goal1 = memcpy_heavy ? 1.0 + 1.5 * (bound1 - 1.0) : 1.05;
    print_row("every iteration / none", fmt::format("{:.3f}", r1), fmt::format("<= {:.3f}", goal1),
              at_most(r1, goal1),
              fmt::format("memcpy bound {:.3f}{}; per round {:.3f}", bound1,
                          memcpy_heavy ? " (memcpy > 3% of a step: goal 1.5x the bound's overhead)" : "",
                          fmt::join(ratio1, ", ")));
    print_row("stall per snapshot / memcpy", fmt::format("{:.2f}", stall / memcpy), "<= 1.5",
              at_most(stall / memcpy, 1.5), fmt::format("stall {:.4f} s", stall));
    print_row("first snapshot of a fresh run, LOCAL.PERIOD 1", fmt::format("{:.4f} s", first_stall), "", "",
              mapped ? "creates its shard file in the stall" : "");
    print_row("first snapshot of a fresh run, LOCAL.PERIOD 5", fmt::format("{:.4f} s", first_stall_ahead), "",
              "", mapped ? "its shard file made during the 4 steps before" : "");
    for (const auto& [period, r] : {std::pair{1, &resumed1}, std::pair{5, &resumed5}}) {
      print_row(fmt::format("first snapshots after a resume, LOCAL.PERIOD {}", period),
                fmt::format("{:.4f} s", median(r->stalls)), "", "",
                fmt::format("stalls {:.4f} s; rank {}: {} file(s) taken over ({} ahead), {} created",
                            fmt::join(r->stalls, ", "), rank, r->adopted, r->adopted_ahead, r->created));
    }
    print_row("resume from the local tier", fmt::format("{:.3f} s", median(local_s)), "", "",
              fmt::format("runs: {:.3f}", fmt::join(local_s, ", ")));
    print_row("resume from the persistent tier (cold)", fmt::format("{:.3f} s", median(persistent_s)), "",
              "", fmt::format("runs: {:.3f}", fmt::join(persistent_s, ", ")));
    std::fflush(stdout);
    append_json_line(json_path, {{"bench", "local"},
                                 {"model", o.model},
                                 {"world", world},
                                 {"state_bytes", state_bytes},
                                 {"shard_bytes", shard_bytes},
                                 {"step_s", step},
                                 {"memcpy_s", memcpy},
                                 {"every5_vs_none", r5},
                                 {"every1_vs_none", r1},
                                 {"bound5", bound5},
                                 {"bound1", bound1},
                                 {"stall_s", stall},
                                 {"stall_vs_memcpy", stall / memcpy},
                                 {"first_stall_s", first_stall},
                                 {"first_stall_ahead_s", first_stall_ahead},
                                 {"resumed_first_stalls_s", resumed1.stalls},
                                 {"resumed_first_stalls_period5_s", resumed5.stalls},
                                 {"resume_local_s", median(local_s)},
                                 {"resume_persistent_s", median(persistent_s)}});
  }
  return 0;
}

}  // namespace
}  // namespace dtrain::bench

int main(int argc, char** argv) {
  return dtrain::bench::mpi_bench_main(argc, argv, "dtrain_local_bench", dtrain::bench::run);
}
