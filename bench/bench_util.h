// Small helpers shared by the benchmark executables: flag parsing, wall-clock timing,
// /proc memory figures, timed shell commands (dd), JSON result lines, and the training
// states the benchmarks share (ckpt_bench's gpt + AdamW state, train_bench's models and
// trainer).
//
//   bench::Flags flags(argc, argv);                  // --name value ...
//   const int iters = flags.get_int("iters", 20);
//   bench::Stopwatch sw;  ...;  double s = sw.seconds();
//   bench::append_json_line(flags.get("json", ""), result);
//
// Not thread-safe unless a function says so.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include "checkpoint/module_state.h"
#include "models/gpt.h"
#include "models/model.h"
#include "runtime/dist/communicator.h"
#include "runtime/engine/data_parallel.h"
#include "runtime/engine/simple_trainer.h"
#include "runtime/optim/optimizer_state.h"

namespace dtrain::bench {

// "--name value" pairs (and "--name=value"); a "--name" followed by another flag or
// nothing is "1". Unknown flags are errors reported by check_all_used().
class Flags {
 public:
  Flags(int argc, char** argv);
  // The value of --name, or `fallback` when absent.
  std::string get(const std::string& name, const std::string& fallback);
  int64_t get_int(const std::string& name, int64_t fallback);
  double get_double(const std::string& name, double fallback);
  // Throws dtrain::ConfigError naming every flag that no get*() asked for, with the
  // ones that were asked for (call after reading all flags).
  void check_all_used() const;

 private:
  std::map<std::string, std::string> values_;
  std::map<std::string, bool> used_;
};

// Monotonic wall-clock timer started at construction.
class Stopwatch {
 public:
  Stopwatch() : t0_(std::chrono::steady_clock::now()) {}
  void reset() { t0_ = std::chrono::steady_clock::now(); }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  std::chrono::steady_clock::time_point t0_;
};

// A field of /proc/self/status in bytes ("VmRSS", "VmHWM"); -1 when unavailable.
int64_t proc_status_bytes(const std::string& field);
// Resets this process's peak RSS (VmHWM) to the current RSS by writing "5" to
// /proc/self/clear_refs. Returns false when the kernel refuses.
bool reset_peak_rss();

// CPU seconds (user + system) this process has used so far, all threads.
double process_cpu_seconds();

// A buffer to write: address and size in bytes.
using ByteSpan = std::pair<const void*, size_t>;
// A buffer to read into.
using MutableByteSpan = std::pair<void*, size_t>;

// Writes `buffers` back to back into `path` (created or truncated) with write(2), then
// fsyncs it. With kick_bytes > 0, starts the writeback every kick_bytes written
// (sync_file_range SYNC_FILE_RANGE_WRITE, which does not wait). Returns the seconds of
// the writes and of the fsync. Throws dtrain::Error naming the path on failure.
std::pair<double, double> write_and_fsync(const std::string& path,
                                          const std::vector<ByteSpan>& buffers,
                                          int64_t kick_bytes = 0);
// Reads `path` to its end with read(2) in 16 MiB calls; returns the seconds. Throws
// dtrain::Error naming the path on failure.
double read_whole_file(const std::string& path);
// Reads `path` with read(2) (16 MiB calls at most) into `buffers`, filled in turn: the
// bytes land where a load must put them, not in one reused buffer. Returns the seconds.
// Throws dtrain::Error naming the path on failure or when the file is shorter.
double read_into(const std::string& path, const std::vector<MutableByteSpan>& buffers);

// Runs `command` with /bin/sh and returns its wall-clock seconds. Throws dtrain::Error
// naming the command when it exits non-zero.
double run_timed(const std::string& command);

// `sync; echo 3 > /proc/sys/vm/drop_caches`. Returns false (and changes nothing else)
// when not permitted (not root, read-only /proc in a container).
bool drop_page_cache();

// Median of `v` (0 for an empty vector).
double median(std::vector<double> v);

// The largest x over all ranks (the slowest rank's time). Collective.
double max_over_ranks(dist::Communicator& comm, double x);

// Appends `j` as one line to `path` (nothing when path is empty). Throws dtrain::Error
// naming the path when it cannot be written.
void append_json_line(const std::string& path, const nlohmann::json& j);

// Human-readable bytes ("1.07 GB", decimal units as dd prints them).
std::string format_bytes(double bytes);

// The first three fields of /proc/loadavg ("2.94 4.42 3.70"), or "" when unreadable.
std::string load_average();

// The main() of a benchmark run under mpirun: initializes MPI, returns run(argc, argv),
// and on an error prints it after `name` and aborts every rank (a rank that fails may
// leave the others inside a collective).
int mpi_bench_main(int argc, char** argv, const char* name, int (*run)(int, char**));
// The main() of a one-process benchmark: returns run(argc, argv), or 1 after printing an
// error after `name`.
int bench_main(int argc, char** argv, const char* name, int (*run)(int, char**));

// ---- Training states shared by the benchmarks ----

// Tensors by name, in order.
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// The gpt shape of the flags --layers [12] --embd [768] --heads [12] --vocab [2048]
// --ctx [128]: by default the 88.3 M-parameter gpt of dtrain_ckpt_bench.
models::GptOptions gpt_options_from_flags(Flags& flags);

// dtrain_ckpt_bench's full training state: a gpt with AdamW (lr 1e-4) state made by one
// optimizer step on random gradients (gradients cleared afterwards). Seeds the global
// generator with 0 first, so it is identical on every rank.
struct GptTrainingState {
  std::shared_ptr<models::Model> model;
  std::unique_ptr<torch::optim::AdamW> adamw;
  std::unique_ptr<checkpoint::ModuleState> model_state;
  std::unique_ptr<optim::OptimizerState> opt_state;  // over *adamw
  int64_t params = 0;                                // parameter count
};
GptTrainingState make_gpt_training_state(const models::GptOptions& options);

// Every tensor a checkpoint holds for the replicated state, by saved name:
// "model/<key>" then "optimizer/<key>" (the tensors alias the live state).
NamedTensors replicated_tensors(const checkpoint::ModuleState& model,
                                const optim::OptimizerState& opt);
// Sum of numel * element size.
int64_t total_bytes(const NamedTensors& tensors);
// Address and size of every (contiguous) tensor, in order.
std::vector<ByteSpan> byte_spans(const NamedTensors& tensors);
// The same spans, to read into (the tensors' own memory).
std::vector<MutableByteSpan> mutable_byte_spans(const NamedTensors& tensors);

// dtrain_train_bench's models: "mlp" (784-<mlp_hidden>-10) or "resnet18" (CIFAR-style,
// width 64, 32x32 inputs). Throws dtrain::ConfigError for another name.
struct BenchModel {
  std::shared_ptr<models::Model> model;
  std::vector<int64_t> sample_shape;  // one input sample
  double flops_per_sample = 0.0;      // forward + backward (mlp only; 0 when not counted)
};
BenchModel make_bench_model(const std::string& name,
                            const std::vector<int64_t>& mlp_hidden = {2048, 2048});

// dtrain_train_bench's trainer for `m` on `comm`: synthetic data held in memory (8 global
// batches of N(0, 1) inputs, uniform labels over 10 classes) shuffled by
// DistributedSampler, SGD (lr 0.01, momentum 0.9), DataParallel (`dp`: by default the
// configuration's defaults, i.e. 25 MiB buckets, buffers broadcast, all-reduce
// overlapped with backward, gradients as bucket views) and SimpleTrainer. `batch` is
// per rank.
struct BenchTrainer {
  std::shared_ptr<torch::optim::SGD> optimizer;
  std::shared_ptr<engine::DataParallel> dp;
  std::unique_ptr<engine::SimpleTrainer> trainer;
};
BenchTrainer make_bench_trainer(const BenchModel& m, int64_t batch, dist::Communicator& comm,
                                engine::DataParallelOptions dp = {});

}  // namespace dtrain::bench
