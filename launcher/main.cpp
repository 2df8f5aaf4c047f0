// The dtrain executable: parses the command line and dispatches to subcommands.
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "launcher/train_command.h"
#include "runtime/base/config.h"

int main(int argc, char** argv) {
  CLI::App app{"dtrain: data-parallel LibTorch training with sharded HDF5 checkpoints"};
  app.require_subcommand(1);

  dtrain::launcher::TrainOptions train;
  bool help_config = false;
  CLI::App* train_cmd = app.add_subcommand("train", "train (or evaluate) a model from a config");
  train_cmd->add_option("--config-file", train.config_file, "YAML config file (with _BASE_)");
  train_cmd->add_flag("--resume", train.resume,
                      "resume from OUTPUT_DIR/last_checkpoint (else start from MODEL.WEIGHTS)");
  train_cmd->add_flag("--eval-only", train.eval_only, "only evaluate on DATASETS.TEST");
  train_cmd->add_flag("--help-config", help_config,
                      "print every config key with its type, default and doc, then exit");
  train_cmd->add_option("opts", train.overrides,
                        "config overrides as KEY VALUE pairs, e.g. SOLVER.BASE_LR 0.1");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : dtrain::launcher::kExitUsage;
  }
  if (*train_cmd) {
    if (help_config) {
      std::fputs(dtrain::Config::help_text().c_str(), stdout);
      return 0;
    }
    return dtrain::launcher::run_train(train, &argc, &argv);
  }
  return dtrain::launcher::kExitUsage;
}
