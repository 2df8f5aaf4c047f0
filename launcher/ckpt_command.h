// `dtrain ckpt inspect|verify|diff|export|import`: local tools over checkpoint format v1
// (docs/CKPT_TOOLS.md). They run in one process, call no MPI and never need a model.
//
//   std::ostringstream out, err;
//   int rc = run_ckpt({"verify", "output/model_final"}, out, err);   // 0 valid, 1 damaged
//   rc = run_ckpt({"export", "output", "--to", "weights.pt"}, out, err);
//
// Every subcommand is also a plain function (ckpt_inspect, ...) taking its options.
// Implemented in ckpt_command.cpp (parsing, shared helpers), ckpt_inspect.cpp (inspect,
// verify) and ckpt_convert.cpp (diff, export, import), over checkpoint/inspect.h.
// PATH arguments accept a checkpoint directory, its checkpoint.h5, or an OUTPUT_DIR
// holding last_checkpoint (resolve_checkpoint). Functions are not thread-safe (they
// share HDF5's library lock with the rest of the process but keep no other state).
#pragma once

#include <map>
#include <ostream>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "checkpoint/inspect.h"
#include "runtime/base/env.h"
#include "runtime/base/stateful.h"

namespace dtrain::launcher {

// Exit codes of `dtrain ckpt` (docs/CKPT_TOOLS.md): kCkptOk success / valid /
// identical; kCkptFailed damaged, different, or an input that cannot be used (missing,
// not a checkpoint, existing output without --force); kCkptUsage a malformed command line.
inline constexpr int kCkptOk = 0;
inline constexpr int kCkptFailed = 1;
inline constexpr int kCkptUsage = 2;

// Parses `args` (what follows "dtrain ckpt") and runs the subcommand, writing results to
// `out` and errors to `err`. Returns the exit code. Never throws.
int run_ckpt(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

struct InspectOptions {
  std::string path;
  bool json = false;  // one JSON object instead of the text report
};
// Prints the header, config summary, tensor table (grouped by owner, with totals) and
// scalars of a checkpoint. Returns kCkptOk, or kCkptFailed with a message on `err`.
int ckpt_inspect(const InspectOptions& options, std::ostream& out, std::ostream& err);

struct VerifyOptions {
  std::string path;
};
// Reads every piece of every shard and checks its xxHash64; prints each problem (naming
// the tensor and the shard file) and a verdict. kCkptOk when valid, else kCkptFailed.
int ckpt_verify(const VerifyOptions& options, std::ostream& out, std::ostream& err);

struct DiffOptions {
  std::string a, b;
  double atol = 0.0;  // values with max |a - b| <= atol count as equal
};
// Compares two checkpoints tensor by tensor (max abs difference in float64, integers
// exactly), plus scalars. Works across world sizes. kCkptOk when identical.
int ckpt_diff(const DiffOptions& options, std::ostream& out, std::ostream& err);

struct ExportOptions {
  std::string path;
  std::string to;      // the file to write: .safetensors, or else torch.save's format
  bool all = false;    // every tensor and scalar with full names, as one flat dict
  bool bare = false;   // a bare state dict, not {"model": ..., "iteration": N}
  bool force = false;  // replace an existing file
};
// Writes the model's state dict ("fc1.weight", ...) as a file that `torch.load` and
// detectron2's Checkpointer.load read: {"model": OrderedDict, "iteration": N} (a bare
// OrderedDict with `bare`), or as safetensors when `to` ends in ".safetensors".
int ckpt_export(const ExportOptions& options, std::ostream& out, std::ostream& err);

struct ImportOptions {
  std::string path;    // a PyTorch, detectron2 (.pth/.pkl) or safetensors file
  std::string to;      // the checkpoint directory to create
  bool force = false;  // replace an existing checkpoint directory
  // A dtrain config: load the file into its model, optimizer and LR scheduler as a
  // training run would (key matching; PyTorch optimizer/scheduler state where it maps)
  // and import their state. Without it only the file's tensors and scalars are imported.
  std::string config_file;
  // The world size of the checkpoint written (its number of shards); per-rank keys
  // `ranks/RRRRR/<name>` must name ranks below it. Bounded by kMaxImportWorldSize.
  int world_size = 1;
};
inline constexpr int kMaxImportWorldSize = 4096;
// Builds a checkpoint of options.world_size shards from a foreign weight file (checkpoint/interop): the model's
// keys go under "model/", keys with a '/' (from `export --all`) keep their names (per-rank
// keys of a rank >= world_size are refused, naming the key and --world-size), and a
// detectron2 checkpoint's "iteration" becomes the checkpoint's. Refuses to overwrite.
int ckpt_import(const ImportOptions& options, std::ostream& out, std::ostream& err);

// ---- Helpers shared by the subcommands (and useful to tests) ----

struct ResolvedCheckpoint {
  std::string dir;   // the checkpoint directory
  std::string note;  // e.g. "using 'out/model_final' (named by out/last_checkpoint)"; may be ""
};
// Resolves PATH: a checkpoint directory, its checkpoint.h5, or an output directory
// with last_checkpoint. Throws dtrain::CheckpointError saying what PATH is instead.
ResolvedCheckpoint resolve_checkpoint(const std::string& path);

// Reading whole tensors and verifying a checkpoint directory are library functions:
// checkpoint/inspect.h (load_index, read_full_tensor, read_all_tensors, verify_checkpoint).

// Writes a committed checkpoint directory `dir` (which must not exist) of `world_size`
// shards from `replicated` tensors (sharded as plan_shards says), `per_rank` tensors
// (indexed by rank; may be shorter than world_size) and `scalars`: shards and
// checkpoint.h5 in a hidden temporary directory beside `dir`, verified, synced, then
// renamed into place. With `replace`, an existing `dir` is swapped out in one step
// (RENAME_EXCHANGE; where the file system lacks it, moved aside first) and then deleted,
// so that a crash leaves either the old or the new checkpoint; the caller checks that
// it is one to replace. Every file-system step goes through `env`.
void write_checkpoint_dir(const std::string& dir, int world_size,
                          const std::vector<std::pair<std::string, at::Tensor>>& replicated,
                          const std::vector<std::vector<std::pair<std::string, at::Tensor>>>& per_rank,
                          const StateDict& scalars, int64_t iteration,
                          const std::string& config_yaml, bool replace = false,
                          Env& env = Env::posix());

// The state of `options.config_file`'s model, optimizer and scheduler after loading
// `options.path` into them ("model/...", "optimizer/...", "scheduler/...", "extra/..."),
// with what was and was not imported said on `out`; `config_yaml` receives the config
// (ckpt_import_model.cpp).
StateDict import_with_model(const ImportOptions& options, std::ostream& out,
                                        std::string* config_yaml);

// "512 B", "1.5 KiB", "3.2 MiB", ...
std::string human_bytes(int64_t bytes);

}  // namespace dtrain::launcher
