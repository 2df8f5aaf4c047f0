// Rank/device discovery: parsing launcher environment variables into a RankEnv.
#include "runtime/dist/rank_env.h"

#include <fmt/format.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "runtime/base/error.h"

extern char** environ;

namespace dtrain::dist {
namespace {

using Env = std::map<std::string, std::string>;

const std::string* find(const Env& env, const std::string& name) {
  auto it = env.find(name);
  return it == env.end() ? nullptr : &it->second;
}

// Parses a whole string as a non-negative int; nullopt if it is anything else.
std::optional<int> parse_non_negative(std::string_view text) {
  int value = 0;
  if (text.empty()) return std::nullopt;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end || value < 0) return std::nullopt;
  return value;
}

int parse_var(const Env& env, const std::string& name) {
  const std::string& value = *find(env, name);
  std::optional<int> parsed = parse_non_negative(value);
  DTRAIN_CHECK(parsed.has_value(),
               "malformed environment variable {}='{}': expected a non-negative integer", name,
               value);
  return *parsed;
}

// The task count of node `node_id` in a SLURM per-node list such as "4(x2),1"; with no
// node id the list must be uniform. Throws Error naming `name` when malformed.
int slurm_tasks_on_node(const std::string& name, const std::string& value,
                        std::optional<int> node_id) {
  auto malformed = [&](const std::string& why) {
    return Error(
        fmt::format("malformed environment variable {}='{}': {} (expected e.g. "
                    "'4', '4(x2)' or '2,1')",
                    name, value, why));
  };
  struct Run {
    int tasks;
    int64_t nodes;
  };
  std::vector<Run> runs;
  std::string_view rest(value);
  while (true) {
    const size_t comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    Run run{0, 1};
    const size_t paren = item.find('(');
    std::optional<int> tasks = parse_non_negative(item.substr(0, paren));
    if (!tasks) throw malformed(fmt::format("bad task count '{}'", item));
    run.tasks = *tasks;
    if (paren != std::string_view::npos) {
      std::string_view repeat = item.substr(paren);
      std::optional<int> nodes;
      if (repeat.size() > 3 && repeat.substr(0, 2) == "(x" && repeat.back() == ')') {
        nodes = parse_non_negative(repeat.substr(2, repeat.size() - 3));
      }
      if (!nodes || *nodes == 0) throw malformed(fmt::format("bad repeat '{}'", repeat));
      run.nodes = *nodes;
    }
    runs.push_back(run);
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  if (!node_id) {
    for (const Run& run : runs) {
      if (run.tasks != runs.front().tasks) {
        throw Error(
            fmt::format("{}='{}' differs between nodes and SLURM_NODEID is not set, "
                        "so the number of tasks on this node is unknown",
                        name, value));
      }
    }
    return runs.front().tasks;
  }
  int64_t index = *node_id;
  for (const Run& run : runs) {
    if (index < run.nodes) return run.tasks;
    index -= run.nodes;
  }
  throw Error(
      fmt::format("SLURM_NODEID={} is beyond the nodes listed in {}='{}'", *node_id, name, value));
}

// One launcher's variable names.
struct Source {
  const char* name;
  std::vector<std::string> rank;        // first present one is used
  std::vector<std::string> world_size;  // first present one is used
  std::vector<std::string> local_rank;
  std::vector<std::string> local_size;
};

const std::vector<Source>& sources() {
  static const std::vector<Source> kSources = {
      {"openmpi",
       {"OMPI_COMM_WORLD_RANK"},
       {"OMPI_COMM_WORLD_SIZE"},
       {"OMPI_COMM_WORLD_LOCAL_RANK"},
       {"OMPI_COMM_WORLD_LOCAL_SIZE"}},
      {"pmi", {"PMI_RANK"}, {"PMI_SIZE"}, {"MPI_LOCALRANKID"}, {"MPI_LOCALNRANKS"}},
      {"slurm",
       {"SLURM_PROCID"},
       {"SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"},
       {"SLURM_LOCALID"},
       {"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE"}},
      {"torchrun", {"RANK"}, {"WORLD_SIZE"}, {"LOCAL_RANK"}, {"LOCAL_WORLD_SIZE"}},
  };
  return kSources;
}

// The first of `names` set in `env`, or nullptr.
const std::string* first_present(const Env& env, const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    if (find(env, name)) return &name;
  }
  return nullptr;
}

RankEnv parse_source(const Env& env, const Source& source, const std::string& rank_var,
                     const std::string& size_var, const std::string& local_rank_var,
                     const std::string& local_size_var) {
  RankEnv out;
  out.source = source.name;
  out.rank = parse_var(env, rank_var);
  out.world_size = parse_var(env, size_var);
  out.local_rank = parse_var(env, local_rank_var);
  if (std::string(source.name) == "slurm" && local_size_var != "SLURM_NTASKS_PER_NODE") {
    std::optional<int> node_id;
    if (find(env, "SLURM_NODEID")) node_id = parse_var(env, "SLURM_NODEID");
    out.local_size = slurm_tasks_on_node(local_size_var, *find(env, local_size_var), node_id);
  } else {
    out.local_size = parse_var(env, local_size_var);
  }
  auto value = [&](const std::string& name) { return *find(env, name); };
  DTRAIN_CHECK(out.world_size >= 1, "inconsistent rank environment ({}): {}={} must be >= 1",
               source.name, size_var, value(size_var));
  DTRAIN_CHECK(out.rank < out.world_size,
               "inconsistent rank environment ({}): {}={} is not below {}={}", source.name,
               rank_var, value(rank_var), size_var, value(size_var));
  DTRAIN_CHECK(out.local_size >= 1 && out.local_size <= out.world_size,
               "inconsistent rank environment ({}): {}='{}' gives {} ranks on this node, "
               "expected 1 to {}={}",
               source.name, local_size_var, value(local_size_var), out.local_size, size_var,
               value(size_var));
  DTRAIN_CHECK(out.local_rank < out.local_size,
               "inconsistent rank environment ({}): {}={} is not below the {} ranks on this "
               "node ({}='{}')",
               source.name, local_rank_var, value(local_rank_var), out.local_size, local_size_var,
               value(local_size_var));
  return out;
}

}  // namespace

std::optional<RankEnv> rank_env_from(const std::map<std::string, std::string>& env) {
  std::vector<std::string> partial;
  for (const Source& source : sources()) {
    const std::string* rank_var = first_present(env, source.rank);
    if (!rank_var) continue;
    const std::string* size_var = first_present(env, source.world_size);
    const std::string* local_rank_var = first_present(env, source.local_rank);
    const std::string* local_size_var = first_present(env, source.local_size);
    if (size_var && local_rank_var && local_size_var) {
      return parse_source(env, source, *rank_var, *size_var, *local_rank_var, *local_size_var);
    }
    std::vector<std::string> missing;
    for (const auto* group : {&source.world_size, &source.local_rank, &source.local_size}) {
      if (!first_present(env, *group))
        missing.push_back(fmt::format("{}", fmt::join(*group, " or ")));
    }
    partial.push_back(fmt::format("{} ({} is set but {} is not)", source.name, *rank_var,
                                  fmt::join(missing, ", ")));
  }
  DTRAIN_CHECK(partial.empty(),
               "incomplete rank environment: {}; set the missing variables or unset the "
               "partial ones",
               fmt::join(partial, "; "));
  return std::nullopt;
}

std::optional<RankEnv> rank_env_from_process() {
  Env env;
  for (char** entry = environ; entry && *entry; ++entry) {
    std::string_view text(*entry);
    const size_t eq = text.find('=');
    if (eq == std::string_view::npos) continue;
    env.emplace(std::string(text.substr(0, eq)), std::string(text.substr(eq + 1)));
  }
  return rank_env_from(env);
}

int select_cuda_device(int local_rank, int visible_gpus) {
  DTRAIN_CHECK(local_rank >= 0, "invalid local rank {}: must be >= 0", local_rank);
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  const std::string visible_text = visible ? visible : "<unset>";
  DTRAIN_CHECK(visible_gpus > 0,
               "rank has local rank {} but no GPUs are visible (CUDA_VISIBLE_DEVICES={}); "
               "use MODEL.DEVICE cpu or make GPUs visible",
               local_rank, visible_text);
  // Exactly one visible GPU: the launcher bound this process to it (srun --gpus-per-task=1
  // or --gpu-bind, a CUDA_VISIBLE_DEVICES=$LOCAL_RANK wrapper), whatever its local rank.
  if (visible_gpus == 1) return 0;
  DTRAIN_CHECK(local_rank < visible_gpus,
               "rank has local rank {} but only {} {} visible (CUDA_VISIBLE_DEVICES={}); start "
               "at most {} ranks per node or make more GPUs visible",
               local_rank, visible_gpus, visible_gpus == 1 ? "GPU is" : "GPUs are", visible_text,
               visible_gpus);
  return local_rank;
}

}  // namespace dtrain::dist
