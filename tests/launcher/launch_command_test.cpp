// Unit tests of `dtrain launch`'s command construction (build_mpirun_command, with_resume,
// physical_core_count) and of the preemption signal names (signal_from_name).
#include "launcher/launch_command.h"

#include <signal.h>

#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/base/error.h"
#include "runtime/engine/preemption.h"
#include "tests/test_util.h"

namespace dtrain::launcher {
namespace {

using Args = std::vector<std::string>;

const Args kTrain = {"train", "--config-file", "configs/mlp_synthetic.yaml", "SOLVER.MAX_ITER",
                     "10"};

LaunchOptions options(int nproc, int nnodes = 1) {
  LaunchOptions o;
  o.nproc_per_node = nproc;
  o.nnodes = nnodes;
  o.train_args = kTrain;
  return o;
}

LaunchContext context(int cores, bool root = false,
                      std::map<std::string, std::string> env = {}) {
  LaunchContext c;
  c.is_root = root;
  c.cores_per_node = cores;
  c.dtrain_exe = "/opt/dtrain/bin/dtrain";
  c.env = std::move(env);
  return c;
}

// argv = prefix + ["/opt/dtrain/bin/dtrain"] + kTrain.
Args with_train(Args prefix) {
  prefix.push_back("/opt/dtrain/bin/dtrain");
  prefix.insert(prefix.end(), kTrain.begin(), kTrain.end());
  return prefix;
}

// The message of the ConfigError build_mpirun_command throws ("" if none).
std::string config_error(const LaunchOptions& o, const LaunchContext& c) {
  try {
    build_mpirun_command(o, c);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

using testutil::TempDir;

TEST(BuildMpirunCommand, OneNodeBindsCoresAndSplitsThemOverTheRanks) {
  const MpirunCommand cmd = build_mpirun_command(options(2), context(8));
  EXPECT_EQ(cmd.argv, with_train({"mpirun", "-np", "2", "--map-by", "ppr:2:node:PE=4",
                                  "--bind-to", "core", "-x", "OMP_NUM_THREADS=4"}));
  EXPECT_TRUE(cmd.env.empty());
  EXPECT_EQ(cmd.to_string(),
            "mpirun -np 2 --map-by ppr:2:node:PE=4 --bind-to core -x OMP_NUM_THREADS=4 "
            "/opt/dtrain/bin/dtrain train --config-file configs/mlp_synthetic.yaml "
            "SOLVER.MAX_ITER 10");
}

TEST(BuildMpirunCommand, CoresThatDoNotDivideEvenlyRoundDown) {
  const MpirunCommand cmd = build_mpirun_command(options(3), context(8));
  EXPECT_EQ(cmd.argv, with_train({"mpirun", "-np", "3", "--map-by", "ppr:3:node:PE=2",
                                  "--bind-to", "core", "-x", "OMP_NUM_THREADS=2"}));
}

TEST(BuildMpirunCommand, OneRankPerCoreIsNotOversubscribed) {
  const MpirunCommand cmd = build_mpirun_command(options(4), context(4));
  EXPECT_EQ(cmd.argv, with_train({"mpirun", "-np", "4", "--map-by", "ppr:4:node:PE=1",
                                  "--bind-to", "core", "-x", "OMP_NUM_THREADS=1"}));
}

TEST(BuildMpirunCommand, MoreRanksThanCoresOversubscribesWithoutBinding) {
  const MpirunCommand cmd = build_mpirun_command(options(4), context(2));
  EXPECT_EQ(cmd.argv, with_train({"mpirun", "-np", "4", "--map-by", "ppr:4:node", "--bind-to",
                                  "none", "--oversubscribe", "--mca", "mpi_yield_when_idle",
                                  "1", "-x", "OMP_NUM_THREADS=1"}));
}

TEST(BuildMpirunCommand, ExplicitCoreBindingWhenOversubscribedAllowsOverload) {
  LaunchOptions o = options(4);
  o.bind_to = "core";
  const MpirunCommand cmd = build_mpirun_command(o, context(2));
  EXPECT_EQ(cmd.argv, with_train({"mpirun", "-np", "4", "--map-by", "ppr:4:node:PE=1",
                                  "--bind-to", "core:overload-allowed", "--oversubscribe",
                                  "--mca", "mpi_yield_when_idle", "1", "-x",
                                  "OMP_NUM_THREADS=1"}));
}

TEST(BuildMpirunCommand, ExplicitNoneAndSocketBinding) {
  LaunchOptions o = options(2);
  o.bind_to = "none";
  EXPECT_EQ(build_mpirun_command(o, context(8)).argv,
            with_train({"mpirun", "-np", "2", "--map-by", "ppr:2:node", "--bind-to", "none", "-x",
                        "OMP_NUM_THREADS=4"}));
  o.bind_to = "socket";
  EXPECT_EQ(build_mpirun_command(o, context(8)).argv,
            with_train({"mpirun", "-np", "2", "--map-by", "ppr:2:node", "--bind-to", "socket",
                        "-x", "OMP_NUM_THREADS=4"}));
}

TEST(BuildMpirunCommand, RootGetsTheRunAsRootVariablesAndOnlyRoot) {
  const MpirunCommand root = build_mpirun_command(options(2), context(8, /*root=*/true));
  EXPECT_EQ(root.env, (std::map<std::string, std::string>{{"OMPI_ALLOW_RUN_AS_ROOT", "1"},
                                                          {"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"}}));
  EXPECT_EQ(root.to_string().rfind(
                "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np 2 ", 0),
            0u)
      << root.to_string();
  // Not root: nothing is set, even when the launcher's own environment has them.
  const MpirunCommand user = build_mpirun_command(
      options(2), context(8, /*root=*/false, {{"OMPI_ALLOW_RUN_AS_ROOT", "1"}}));
  EXPECT_TRUE(user.env.empty());
  EXPECT_EQ(user.argv, with_train({"mpirun", "-np", "2", "--map-by", "ppr:2:node:PE=4",
                                   "--bind-to", "core", "-x", "OMP_NUM_THREADS=4"}));
}

TEST(BuildMpirunCommand, ForwardsTheRuntimeVariablesByName) {
  const std::map<std::string, std::string> env = {
      {"DTRAIN_FAULT", "train.after_step"},
      {"NCCL_DEBUG", "INFO"},
      {"CUDA_VISIBLE_DEVICES", "0,1"},
      {"HDF5_USE_FILE_LOCKING", "FALSE"},
      {"OMP_PROC_BIND", "close"},
      {"MKL_NUM_THREADS", "2"},
      {"PATH", "/usr/bin"},
      {"LD_LIBRARY_PATH", "/opt/lib"},
      {"HOME", "/root"},             // not forwarded
      {"SLURM_JOB_ID", "42"},        // not forwarded (mpirun reads the allocation itself)
      {"MY_DTRAIN_X", "1"},          // prefix must match at the start
      {"XDTRAIN_Y", "1"},
  };
  const MpirunCommand cmd = build_mpirun_command(options(2), context(8, false, env));
  // std::map order: upper-case names sorted.
  EXPECT_EQ(cmd.argv,
            with_train({"mpirun", "-np", "2", "--map-by", "ppr:2:node:PE=4", "--bind-to", "core",
                        "-x", "OMP_NUM_THREADS=4", "-x", "CUDA_VISIBLE_DEVICES", "-x",
                        "DTRAIN_FAULT", "-x", "HDF5_USE_FILE_LOCKING", "-x", "LD_LIBRARY_PATH",
                        "-x", "MKL_NUM_THREADS", "-x", "NCCL_DEBUG", "-x", "OMP_PROC_BIND", "-x",
                        "PATH"}));
}

TEST(BuildMpirunCommand, OmpNumThreadsFromTheEnvironmentWins) {
  const MpirunCommand cmd =
      build_mpirun_command(options(2), context(8, false, {{"OMP_NUM_THREADS", "3"}}));
  EXPECT_EQ(cmd.argv, with_train({"mpirun", "-np", "2", "--map-by", "ppr:2:node:PE=4",
                                  "--bind-to", "core", "-x", "OMP_NUM_THREADS=3"}));
}

TEST(BuildMpirunCommand, SeveralNodesWithAHostfile) {
  TempDir tmp;
  const std::string hosts = tmp.write("hosts", "node1 slots=4\nnode2 slots=4\n");
  LaunchOptions o = options(4, /*nnodes=*/2);
  o.hostfile = hosts;
  o.mpi_args = {"--mca", "btl_tcp_if_include", "eth0"};
  const MpirunCommand cmd = build_mpirun_command(o, context(16, true));
  EXPECT_EQ(cmd.argv,
            with_train({"mpirun", "-np", "8", "--map-by", "ppr:4:node:PE=4", "--bind-to", "core",
                        "--hostfile", hosts, "-x", "OMP_NUM_THREADS=4", "--mca",
                        "btl_tcp_if_include", "eth0"}));
}

TEST(BuildMpirunCommand, SeveralNodesInsideASchedulerAllocationNeedNoHostfile) {
  for (const char* var : {"SLURM_JOB_ID", "PBS_NODEFILE"}) {
    const MpirunCommand cmd =
        build_mpirun_command(options(2, /*nnodes=*/3), context(4, false, {{var, "x"}}));
    EXPECT_EQ(cmd.argv, with_train({"mpirun", "-np", "6", "--map-by", "ppr:2:node:PE=2",
                                    "--bind-to", "core", "-x", "OMP_NUM_THREADS=2"}))
        << var;
  }
}

TEST(BuildMpirunCommand, OtherMpirunBinaryAndQuotingInToString) {
  LaunchOptions o = options(1);
  o.mpirun = "/opt/openmpi/bin/mpirun";
  o.train_args = {"train", "--config-file", "my configs/a.yaml", "OUTPUT_DIR", "it's"};
  const MpirunCommand cmd = build_mpirun_command(o, context(1));
  EXPECT_EQ(cmd.to_string(),
            "/opt/openmpi/bin/mpirun -np 1 --map-by ppr:1:node:PE=1 --bind-to core -x "
            "OMP_NUM_THREADS=1 /opt/dtrain/bin/dtrain train --config-file 'my configs/a.yaml' "
            "OUTPUT_DIR 'it'\\''s'");
}

TEST(BuildMpirunCommand, InvalidOptionsNameTheFlag) {
  const LaunchContext c = context(4);
  auto expect_error = [&](const LaunchOptions& o, const std::string& message) {
    const std::string got = config_error(o, c);
    EXPECT_NE(got.find(message), std::string::npos) << "got: '" << got << "'";
  };
  expect_error(options(0), "--nproc-per-node must be >= 1, got 0");
  expect_error(options(-2), "--nproc-per-node must be >= 1, got -2");
  expect_error(options(1, 0), "--nnodes must be >= 1, got 0");
  expect_error(options(1, 2),
               "--nnodes 2 needs --hostfile (or a SLURM/PBS allocation that mpirun reads)");
  LaunchOptions o = options(1);
  o.max_restarts = -1;
  expect_error(o, "--max-restarts must be >= 0, got -1");
  o = options(1);
  o.restart_backoff_s = -0.5;
  expect_error(o, "--restart-backoff must be >= 0 seconds, got -0.5");
  o = options(1);
  o.train_args = {};
  expect_error(o, "expected the command to launch after '--', starting with 'train'");
  o.train_args = {"--config-file", "a.yaml"};
  expect_error(o, "expected the command to launch after '--', starting with 'train'");
  o = options(1);
  o.bind_to = "hwthread";
  expect_error(o, "--bind-to must be auto, core, socket or none, got 'hwthread'");
  o = options(1, 2);
  o.hostfile = "/nonexistent/dtrain-hosts";
  expect_error(o, "--hostfile '/nonexistent/dtrain-hosts' does not exist");
}

TEST(WithResume, InsertsAfterTrainOnceAndIsIdempotent) {
  const Args once = with_resume(kTrain);
  EXPECT_EQ(once, (Args{"train", "--resume", "--config-file", "configs/mlp_synthetic.yaml",
                        "SOLVER.MAX_ITER", "10"}));
  EXPECT_EQ(with_resume(once), once);
  const Args already = {"train", "--config-file", "a.yaml", "--resume"};
  EXPECT_EQ(with_resume(already), already);
  EXPECT_EQ(with_resume({"train"}), (Args{"train", "--resume"}));
}

TEST(PhysicalCoreCount, HyperthreadsOfOneCoreCountOnce) {
  TempDir tmp;
  // cpu0/cpu2 and cpu1/cpu3 are siblings on package 0; cpu4 is core 0 of package 1 (the
  // same core_id on another package is another core); cpu5 has no topology.
  const int topo[][3] = {{0, 0, 0}, {1, 0, 1}, {2, 0, 0}, {3, 0, 1}, {4, 1, 0}};
  for (const auto& [cpu, package, core] : topo) {
    const std::string topology = "cpu" + std::to_string(cpu) + "/topology/";
    tmp.write(topology + "physical_package_id", std::to_string(package) + "\n");
    tmp.write(topology + "core_id", std::to_string(core) + "\n");
  }
  const std::string root = tmp.path();
  EXPECT_EQ(physical_core_count({0, 1, 2, 3}, root), 2);
  EXPECT_EQ(physical_core_count({0, 2}, root), 1);
  EXPECT_EQ(physical_core_count({0, 1, 2, 3, 4}, root), 3);
  EXPECT_EQ(physical_core_count({0, 4, 5}, root), 3);
  EXPECT_EQ(physical_core_count({}, root), 1);
  // This machine: at least one core, at most one per logical CPU.
  const int here = physical_core_count({0});
  EXPECT_EQ(here, 1);
}

TEST(SignalFromName, AcceptsNamesWithAndWithoutSigAnyCase) {
  EXPECT_EQ(engine::signal_from_name("SIGTERM"), SIGTERM);
  EXPECT_EQ(engine::signal_from_name("TERM"), SIGTERM);
  EXPECT_EQ(engine::signal_from_name("SIGUSR1"), SIGUSR1);
  EXPECT_EQ(engine::signal_from_name("USR1"), SIGUSR1);
  EXPECT_EQ(engine::signal_from_name("usr1"), SIGUSR1);
  EXPECT_EQ(engine::signal_from_name("SigUsr2"), SIGUSR2);
  EXPECT_EQ(engine::signal_from_name("SIGINT"), SIGINT);
  EXPECT_EQ(engine::signal_from_name("HUP"), SIGHUP);
  EXPECT_EQ(engine::signal_from_name("SIGQUIT"), SIGQUIT);
  EXPECT_EQ(engine::signal_from_name("XCPU"), SIGXCPU);
}

TEST(SignalFromName, UnknownOrUncatchableIsAConfigErrorNamingTheKey) {
  for (const char* bad : {"SIGKILL", "STOP", "SIGTERMX", "", "15"}) {
    try {
      engine::signal_from_name(bad);
      ADD_FAILURE() << "no error for '" << bad << "'";
    } catch (const ConfigError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("CHECKPOINT.PREEMPT_SIGNALS: unknown or unsupported signal '" +
                         std::string(bad) + "'"),
                std::string::npos)
          << msg;
      EXPECT_NE(msg.find("SIGTERM, SIGINT, SIGUSR1"), std::string::npos) << msg;
    }
  }
}

}  // namespace
}  // namespace dtrain::launcher
