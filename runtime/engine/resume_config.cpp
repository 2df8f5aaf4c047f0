// Config differences on resume (see resume_config.h).
#include "runtime/engine/resume_config.h"

#include <fmt/format.h>

namespace dtrain::engine {

std::string checkpoint_wins_because(const std::string& key) {
  if (key == "SOLVER.BASE_LR") return "the lr is loaded from the optimizer and scheduler state";
  if (key == "SOLVER.MOMENTUM" || key == "SOLVER.NESTEROV" || key == "SOLVER.WEIGHT_DECAY" ||
      key == "SOLVER.BETAS" || key == "SOLVER.EPS") {
    return "loaded from the optimizer's param_groups";
  }
  if (key == "SEED") return "the sampler's order and every RNG state are loaded";
  return "";
}

std::string describe_config_changes(const Config& run, const std::string& saved_yaml,
                                    const std::string& origin) {
  if (saved_yaml.empty()) return "";
  Config saved = Config::defaults();
  try {
    saved.merge_yaml(saved_yaml, origin + "/config.yaml");
  } catch (const std::exception& e) {
    return fmt::format("cannot compare this run's config with the one {} was saved with: {}",
                       origin, e.what());
  }
  const auto differences = saved.diff(run);
  if (differences.empty()) return "";
  std::string out = fmt::format(
      "Resuming from {} with {} config {} from the config it was saved with:", origin,
      differences.size(), differences.size() == 1 ? "key that differs" : "keys that differ");
  for (const auto& d : differences) {
    const std::string why = checkpoint_wins_because(d.key);
    out += fmt::format("\n  {}: {} (checkpoint) vs {} (this run): {}", d.key, d.value,
                       d.other_value,
                       why.empty() ? std::string("this run's value is used")
                                   : "the checkpoint's value wins (" + why + ")");
  }
  return out;
}

}  // namespace dtrain::engine
