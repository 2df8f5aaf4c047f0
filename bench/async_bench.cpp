// Asynchronous checkpoints (issue 6). Two parts, both on every rank at once:
//  - stall: the time Checkpointer::save_async keeps the caller, for the full training
//    state of dtrain_ckpt_bench (gpt parameters + AdamW state), against a plain memcpy of
//    the same tensors into preallocated host buffers (at::Tensor::copy_) and against a
//    synchronous Checkpointer::save, in rotating order within each round;
//  - training: the total time of a training run (SimpleTrainer + DataParallel + SGD on
//    dtrain_train_bench's mlp) with a PeriodicCheckpointer every --period iterations,
//    synchronous and asynchronous, against the same run without checkpoints, back to
//    back in rotating order within each round.
//
//   mpirun -np 2 --bind-to none build/bin/dtrain_async_bench --dir /tmp/async-bench
//
// Flags (defaults in brackets): --part all|stall|train [all], --dir scratch, emptied of
// what the run writes [/tmp/dtrain-async-bench], --repeats rounds of the stall part [3],
// --layers [12] --embd [768] --heads [12] --vocab [2048] --ctx [128] (gpt shape of the
// stall part), --drop-caches 0|1 drop the page cache before each timed step of the
// stall part [1], --rounds rounds of the training part [4], --hidden mlp hidden widths,
// comma-separated [2048,2048], --batch samples per rank per step [32], --iters steps per
// training run [70], --period checkpoint period [20], --warmup untimed steps [3],
// --json FILE append the result [none].
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/utils.h>

#include "bench/bench_util.h"
#include "checkpoint/checkpointer.h"
#include "checkpoint/module_state.h"
#include "checkpoint/shard_plan.h"
#include "runtime/base/error.h"
#include "runtime/base/logging.h"
#include "runtime/dist/mpi_communicator.h"

namespace dtrain::bench {
namespace {

namespace stdfs = std::filesystem;
using checkpoint::Checkpointer;

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

// One line of a table: figure, value, goal, verdict, and a note in brackets.
void print_row(const std::string& figure, const std::string& value, const std::string& goal,
               const std::string& verdict, const std::string& note) {
  fmt::print("  {:46s} {:>10s}  {:>10s} {:5s}{}\n", figure, value, goal, verdict,
             note.empty() ? "" : "  (" + note + ")");
}

std::string seconds(double s) { return fmt::format("{:.3f} s", s); }

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
  // The pieces of the replicated tensors this rank writes (Checkpointer's shard plan)
  // and its per-rank tensors: what a snapshot of this rank's shard alone would copy.
  std::vector<checkpoint::TensorMeta> meta;
  for (const auto& [n, t] : tensors) {
    if (n.rfind("rng/", 0) != 0) meta.push_back({n, t.scalar_type(), t.sizes().vec()});
  }
  std::vector<checkpoint::Piece> own;
  for (const auto& p : checkpoint::plan_shards(meta, world)) {
    if (p.shard == rank && p.bytes > 0) own.push_back(p);
  }
  int64_t own_bytes = 0;
  for (const auto& p : own) own_bytes += p.bytes;
  for (size_t i = meta.size(); i < tensors.size(); ++i) {
    own_bytes += tensors[i].second.numel() * static_cast<int64_t>(tensors[i].second.element_size());
  }
  const double own_bytes_max = max_over_ranks(comm, static_cast<double>(own_bytes));

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

  auto rows = [](const at::Tensor& t, const checkpoint::Piece& p) {
    return t.dim() == 0 ? t : t.narrow(0, p.row_start, p.row_count);
  };
  auto copy_own = [&] {
    for (const auto& p : own) {
      rows(buffers[p.tensor], p).copy_(rows(tensors[p.tensor].second.detach(), p));
    }
    for (size_t i = meta.size(); i < tensors.size(); ++i) {
      buffers[i].copy_(tensors[i].second.detach());
    }
  };

  // Commits the save in flight as training does: poll_async() at "iteration boundaries"
  // (every 10 ms here) until it commits. Returns the committing call's seconds (rank 0
  // writes the index file and renames while the others wait: a second stall).
  auto commit_by_polling = [&] {
    for (;;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      Stopwatch sp;
      if (ckpt.poll_async()) return max_over_ranks(comm, sp.seconds());
    }
  };

  // First asynchronous save: the snapshot's buffers are new.
  settle();
  sw.reset();
  ckpt.save_async("async_first");
  const double call_first = max_over_ranks(comm, sw.seconds());
  const double stall_first = max_over_ranks(comm, ckpt.last_save_stall_seconds());
  const double commit_first = commit_by_polling();
  const double total_first = max_over_ranks(comm, ckpt.last_save_seconds());
  remove_on_root(comm, save_dir);

  std::vector<double> memcpy_s, own_s, stall_s, call_s, commit_s, async_total_s, async_write_s;
  std::vector<double> sync_s, sync_write_s, sync_coord_s, vs_memcpy, vs_sync, own_vs_sync;
  std::vector<double> both_vs_memcpy;  // (save_async stall + committing poll) / memcpy
  for (int64_t r = 0; r < repeats; ++r) {
    for (int k = 0; k < 3; ++k) {
      const int which = static_cast<int>((k + r) % 3);  // 0 memcpy, 1 save_async, 2 save
      settle();
      if (which == 0) {
        sw.reset();
        for (size_t i = 0; i < tensors.size(); ++i) buffers[i].copy_(tensors[i].second.detach());
        memcpy_s.push_back(max_over_ranks(comm, sw.seconds()));
        comm.barrier();
        sw.reset();
        copy_own();
        own_s.push_back(max_over_ranks(comm, sw.seconds()));
      } else if (which == 1) {
        sw.reset();
        ckpt.save_async(fmt::format("async_{}", r));
        call_s.push_back(max_over_ranks(comm, sw.seconds()));
        stall_s.push_back(max_over_ranks(comm, ckpt.last_save_stall_seconds()));
        commit_s.push_back(commit_by_polling());
        async_total_s.push_back(max_over_ranks(comm, ckpt.last_save_seconds()));
        async_write_s.push_back(ckpt.last_save_max_write_seconds());
        remove_on_root(comm, save_dir);
      } else {
        ckpt.save(fmt::format("sync_{}", r));
        sync_s.push_back(max_over_ranks(comm, ckpt.last_save_stall_seconds()));
        sync_write_s.push_back(ckpt.last_save_max_write_seconds());
        sync_coord_s.push_back(max_over_ranks(comm, ckpt.last_save_seconds()) -
                               sync_write_s.back());
        remove_on_root(comm, save_dir);
      }
    }
    vs_memcpy.push_back(stall_s.back() / memcpy_s.back());
    both_vs_memcpy.push_back((stall_s.back() + commit_s.back()) / memcpy_s.back());
    vs_sync.push_back(stall_s.back() / sync_s.back());
    own_vs_sync.push_back(own_s.back() / sync_s.back());
  }
  DTRAIN_CHECK(ckpt.commits() == 2 * repeats + 1, "rank {}: {} checkpoints committed, expected {}",
               rank, ckpt.commits(), 2 * repeats + 1);

  const double stall = median(stall_s), mc = median(memcpy_s), sync = median(sync_s);
  const double r_memcpy = median(vs_memcpy), r_sync = median(vs_sync);
  const double coord = median(sync_coord_s), own_mc = median(own_s);
  const double commit = median(commit_s), r_both = median(both_vs_memcpy);
  if (rank == 0) {
    fmt::print(
        "async checkpoint stall | gpt ({} layers, embd {}, vocab {}): {:.1f} M params, {} of "
        "state (params + AdamW + RNG), {} tensors | {} rank(s), {} rounds\n"
        "  page cache dropped before each step: {}\n",
        g.n_layer, g.n_embd, g.vocab_size, state.params / 1e6, format_bytes(bytes), tensors.size(),
        world, repeats, !drop ? "no (--drop-caches 0)" : dropped ? "yes" : "NO (not permitted)");
    print_row("figure", "value", "goal", "", "");
    print_row("memcpy of the state (preallocated buffers)", seconds(mc), "", "",
              fmt::format("runs: {:.3f}", fmt::join(memcpy_s, ", ")));
    print_row("memcpy into fresh buffers", seconds(memcpy_fresh), "", "", "once");
    print_row("synchronous save (stall = whole save)", seconds(sync), "", "",
              fmt::format("runs: {:.3f}; slowest shard write {:.3f}", fmt::join(sync_s, ", "),
                          fmt::join(sync_write_s, ", ")));
    print_row("save_async stall, first save (fresh buffers)", seconds(stall_first), "", "",
              fmt::format("call {:.3f} s; committing poll {:.3f} s; committed after {:.3f} s",
                          call_first, commit_first, total_first));
    print_row("save_async stall, steady state (reused)", seconds(stall), "", "",
              fmt::format("runs: {:.3f}; call {:.3f}; committed after {:.3f}, slowest write {:.3f}",
                          fmt::join(stall_s, ", "), fmt::join(call_s, ", "),
                          fmt::join(async_total_s, ", "), fmt::join(async_write_s, ", ")));
    print_row("committing poll_async (second stall)", seconds(commit), "", "",
              fmt::format("runs: {:.3f}; rank 0 finishes checkpoint.h5 and renames, the others wait",
                          fmt::join(commit_s, ", ")));
    print_row("stall / memcpy", fmt::format("{:.2f}", r_memcpy), "<= 1.5", at_most(r_memcpy, 1.5),
              fmt::format("per round: {:.2f}", fmt::join(vs_memcpy, ", ")));
    print_row("(stall + committing poll) / memcpy", fmt::format("{:.2f}", r_both), "<= 1.5",
              at_most(r_both, 1.5),
              fmt::format("per round: {:.2f}; all the training waits per checkpoint",
                          fmt::join(both_vs_memcpy, ", ")));
    print_row("stall / synchronous save", fmt::format("{:.2f}", r_sync), "<= 0.1",
              at_most(r_sync, 0.1), fmt::format("per round: {:.2f}", fmt::join(vs_sync, ", ")));
    print_row("first stall / memcpy into fresh buffers",
              fmt::format("{:.2f}", stall_first / memcpy_fresh), "", "", "info");
    print_row("memcpy of this rank's pieces only", seconds(own_mc), "", "",
              fmt::format("info: what a snapshot of the rank's own shard ({} of {}) would copy; "
                          "/ synchronous save {:.2f}",
                          format_bytes(own_bytes_max), format_bytes(bytes), median(own_vs_sync)));
    print_row("sync save coordination (save - slowest write)", fmt::format("{:.3f} s", coord),
              "< 0.020 s", coord < 0.020 ? "ok" : "BELOW",
              fmt::format("runs: {:.3f}; the issue's bar is at 4 ranks",
                          fmt::join(sync_coord_s, ", ")));
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
          {"commit_first_s", commit_first},
          {"commit_s", commit},
          {"commit_runs_s", commit_s},
          {"stall_commit_vs_memcpy", r_both},
          {"stall_commit_vs_memcpy_runs", both_vs_memcpy},
          {"async_first_total_s", total_first},
          {"stall_s", stall},
          {"stall_runs_s", stall_s},
          {"stall_call_runs_s", call_s},
          {"async_total_runs_s", async_total_s},
          {"async_write_runs_s", async_write_s},
          {"stall_vs_memcpy", r_memcpy},
          {"stall_vs_sync", r_sync},
          {"stall_vs_memcpy_runs", vs_memcpy},
          {"stall_vs_sync_runs", vs_sync},
          {"own_bytes", own_bytes_max},
          {"own_memcpy_s", own_mc},
          {"own_memcpy_runs_s", own_s},
          {"own_memcpy_vs_sync", median(own_vs_sync)}};
}

struct TrainOptions {
  std::vector<int64_t> hidden;
  int64_t batch = 32, iters = 70, period = 20, warmup = 3, rounds = 4;
};

// Time spent in PeriodicCheckpointer::step() and finish() during one training run (on
// one rank): the saving calls, the calls that committed an earlier asynchronous save,
// the other calls (a poll: one integer all-reduce while a save is in flight) and
// finish().
struct CheckpointCalls {
  std::vector<double> saves;
  double commits = 0.0, polls = 0.0, finish = 0.0;
  double sum() const {
    double s = commits + polls + finish;
    for (double x : saves) s += x;
    return s;
  }
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
  std::vector<std::vector<double>> total(3);
  std::vector<std::vector<CheckpointCalls>> calls(3);  // per run, the slowest rank's figures
  std::vector<double> async_ratio, sync_ratio, cpu_share;
  for (int64_t r = 0; r < o.rounds; ++r) {
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
      CheckpointCalls cc;
      comm.barrier();
      const double cpu0 = process_cpu_seconds();
      Stopwatch sw;
      for (int64_t i = 0; i < o.iters; ++i) {
        bt.trainer->run_step();
        if (!periodic) continue;
        const int64_t before = c->commits();
        Stopwatch sc;
        periodic->step(i);  // what PeriodicCheckpointerHook::after_step does
        const double s = sc.seconds();
        if ((i + 1) % o.period == 0) {
          cc.saves.push_back(s);
        } else if (c->commits() != before) {
          cc.commits += s;
        } else {
          cc.polls += s;
        }
      }
      if (periodic) {
        Stopwatch sf;
        periodic->finish();  // what PeriodicCheckpointerHook::after_train does
        cc.finish = sf.seconds();
      }
      comm.barrier();
      t[v] = max_over_ranks(comm, sw.seconds());
      if (v == 0) {
        cpu_share.push_back(comm.all_reduce_double((process_cpu_seconds() - cpu0) / t[v],
                                                   dist::ReduceOp::kMin));
      }
      total[v].push_back(t[v]);
      for (double& x : cc.saves) x = max_over_ranks(comm, x);
      cc.commits = max_over_ranks(comm, cc.commits);
      cc.polls = max_over_ranks(comm, cc.polls);
      cc.finish = max_over_ranks(comm, cc.finish);
      calls[v].push_back(cc);
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
  const double none_s = median(total[0]), share = median(cpu_share);
  const int64_t saves = o.iters / o.period;
  // Medians over the runs of a variant: one save call, and per run the commits, polls,
  // finish() and everything in the checkpointer.
  auto med = [&](int v, auto field) {
    std::vector<double> x;
    for (const auto& cc : calls[v]) x.push_back(field(cc));
    return median(x);
  };
  auto save_call = [&](int v) {
    std::vector<double> x;
    for (const auto& cc : calls[v]) x.insert(x.end(), cc.saves.begin(), cc.saves.end());
    return median(x);
  };
  auto commits = [](const CheckpointCalls& cc) { return cc.commits; };
  auto polls = [](const CheckpointCalls& cc) { return cc.polls; };
  auto finish = [](const CheckpointCalls& cc) { return cc.finish; };
  auto in_ckpt = [](const CheckpointCalls& cc) { return cc.sum(); };
  if (rank == 0) {
    std::string shape = "784";
    for (int64_t h : o.hidden) shape += fmt::format("-{}", h);
    shape += "-10";
    fmt::print(
        "async checkpoint training overhead | mlp {} ({:.1f} M params; checkpoint of params + "
        "momentum {}), SGD, batch {}/rank | {} rank(s), {} iterations per run, a checkpoint "
        "every {} ({} per run), {} rounds | load average {} -> {}\n"
        "  CPU share: {:.2f} of a core per rank without checkpoints (least of the ranks){}\n",
        shape, params / 1e6, format_bytes(bytes), o.batch, world, o.iters, o.period, saves,
        o.rounds, load_before, load_after, share,
        share < 0.9 ? ": CONTENDED, figures are noisy" : "");
    print_row("figure", "value", "goal", "", "");
    print_row("training, no checkpoints", fmt::format("{:.2f} s", none_s), "", "",
              fmt::format("runs: {:.2f}; {:.4f} s/step", fmt::join(total[0], ", "),
                          none_s / static_cast<double>(o.iters)));
    print_row("training, synchronous checkpoints", fmt::format("{:.2f} s", median(total[1])), "",
              "",
              fmt::format("runs: {:.2f}; in the checkpointer {:.3f} s per run, {:.3f} s per save",
                          fmt::join(total[1], ", "), med(1, in_ckpt), save_call(1)));
    print_row("training, asynchronous checkpoints", fmt::format("{:.2f} s", median(total[2])), "",
              "",
              fmt::format("runs: {:.2f}; in the checkpointer {:.3f} s per run: {:.3f} s per "
                          "save_async, commits {:.3f} s, polls {:.3f} s, finish() {:.3f} s",
                          fmt::join(total[2], ", "), med(2, in_ckpt), save_call(2), med(2, commits),
                          med(2, polls), med(2, finish)));
    print_row("async / no checkpoints", fmt::format("{:.3f}", ra), "<= 1.05", at_most(ra, 1.05),
              fmt::format("per round: {:.3f}", fmt::join(async_ratio, ", ")));
    print_row("sync / no checkpoints", fmt::format("{:.3f}", rs), "", "",
              fmt::format("info; per round: {:.3f}", fmt::join(sync_ratio, ", ")));
    std::fflush(stdout);
  }
  return {{"train_params", params},
          {"train_bytes", bytes},
          {"train_hidden", o.hidden},
          {"train_batch", o.batch},
          {"train_iters", o.iters},
          {"train_period", o.period},
          {"train_rounds", o.rounds},
          {"train_cpu_share", share},
          {"train_none_s", none_s},
          {"train_sync_s", median(total[1])},
          {"train_async_s", median(total[2])},
          {"train_none_runs_s", total[0]},
          {"train_sync_runs_s", total[1]},
          {"train_async_runs_s", total[2]},
          {"train_sync_in_ckpt_s", med(1, in_ckpt)},
          {"train_sync_save_call_s", save_call(1)},
          {"train_async_in_ckpt_s", med(2, in_ckpt)},
          {"train_async_save_call_s", save_call(2)},
          {"train_async_commits_s", med(2, commits)},
          {"train_async_polls_s", med(2, polls)},
          {"train_async_finish_s", med(2, finish)},
          {"train_async_vs_none", ra},
          {"train_sync_vs_none", rs},
          {"train_async_vs_none_runs", async_ratio},
          {"train_sync_vs_none_runs", sync_ratio},
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
  o.hidden = parse_int_list("hidden", flags.get("hidden", "2048,2048"));
  o.batch = flags.get_int("batch", 32);
  o.iters = flags.get_int("iters", 70);
  o.period = flags.get_int("period", 20);
  o.warmup = flags.get_int("warmup", 3);
  o.rounds = flags.get_int("rounds", 4);
  const std::string json_path = flags.get("json", "");
  flags.check_all_used();
  DTRAIN_CHECK_T(ConfigError, part == "all" || part == "stall" || part == "train",
                 "--part: expected all, stall or train, got '{}'", part);
  DTRAIN_CHECK_T(ConfigError,
                 repeats > 0 && o.rounds > 0 && o.batch > 0 && o.period > 0 && o.warmup >= 0,
                 "--repeats, --rounds, --batch and --period must be positive, --warmup >= 0");
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
  return dtrain::bench::mpi_bench_main(argc, argv, "dtrain_async_bench", dtrain::bench::run);
}
