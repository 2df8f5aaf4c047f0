// `dtrain ckpt import --config-file F`: the foreign file is loaded into the dtrain model,
// optimizer and LR scheduler that F describes, exactly as a training run would load it
// (checkpoint::apply_foreign_weights), and their state becomes the checkpoint's. This is
// what maps a PyTorch optimizer's parameter numbers onto dtrain's parameter names.
#include <fmt/format.h>

#include "checkpoint/foreign_load.h"
#include "checkpoint/interop/weights.h"
#include "checkpoint/module_state.h"
#include "launcher/ckpt_command.h"
#include "models/model.h"
#include "runtime/base/config.h"
#include "runtime/base/error.h"
#include "runtime/optim/optim.h"
#include "runtime/optim/optimizer_state.h"

namespace dtrain::launcher {

StateDict import_with_model(const ImportOptions& options, std::ostream& out,
                                        std::string* config_yaml) {
  const Config cfg = Config::from_file(options.config_file);
  auto model = models::build_model(cfg);
  auto optimizer = optim::build_optimizer(cfg, model->named_parameters());
  optim::OptimizerState optimizer_state(*optimizer, model->named_parameters());
  auto scheduler = optim::build_lr_scheduler(cfg, *optimizer);
  const interop::ForeignWeights w = interop::read_foreign_weights(options.path);
  checkpoint::ForeignLoadOptions load_options;
  load_options.strict = cfg.get_bool("CHECKPOINT.STRICT");
  load_options.heuristics = cfg.get_bool("CHECKPOINT.MATCHING_HEURISTICS");
  const checkpoint::ForeignLoadReport report = checkpoint::apply_foreign_weights(
      w, *model, {{"optimizer", &optimizer_state}, {"scheduler", scheduler.get()}}, load_options);
  out << fmt::format("Model keys of {} against MODEL.NAME {} of {}:\n{}", options.path,
                     cfg.get_string("MODEL.NAME"), options.config_file, report.match.table());
  StateDict state;
  auto add = [&](const std::string& prefix, const StateDict& s) {
    for (const auto& [k, v] : s) state[prefix + k] = v;
  };
  add("model/", checkpoint::ModuleState(model).state_dict());
  for (const std::string key : {"optimizer", "scheduler"}) {
    auto it = report.states.find(key);
    if (it == report.states.end()) {
      out << fmt::format("{}: '{}' has none\n", key, options.path);
    } else if (!it->second.empty()) {
      out << fmt::format("{}: not imported: {}\n", key, it->second);
    } else {
      out << fmt::format("{}: imported\n", key);
      add(key + "/", key == "optimizer" ? optimizer_state.state_dict() : scheduler->state_dict());
    }
  }
  for (const auto& [k, v] : w.scalars) {
    std::visit([&, key = k](const auto& x) { state.emplace("extra/" + key, x); }, v);
  }
  *config_yaml = cfg.to_yaml();
  return state;
}

}  // namespace dtrain::launcher
