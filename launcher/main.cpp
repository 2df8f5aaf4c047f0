// The dtrain executable: parses the command line and dispatches to subcommands.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "launcher/ckpt_command.h"
#include "launcher/launch_command.h"
#include "launcher/train_command.h"
#include "runtime/base/config.h"
#include "runtime/base/error.h"

int main(int argc, char** argv) {
  // `dtrain ckpt ...` parses its own sub-subcommands (launcher/ckpt_command.h); local
  // tools, no MPI.
  if (argc >= 2 && std::string(argv[1]) == "ckpt") {
    return dtrain::launcher::run_ckpt(std::vector<std::string>(argv + 2, argv + argc), std::cout,
                                      std::cerr);
  }
  CLI::App app{"dtrain: data-parallel LibTorch training with sharded HDF5 checkpoints"};
  app.require_subcommand(1);
  // Listed for --help only; dispatched above.
  app.add_subcommand("ckpt", "inspect|verify|diff|export|import checkpoints (dtrain ckpt --help)");

  dtrain::launcher::TrainOptions train;
  bool help_config = false;
  CLI::App* train_cmd = app.add_subcommand("train", "train (or evaluate) a model from a config");
  train_cmd->add_option("--config-file", train.config_file, "YAML config file (with _BASE_)");
  train_cmd->add_flag("--resume", train.resume,
                      "resume from OUTPUT_DIR/last_checkpoint (else start from MODEL.WEIGHTS)");
  train_cmd->add_flag("--eval-only", train.eval_only, "only evaluate on DATASETS.TEST");
  train_cmd->add_flag("--help-config", help_config,
                      "print every config key with its type, default, doc and allowed range, "
                      "then exit");
  // detectron2's train_net.py launcher flags (launcher/train_flags.h).
  train_cmd->add_option("--num-gpus", train.num_gpus,
                        "ranks to run on this machine, one per GPU (or CPU slot): the same as "
                        "dtrain launch --nproc-per-node N -- train ...")
      ->capture_default_str();
  train_cmd->add_option("--num-machines", train.num_machines,
                        "detectron2's; dtrain starts all machines with one command (dtrain "
                        "launch --nnodes/--hostfile, mpirun, srun): > 1 is refused with advice")
      ->capture_default_str();
  train_cmd->add_option("--machine-rank", train.machine_rank,
                        "detectron2's; only 0 without a launcher (see --num-machines)")
      ->capture_default_str();
  train_cmd->add_option("--dist-url", train.dist_url,
                        "detectron2's; ignored with a note (ranks meet through MPI)");
  // Overrides are taken raw (CLI11 would reinterpret values such as "[]" or "-1").
  train_cmd->allow_extras();
  train_cmd->footer("Config overrides follow as KEY VALUE pairs, e.g. SOLVER.BASE_LR 0.1 "
                    "SOLVER.STEPS \"(10, 30)\"; values are parsed as YAML.");

  dtrain::launcher::LaunchOptions launch;
  CLI::App* launch_cmd = app.add_subcommand(
      "launch", "build, print and run the mpirun command for a job, restarting it on failure");
  launch_cmd->add_option("--nproc-per-node", launch.nproc_per_node,
                         "ranks per node: one per GPU, or per CPU slot")
      ->capture_default_str();
  launch_cmd->add_option("--nnodes", launch.nnodes, "number of nodes")->capture_default_str();
  launch_cmd->add_option("--hostfile", launch.hostfile, "Open MPI hostfile (node slots=N)");
  launch_cmd->add_option("--max-restarts", launch.max_restarts,
                         "relaunch a failed or preempted run with --resume up to K times")
      ->capture_default_str();
  launch_cmd->add_option("--restart-backoff", launch.restart_backoff_s,
                         "seconds before the first restart (doubles each time, max 60)")
      ->capture_default_str();
  launch_cmd->add_option("--bind-to", launch.bind_to,
                         "auto (cores per rank when they fit, else none), core, socket, none")
      ->capture_default_str();
  launch_cmd->add_option("--mpirun", launch.mpirun, "mpirun binary (env DTRAIN_MPIRUN overrides)")
      ->capture_default_str();
  launch_cmd->add_option("--mpi-arg", launch.mpi_args, "extra argument for mpirun (repeatable)")
      ->allow_extra_args(false);
  launch_cmd->add_flag("--dry-run", launch.dry_run, "only print the command");
  launch_cmd->add_option("command", launch.train_args, "-- train ARGS...")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : dtrain::launcher::kExitUsage;
  }
  if (*train_cmd) {
    train.overrides = train_cmd->remaining();
    if (help_config) {
      std::fputs(dtrain::Config::help_text().c_str(), stdout);
      return 0;
    }
    return dtrain::launcher::run_train_command(train, &argc, &argv);
  }
  if (*launch_cmd) {
    try {
      return dtrain::launcher::run_launch(launch);
    } catch (const dtrain::ConfigError& e) {
      std::fprintf(stderr, "dtrain launch: %s\n", e.what());
      return dtrain::launcher::kExitUsage;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "dtrain launch: %s\n", e.what());
      return dtrain::launcher::kExitError;
    }
  }
  return dtrain::launcher::kExitUsage;
}
