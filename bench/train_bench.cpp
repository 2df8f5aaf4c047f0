// Training throughput of a reference model under SimpleTrainer + DataParallel, with the
// gradient all-reduce time per step compared with a raw MPI_Allreduce of the same bytes
// and the compute rate compared with a single-thread sgemm, all measured in this run.
//
//   mpirun -np 2 --bind-to none build/bin/dtrain_train_bench --model mlp --iters 30
//
// Flags (defaults in brackets): --model mlp|resnet18 [mlp], --batch per rank [128 for
// mlp, 32 for resnet18], --warmup [3 mlp, 2 resnet18], --iters timed steps [40 mlp,
// 6 resnet18], --threads intra-op threads per rank [1], --raw-iters raw MPI_Allreduce
// repetitions [10], --bucket-mb DataParallel bucket cap [25], --overlap all-reduce
// during backward [1], --bucket-view gradients as bucket views [1], --json FILE append
// the result as one JSON line [none].
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/utils.h>

#include "bench/bench_util.h"
#include "runtime/base/error.h"
#include "runtime/base/logging.h"
#include "runtime/dist/mpi_communicator.h"

namespace dtrain::bench {
namespace {

// Single-thread-per-rank sgemm rate (GFLOP/s) of an n x n x n float matmul, measured on
// every rank at once (as the training steps run).
double sgemm_gflops(int64_t n, int reps) {
  at::Tensor a = at::randn({n, n}), b = at::randn({n, n}), c = at::empty({n, n});
  at::mm_out(c, a, b);  // warm-up
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    Stopwatch sw;
    at::mm_out(c, a, b);
    t.push_back(sw.seconds());
  }
  return 2.0 * n * n * n / median(t) / 1e9;
}

int run(int argc, char** argv) {
  dist::MpiCommunicator comm;
  const int rank = comm.rank(), world = comm.size();
  log::init(rank, world);

  Flags flags(argc, argv);
  const std::string model_name = flags.get("model", "mlp");
  const bool is_mlp = model_name == "mlp";
  const int64_t batch = flags.get_int("batch", is_mlp ? 128 : 32);
  const int64_t warmup = flags.get_int("warmup", is_mlp ? 3 : 2);
  const int64_t iters = flags.get_int("iters", is_mlp ? 40 : 6);
  const int64_t threads = flags.get_int("threads", 1);
  const int64_t raw_iters = flags.get_int("raw-iters", 10);
  engine::DataParallelOptions dp_options;
  dp_options.bucket_cap_mb = std::stod(flags.get("bucket-mb", "25"));
  dp_options.overlap = flags.get_int("overlap", 1) != 0;
  dp_options.gradient_as_bucket_view = flags.get_int("bucket-view", 1) != 0;
  const std::string json_path = flags.get("json", "");
  flags.check_all_used();
  DTRAIN_CHECK_T(ConfigError, batch > 0 && iters > 0 && warmup >= 0 && threads > 0 && raw_iters > 0,
                 "--batch, --iters, --threads and --raw-iters must be positive, --warmup >= 0");

  at::set_num_threads(static_cast<int>(threads));
  torch::manual_seed(0);
  BenchModel setup = make_bench_model(model_name);
  BenchTrainer bt = make_bench_trainer(setup, batch, comm, dp_options);
  engine::SimpleTrainer& trainer = *bt.trainer;
  auto& dp = bt.dp;

  for (int64_t i = 0; i < warmup; ++i) trainer.run_step();
  comm.barrier();
  std::vector<double> step_s, allreduce_s, reduce_s;
  const double cpu0 = process_cpu_seconds();
  Stopwatch total;
  for (int64_t i = 0; i < iters; ++i) {
    Stopwatch sw;
    trainer.run_step();
    step_s.push_back(sw.seconds());
    allreduce_s.push_back(dp->last_allreduce_seconds());
    reduce_s.push_back(dp->last_reduce_seconds());
  }
  comm.barrier();
  const double total_s = total.seconds();
  // Share of a core each rank got while timed (well below 1: the machine is contended).
  const double cpu_share = comm.all_reduce_double(
      (process_cpu_seconds() - cpu0) / total_s / static_cast<double>(threads), dist::ReduceOp::kMin);

  // The same gradient reduction on ranks that start together, outside backward: in
  // training the all-reduce time also holds the wait for the slower rank (skew between
  // the ranks) and, with overlap, the backward computation it overlaps. Its all-reduce
  // part (first launch to completion) is the bandwidth figure; the whole call adds the
  // division of the gradients by the world size.
  const int64_t bytes = dp->bytes_per_reduce();
  double synced_s = 0.0, synced_call_s = 0.0, raw_s = 0.0;
  if (world > 1) {
    std::vector<double> t, tc;
    for (int64_t i = 0; i < raw_iters; ++i) {
      comm.barrier();
      dp->reduce_gradients();
      t.push_back(dp->last_allreduce_seconds());
      tc.push_back(dp->last_reduce_seconds());
    }
    synced_s = comm.all_reduce_double(median(t), dist::ReduceOp::kMax);
    synced_call_s = comm.all_reduce_double(median(tc), dist::ReduceOp::kMax);
  }
  // The Communicator's all-reduce of one buffer of the same bytes, kSum and kAvg (kAvg
  // adds a division pass over the buffer), ranks started together.
  double comm_sum_s = 0.0, comm_avg_s = 0.0;
  if (world > 1) {
    at::Tensor flat = at::ones({bytes / 4});
    std::vector<double> ts, ta;
    for (int64_t i = 0; i < raw_iters; ++i) {
      comm.barrier();
      Stopwatch sw;
      comm.all_reduce(flat, dist::ReduceOp::kSum);
      ts.push_back(sw.seconds());
      comm.barrier();
      sw.reset();
      comm.all_reduce(flat, dist::ReduceOp::kAvg);
      ta.push_back(sw.seconds());
    }
    comm_sum_s = comm.all_reduce_double(median(ts), dist::ReduceOp::kMax);
    comm_avg_s = comm.all_reduce_double(median(ta), dist::ReduceOp::kMax);
  }
  // Raw MPI_Allreduce of the same bytes, one buffer, the same run.
  if (world > 1) {
    std::vector<float> buf(static_cast<size_t>(bytes / 4), 1.0f);
    std::vector<double> t;
    for (int64_t i = 0; i < raw_iters + 2; ++i) {
      MPI_Barrier(MPI_COMM_WORLD);
      Stopwatch sw;
      MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(buf.size()), MPI_FLOAT, MPI_SUM,
                    MPI_COMM_WORLD);
      if (i >= 2) t.push_back(sw.seconds());
    }
    raw_s = comm.all_reduce_double(median(t), dist::ReduceOp::kMax);
  }
  const double gflops_peak = comm.all_reduce_double(sgemm_gflops(1024, 5), dist::ReduceOp::kAvg);

  // Rank-agreed figures: the slowest rank's medians.
  const double step_med = comm.all_reduce_double(median(step_s), dist::ReduceOp::kMax);
  const double ar_mean =
      comm.all_reduce_double(std::accumulate(allreduce_s.begin(), allreduce_s.end(), 0.0) / iters,
                             dist::ReduceOp::kMax);
  const double ar_med = comm.all_reduce_double(median(allreduce_s), dist::ReduceOp::kMax);
  const double reduce_med = comm.all_reduce_double(median(reduce_s), dist::ReduceOp::kMax);
  const double samples_s = static_cast<double>(batch * world) / step_med;
  const double samples_s_mean = static_cast<double>(batch * world * iters) / total_s;
  const double ar_gbps = world > 1 && ar_med > 0 ? bytes / ar_med / 1e9 : 0.0;
  const double raw_gbps = world > 1 && raw_s > 0 ? bytes / raw_s / 1e9 : 0.0;
  const double synced_gbps = world > 1 && synced_s > 0 ? bytes / synced_s / 1e9 : 0.0;
  const double model_gflops =
      setup.flops_per_sample > 0 ? setup.flops_per_sample * samples_s / world / 1e9 : 0.0;

  if (rank == 0) {
    fmt::print(
        "train {} | {} rank(s) x {} thread(s), batch {}/rank, {} timed steps after {} warm-up\n"
        "  step (median)          {:8.4f} s   ({:.4f} s mean)\n"
        "  throughput             {:8.1f} samples/s   ({:.1f} from the mean step)\n"
        "  CPU share              {:8.2f} of a core per thread (least of the ranks){}\n",
        model_name, world, threads, batch, iters, warmup, step_med, total_s / iters, samples_s,
        samples_s_mean, cpu_share, cpu_share < 0.9 ? ": CONTENDED, figures are noisy" : "");
    if (world > 1) {
      fmt::print(
          "  gradient all-reduce    {} in {} bucket(s), overlap {}, gradients as bucket views {}\n"
          "    in training        {:8.4f} s/step median ({:.4f} mean) from the first launch "
          "to completion{}\n"
          "    exposed            {:8.4f} s/step median in reduce_gradients() after backward "
          "= {:.1f}% of the step\n"
          "    ranks together     {:8.4f} s all-reduce ({:.4f} s with the division by the "
          "world size)\n"
          "  raw MPI_Allreduce      {:8.4f} s for the same bytes (ranks started together)\n"
          "  all-reduce bandwidth   {:8.2f} GB/s with the ranks started together vs {:.2f} GB/s "
          "raw: ratio {:.2f} (goal >= 0.9)\n"
          "                         {:8.2f} GB/s in training: ratio {:.2f}\n"
          "  exposed / all-reduce   {:8.2f} (goal <= 0.3: the part backward did not hide, "
          "over the all-reduce with the ranks together)\n",
          format_bytes(bytes), dp->buckets().size(), dp_options.overlap,
          dp_options.gradient_as_bucket_view, ar_med, ar_mean,
          dp_options.overlap ? ", overlapping backward" : "", reduce_med,
          100.0 * reduce_med / step_med, synced_s, synced_call_s, raw_s, synced_gbps, raw_gbps,
          synced_gbps / raw_gbps, ar_gbps, ar_gbps / raw_gbps, reduce_med / synced_s);
      fmt::print("  Communicator all_reduce of one buffer: kSum {:.2f} GB/s ({:.2f} of raw), "
                 "kAvg {:.2f} GB/s ({:.2f} of raw)\n",
                 bytes / comm_sum_s / 1e9, raw_s / comm_sum_s, bytes / comm_avg_s / 1e9,
                 raw_s / comm_avg_s);
    }
    if (model_gflops > 0) {
      fmt::print("  compute                {:8.1f} GFLOP/s per rank vs sgemm {:.1f}: ratio {:.2f}\n",
                 model_gflops, gflops_peak, model_gflops / gflops_peak);
    }
    std::fflush(stdout);
    nlohmann::json j = {{"bench", "train"},        {"impl", "dtrain"},
                        {"model", model_name},     {"world", world},
                        {"threads", threads},      {"batch_per_rank", batch},
                        {"iters", iters},          {"warmup", warmup},
                        {"step_s", step_med},      {"step_mean_s", total_s / iters},
                        {"samples_per_s", samples_s}, {"samples_per_s_mean", samples_s_mean},
                        {"bytes_per_reduce", bytes}, {"buckets", dp->buckets().size()},
                        {"allreduce_s", ar_med},   {"allreduce_mean_s", ar_mean},
                        {"reduce_s", reduce_med},  {"raw_allreduce_s", raw_s},
                        {"allreduce_gbps", ar_gbps}, {"raw_allreduce_gbps", raw_gbps},
                        {"synced_allreduce_s", synced_s}, {"synced_allreduce_gbps", synced_gbps},
                        {"synced_reduce_call_s", synced_call_s},
                        {"exposed_over_allreduce", world > 1 ? reduce_med / synced_s : 0.0},
                        {"bucket_cap_mb", dp_options.bucket_cap_mb},
                        {"overlap", dp_options.overlap},
                        {"bucket_view", dp_options.gradient_as_bucket_view},
                        {"sgemm_gflops", gflops_peak}, {"model_gflops", model_gflops},
                        {"cpu_share", cpu_share}, {"comm_sum_s", comm_sum_s},
                        {"comm_avg_s", comm_avg_s}};
    append_json_line(json_path, j);
  }
  return 0;
}

}  // namespace
}  // namespace dtrain::bench

int main(int argc, char** argv) {
  return dtrain::bench::mpi_bench_main(argc, argv, "dtrain_train_bench", dtrain::bench::run);
}
