// Helpers shared by the checkpoint tests and checkpoint_tool: a tiny deterministic
// training state (model, optimizer, LR scheduler, sampler, per-rank RNG) that any
// process can recompute from a seed, state comparison down to the bit, temporary
// directories and file-tree checksums.
//
//   TrainingState a(OptKind::kAdamW, /*seed=*/7, rank, world);
//   a.train(3);                                   // optimizer state now exists
//   Checkpointer ckpt(a.model, dir, comm, a.checkpointables());
//   ckpt.save("model_0000002", {{"iteration", int64_t{2}}});
//   TrainingState b(OptKind::kAdamW, /*seed=*/99, rank, world);
//   ... load into b ...; EXPECT_TRUE(StateDiff(a.snapshot(), b.snapshot()).empty());
//
// Not thread-safe (the RNG helpers use the process-wide default CPU generator).
#pragma once

#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include "checkpoint/checkpointer.h"
#include "checkpoint/module_state.h"
#include "runtime/base/config.h"
#include "runtime/base/stateful.h"
#include "runtime/data/sampler.h"
#include "runtime/optim/optim.h"
#include "runtime/optim/optimizer_state.h"

namespace dtrain::checkpoint::testing {

// A tiny MLP: fc1 Linear(in, hidden), bn BatchNorm1d(hidden) (float running stats and a
// 0-d int64 num_batches_tracked), fc2 Linear(hidden, out). Weights from `seed` (every
// parameter and buffer set deterministically, independent of the global RNG).
std::shared_ptr<torch::nn::Module> make_tiny_net(uint64_t seed, int64_t in = 6, int64_t hidden = 8,
                                                 int64_t out = 3);

// Sets every parameter and buffer of `module` to values derived from `seed` and its name
// (no use of the global RNG).
void fill_deterministic(torch::nn::Module& module, uint64_t seed);

// A deterministic tensor of `shape` and `dtype` from `seed` (covers negative values,
// fractions, and for floating types -0.0, +-inf and NaN when numel >= 8).
at::Tensor pattern_tensor(const std::vector<int64_t>& shape, at::ScalarType dtype, uint64_t seed);

// User extras as a trainer would pass them to save(): "iteration", an int, a float, a
// string, and tensors of every checkpoint dtype and of awkward shapes (0-d, empty,
// 1-D, 3-D), all derived from `seed`.
StateDict sample_extras(uint64_t seed, int64_t iteration);

// Every dtype a checkpoint stores.
const std::vector<at::ScalarType>& all_dtypes();

enum class OptKind { kSGD, kAdamW };

// Model + optimizer (SOLVER.*) + WarmupMultiStepLR + DistributedSampler, built the way
// the trainer builds them. Training is replicated (every rank takes the same steps on
// the same synthetic batch), so the state after k steps is the same on every rank and
// in every process, whatever the world size.
struct TrainingState {
  TrainingState(OptKind kind, uint64_t seed, int rank, int world, int64_t hidden = 8);
  TrainingState(const TrainingState&) = delete;
  TrainingState& operator=(const TrainingState&) = delete;

  // `steps` optimizer steps (forward, MSE loss, backward, step, scheduler step, sampler
  // advance) on batches derived from the scheduler's iteration (restored by a load).
  void train(int steps);
  // optimizer, scheduler, sampler (replicated) and rng (per rank), for a Checkpointer.
  std::map<std::string, Checkpointable> checkpointables();
  // A deep copy of all replicated state: "model/<name>", "optimizer/<key>",
  // "scheduler/<key>", "sampler/<key>".
  StateDict snapshot() const;

  Config cfg;
  std::shared_ptr<torch::nn::Module> model;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::unique_ptr<optim::OptimizerState> optimizer_state;
  std::unique_ptr<optim::LRScheduler> scheduler;
  std::unique_ptr<data::DistributedSampler> sampler;
  RngState rng;
  int64_t steps_taken = 0;  // train() steps in this process (not saved)
};

// Seeds the default CPU generator with seed * 1000 + rank and draws rank + 1 numbers,
// so every rank's generator state differs; returns that state.
at::Tensor set_rank_rng(uint64_t seed, int rank);
// The default CPU generator's state (a copy).
at::Tensor current_rng_state();

// Every difference between two states, one line each ("missing key", "dtype",
// "shape", "bytes differ", "value"): tensors compare bitwise (dtype, shape, bytes),
// doubles bitwise too. Empty when equal.
std::vector<std::string> state_diff(const StateDict& expected, const StateDict& actual);
// Whether two tensors have the same dtype, shape and bytes.
bool bitwise_equal(const at::Tensor& a, const at::Tensor& b);
// xxHash64 over every entry of `state` (names, dtypes, shapes, bytes, scalars).
uint64_t state_hash(const StateDict& state);

// What dist::run_ranks reported: "rank <r>: <message>" for each rank that threw, one
// per line; "" when none did (EXPECT_EQ(rank_errors(run_ranks(...)), "")).
std::string rank_errors(const std::vector<std::exception_ptr>& errors);

// A fresh empty directory $TMPDIR/dtrain-ckpt-<tag>-XXXXXX (testutil::make_temp_dir).
// Not removed automatically.
std::string make_temp_dir(const std::string& tag);
// make_temp_dir(tag) created by rank 0, its path broadcast to every rank. Collective.
std::string make_shared_temp_dir(dist::Communicator& comm, const std::string& tag);
// Every regular file under `dir` (recursively, relative paths) -> xxHash64 of its bytes.
std::map<std::string, uint64_t> tree_checksums(const std::string& dir);
// What verify_checkpoint says of `dir`: its problems, one per line, or the message of
// what it threw.
std::string verify_text(const std::string& dir);
// Names of the entries of `dir` that are directories and do not start with '.'.
std::vector<std::string> visible_dirs(const std::string& dir);
// The contents of dir/last_checkpoint ("" when missing).
std::string last_checkpoint_name(const std::string& dir);
// Byte offset in `file` of the raw data of `dataset` (contiguous layout).
int64_t dataset_offset(const std::string& file, const std::string& dataset);
// XORs the byte at `offset` of `path` with 0xff.
void flip_byte(const std::string& path, int64_t offset);
// Unlinks dataset `dataset` ("/model/w") from the HDF5 file `file` (a shard losing a piece).
void remove_dataset(const std::string& file, const std::string& dataset);

// Arms fault point `point` in throw mode (DTRAIN_FAULT_MODE=throw) for rank `fault_rank`
// (-1: every rank) until destroyed. runtime/base/fault.cpp counts the hits of armed
// points per process for the process's lifetime, so this sets DTRAIN_FAULT_AFTER to this
// process's count of such hits + 1; it assumes the point is reached once per matching
// rank while armed. Not thread-safe (setenv).
class ScopedFault {
 public:
  ScopedFault(const std::string& point, int fault_rank, int my_rank);
  ~ScopedFault();
  ScopedFault(const ScopedFault&) = delete;
  ScopedFault& operator=(const ScopedFault&) = delete;
};

// Collects what the default spdlog logger prints while it exists (in addition to the
// usual output). Not thread-safe.
class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;
  std::string text() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Runs `argv` (argv[0] an absolute path) with `env` added to this process's environment,
// stdout and stderr going to `log_file`; returns the raw waitpid status.
int run_process(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
                const std::string& log_file);

}  // namespace dtrain::checkpoint::testing
