// `dtrain ckpt`: command-line parsing and the helpers every subcommand shares (path
// resolution, writing a checkpoint directory without a Checkpointer).
#include "launcher/ckpt_command.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <exception>
#include <filesystem>

#include <ATen/ATen.h>
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/version.h>

#include "checkpoint/interop/weights.h"
#include "checkpoint/index.h"
#include "checkpoint/inspect.h"
#include "checkpoint/save_dir.h"
#include "checkpoint/shard_plan.h"
#include "runtime/base/error.h"
#include "runtime/base/env.h"
#include "runtime/base/fs.h"

namespace dtrain::launcher {
namespace stdfs = std::filesystem;
using checkpoint::CheckpointIndex;

namespace {

constexpr const char* kLastCheckpoint = "last_checkpoint";

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t start = 0;
  while (start < s.size() && std::isspace(static_cast<unsigned char>(s[start]))) ++start;
  return s.substr(start);
}

bool is_shard_file_name(const std::string& name) {
  return name.rfind("shard-", 0) == 0 && name.size() > 3 &&
         name.compare(name.size() - 3, 3, ".h5") == 0;
}


// Names of the checkpoint directories directly inside `dir` (for hints).
std::vector<std::string> checkpoints_in(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (!n.empty() && n[0] != '.' && e.is_directory() &&
        stdfs::exists(e.path() / checkpoint::kIndexFile)) {
      names.push_back(n);
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

// CLI11's NonNegativeNumber lets nan and inf through (nan < 0 is false): a tolerance
// must be a finite number >= 0.
const CLI::Validator kFiniteNonNegative(
    [](std::string& text) -> std::string {
      double value = 0;
      if (!CLI::detail::lexical_cast(text, value)) return "'" + text + "' is not a number";
      if (!std::isfinite(value) || value < 0) {
        return "'" + text + "' is not a finite number >= 0";
      }
      return "";
    },
    "FINITE >= 0");

}  // namespace

std::string human_bytes(int64_t bytes) {
  static const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return fmt::format("{} B", bytes);
  double v = static_cast<double>(bytes);
  int unit = -1;
  while (v >= 1024.0 && unit < 4) {
    v /= 1024.0;
    ++unit;
  }
  return fmt::format("{:.1f} {}", v, kUnits[unit]);
}

ResolvedCheckpoint resolve_checkpoint(const std::string& path_in) {
  std::string path = path_in;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  DTRAIN_CHECK_T(CheckpointError, !path.empty(), "empty checkpoint path");
  std::error_code ec;
  const auto status = stdfs::status(path, ec);
  DTRAIN_CHECK_T(CheckpointError, stdfs::exists(status), "'{}' does not exist", path);
  const std::string name = stdfs::path(path).filename().string();
  if (stdfs::is_regular_file(status)) {
    if (name == checkpoint::kIndexFile) return {fs::parent_dir(path), ""};
    if (is_shard_file_name(name)) {
      throw CheckpointError(fmt::format(
          "'{}' is one shard of a checkpoint; pass its directory '{}' instead", path,
          fs::parent_dir(path)));
    }
    if (interop::is_foreign_weights_path(path)) {
      throw CheckpointError(fmt::format(
          "'{}' is a PyTorch/safetensors file, not a dtrain checkpoint (make one with `dtrain "
          "ckpt import {} --to DIR`)", path, path));
    }
    throw CheckpointError(fmt::format(
        "'{}' is not a checkpoint: expected a checkpoint directory, its {}, or an output "
        "directory holding {}", path, checkpoint::kIndexFile, kLastCheckpoint));
  }
  DTRAIN_CHECK_T(CheckpointError, stdfs::is_directory(status),
                 "'{}' is neither a file nor a directory", path);
  if (stdfs::exists(path + "/" + checkpoint::kIndexFile)) return {path, ""};
  const std::string tag = path + "/" + kLastCheckpoint;
  if (stdfs::exists(tag)) {
    const std::string last = trim(fs::read_file(tag, {4096}));
    DTRAIN_CHECK_T(CheckpointError, !last.empty() && last.find('/') == std::string::npos,
                   "'{}' does not name a checkpoint (it holds '{}')", tag, last);
    const std::string dir = path + "/" + last;
    DTRAIN_CHECK_T(CheckpointError, stdfs::is_directory(dir),
                   "'{}' names checkpoint '{}', but '{}' does not exist", tag, last, dir);
    return {dir, fmt::format("'{}' is an output directory: using '{}' (named by {})", path, dir,
                             kLastCheckpoint)};
  }
  for (const auto& e : stdfs::directory_iterator(path, ec)) {
    // Shards without an index: a damaged checkpoint; verify and friends say what is missing.
    if (is_shard_file_name(e.path().filename().string())) return {path, ""};
  }
  const auto found = checkpoints_in(path);
  std::string hint;
  if (!found.empty()) {
    hint = fmt::format("; it holds the checkpoints {} (pass one of them)", fmt::join(found, ", "));
  }
  throw CheckpointError(fmt::format("'{}' is not a checkpoint: it has no {} and no {}{}", path,
                                    checkpoint::kIndexFile, kLastCheckpoint, hint));
}

void write_checkpoint_dir(const std::string& dir_in, int world_size,
                          const std::vector<std::pair<std::string, at::Tensor>>& replicated,
                          const std::vector<std::vector<std::pair<std::string, at::Tensor>>>& per_rank,
                          const StateDict& scalars, int64_t iteration,
                          const std::string& config_yaml, bool replace, Env& env) {
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  DTRAIN_CHECK_T(CheckpointError, world_size >= 1 && per_rank.size() <= static_cast<size_t>(world_size),
                 "writing '{}': world size {} with per-rank state for {} ranks", dir, world_size,
                 per_rank.size());
  DTRAIN_CHECK_T(CheckpointError, replace || env.type_of(dir) == FileType::kMissing,
                 "writing '{}': it exists already", dir);
  checkpoint::CollectedState base;
  for (const auto& [name, t] : replicated) {
    DTRAIN_CHECK_T(CheckpointError, t.defined() && t.layout() == at::kStrided,
                   "writing '{}': tensor '{}' is undefined or not a dense tensor", dir, name);
    base.replicated.emplace_back(name, t.cpu().contiguous());
  }
  for (const auto& [name, v] : scalars) {
    DTRAIN_CHECK_T(CheckpointError, !std::holds_alternative<at::Tensor>(v),
                   "writing '{}': scalar '{}' is a tensor", dir, name);
    base.scalars[name] = v;
  }
  const std::string parent = fs::parent_dir(dir);
  fs::create_directories_durable(parent, env);
  const std::string tmp = fs::temp_name_for(dir);
  DTRAIN_CHECK_T(CheckpointError, env.create_dir(tmp, DirAccess::kShared), "cannot create '{}': it exists", tmp);
  try {
    const auto plan = checkpoint::plan_shards(base.replicated_meta(), world_size);
    std::vector<checkpoint::ShardManifest> manifests;
    for (int r = 0; r < world_size; ++r) {
      checkpoint::CollectedState mine;
      mine.replicated = base.replicated;  // shallow: tensors share storage
      if (static_cast<size_t>(r) < per_rank.size()) {
        for (const auto& [name, t] : per_rank[r]) mine.per_rank.emplace_back(name, t.cpu().contiguous());
      }
      manifests.push_back(checkpoint::write_shard(
          tmp + "/" + checkpoint::shard_file_name(r, world_size), r, mine, plan, nullptr, env));
    }
    CheckpointIndex index = checkpoint::build_index(base, manifests, world_size, iteration);
    checkpoint::stamp_index(index);
    checkpoint::write_index_file(tmp, index, config_yaml, env);
    // Read back before it replaces anything.
    const auto problems = checkpoint::verify_checkpoint(tmp);
    DTRAIN_CHECK_T(CheckpointError, problems.empty(), "the checkpoint written for '{}' does not "
                   "verify: {}", dir, fmt::join(checkpoint::capped_problems(problems, 10), "; "));
    env.sync(tmp);
    // The old directory, if any, is swapped out in one step (RENAME_EXCHANGE).
    checkpoint::save_dir::commit_directory(env, tmp, dir);
  } catch (...) {
    fs::remove_quietly(tmp, env);
    throw;
  }
}

int run_ckpt(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  CLI::App app{"inspect, verify, compare, export and import dtrain checkpoints "
               "(PATH: a checkpoint directory, its checkpoint.h5, or an OUTPUT_DIR with "
               "last_checkpoint)",
               "dtrain ckpt"};
  app.require_subcommand(1);

  InspectOptions inspect;
  CLI::App* inspect_cmd = app.add_subcommand(
      "inspect", "iteration, world size, config summary, tensor table and totals");
  inspect_cmd->add_option("path", inspect.path, "checkpoint")->required();
  inspect_cmd->add_flag("--json", inspect.json, "machine-readable output (one JSON object)");

  VerifyOptions verify;
  CLI::App* verify_cmd = app.add_subcommand(
      "verify", "check every piece's checksum; exit 0 when valid, 1 when damaged");
  verify_cmd->add_option("path", verify.path, "checkpoint")->required();

  DiffOptions diff;
  CLI::App* diff_cmd = app.add_subcommand(
      "diff", "per-tensor max abs difference; exit 0 when identical, 1 otherwise");
  diff_cmd->add_option("a", diff.a, "first checkpoint")->required();
  diff_cmd->add_option("b", diff.b, "second checkpoint")->required();
  diff_cmd->add_option("--atol", diff.atol, "tolerated max abs difference (finite, >= 0)")
      ->capture_default_str()
      ->check(kFiniteNonNegative);

  ExportOptions exp;
  CLI::App* export_cmd = app.add_subcommand(
      "export", "write the model as a .pth (torch.load, detectron2) or .safetensors file");
  export_cmd->add_option("path", exp.path, "checkpoint")->required();
  export_cmd->add_option("--to", exp.to,
                         "output file: .safetensors, or else a .pth/.pt in torch.save's format")
      ->required();
  export_cmd->add_flag("--all", exp.all,
                       "every tensor and scalar with its full name, as one flat dict");
  export_cmd->add_flag("--bare", exp.bare,
                       "a bare state dict (OrderedDict) instead of {\"model\": ..., "
                       "\"iteration\": N}");
  export_cmd->add_flag("--force", exp.force, "replace an existing output file");

  ImportOptions imp;
  CLI::App* import_cmd = app.add_subcommand(
      "import", "make a checkpoint from a PyTorch, detectron2 or safetensors file");
  import_cmd->add_option("path", imp.path,
                         "a torch.save'd state dict, a detectron2 .pth/.pkl or a .safetensors")
      ->required();
  import_cmd->add_option("--to", imp.to, "checkpoint directory to create")->required();
  import_cmd->add_flag("--force", imp.force, "replace an existing checkpoint directory");
  import_cmd->add_option("--config-file", imp.config_file,
                         "a dtrain config: load into its model, optimizer and scheduler first "
                         "(maps PyTorch optimizer state onto parameter names)");
  import_cmd
      ->add_option("--world-size", imp.world_size,
                   "shards of the checkpoint written; per-rank keys ranks/RRRRR/... must "
                   "name ranks below it")
      ->capture_default_str()
      ->check(CLI::Range(1, kMaxImportWorldSize));

  if (!args.empty() && !args[0].empty() && args[0][0] != '-' &&
      app.get_subcommands([&](CLI::App* sub) { return sub->get_name() == args[0]; }).empty()) {
    err << "dtrain ckpt: unknown subcommand '" << args[0]
        << "' (expected inspect, verify, diff, export or import; see dtrain ckpt --help)\n";
    return kCkptUsage;
  }
  try {
    std::vector<std::string> reversed(args.rbegin(), args.rend());
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err) == 0 ? kCkptOk : kCkptUsage;
  }
  try {
    if (*inspect_cmd) return ckpt_inspect(inspect, out, err);
    if (*verify_cmd) return ckpt_verify(verify, out, err);
    if (*diff_cmd) return ckpt_diff(diff, out, err);
    if (*export_cmd) return ckpt_export(exp, out, err);
    if (*import_cmd) return ckpt_import(imp, out, err);
  } catch (const std::exception& e) {
    err << "dtrain ckpt: " << e.what() << "\n";
    return kCkptFailed;
  }
  return kCkptUsage;
}

}  // namespace dtrain::launcher
