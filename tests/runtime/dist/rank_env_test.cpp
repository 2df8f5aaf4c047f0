// Unit tests of rank/device discovery: every launcher's variables, their priority,
// SLURM per-node lists, incomplete and malformed environments, and GPU selection.
#include "runtime/dist/rank_env.h"

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <string>

#include "runtime/base/error.h"
#include "tests/test_util.h"

namespace dtrain::dist {
namespace {

using Env = std::map<std::string, std::string>;

// The Error message rank_env_from(env) throws ("" if none).
std::string env_error(const Env& env) {
  try {
    rank_env_from(env);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_env(const std::optional<RankEnv>& got, int rank, int world_size, int local_rank,
                int local_size, const std::string& source) {
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->rank, rank);
  EXPECT_EQ(got->world_size, world_size);
  EXPECT_EQ(got->local_rank, local_rank);
  EXPECT_EQ(got->local_size, local_size);
  EXPECT_EQ(got->source, source);
}

const Env kOpenMpi = {{"OMPI_COMM_WORLD_RANK", "5"},
                      {"OMPI_COMM_WORLD_SIZE", "8"},
                      {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                      {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}};
const Env kPmi = {
    {"PMI_RANK", "2"}, {"PMI_SIZE", "6"}, {"MPI_LOCALRANKID", "0"}, {"MPI_LOCALNRANKS", "3"}};
const Env kSlurm = {{"SLURM_PROCID", "6"},
                    {"SLURM_NTASKS", "8"},
                    {"SLURM_LOCALID", "2"},
                    {"SLURM_NODEID", "1"},
                    {"SLURM_TASKS_PER_NODE", "4(x2)"}};
const Env kTorchrun = {
    {"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"}};

Env merge(std::initializer_list<Env> envs) {
  Env out;
  for (const Env& env : envs) out.insert(env.begin(), env.end());
  return out;
}

TEST(RankEnv, NoLauncherGivesNullopt) {
  EXPECT_FALSE(rank_env_from({}).has_value());
  EXPECT_FALSE(rank_env_from({{"HOME", "/root"}, {"PATH", "/bin"}}).has_value());
}

TEST(RankEnv, EachLauncher) {
  expect_env(rank_env_from(kOpenMpi), 5, 8, 1, 4, "openmpi");
  expect_env(rank_env_from(kPmi), 2, 6, 0, 3, "pmi");
  expect_env(rank_env_from(kSlurm), 6, 8, 2, 4, "slurm");
  expect_env(rank_env_from(kTorchrun), 3, 4, 1, 2, "torchrun");
}

TEST(RankEnv, PriorityOrder) {
  expect_env(rank_env_from(merge({kOpenMpi, kPmi, kSlurm, kTorchrun})), 5, 8, 1, 4, "openmpi");
  expect_env(rank_env_from(merge({kPmi, kSlurm, kTorchrun})), 2, 6, 0, 3, "pmi");
  expect_env(rank_env_from(merge({kSlurm, kTorchrun})), 6, 8, 2, 4, "slurm");
}

TEST(RankEnv, IncompleteHigherSourceFallsThrough) {
  // srun --mpi=pmi2 sets PMI_RANK/PMI_SIZE but not MPI_LOCALRANKID: SLURM's variables win.
  Env env = merge({kSlurm, {{"PMI_RANK", "6"}, {"PMI_SIZE", "8"}}});
  expect_env(rank_env_from(env), 6, 8, 2, 4, "slurm");
}

TEST(RankEnv, IncompleteOnlyIsAnErrorNamingTheMissingVariables) {
  std::string message = env_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "0"}});
  EXPECT_NE(message.find("torchrun"), std::string::npos) << message;
  EXPECT_NE(message.find("LOCAL_WORLD_SIZE"), std::string::npos) << message;
  message = env_error({{"OMPI_COMM_WORLD_RANK", "1"}});
  EXPECT_NE(message.find("OMPI_COMM_WORLD_SIZE"), std::string::npos) << message;
  EXPECT_NE(message.find("OMPI_COMM_WORLD_LOCAL_RANK"), std::string::npos) << message;
  EXPECT_NE(message.find("OMPI_COMM_WORLD_LOCAL_SIZE"), std::string::npos) << message;
  message = env_error({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"}});
  EXPECT_NE(message.find("SLURM_TASKS_PER_NODE"), std::string::npos) << message;
}

TEST(RankEnv, SlurmPerNodeLists) {
  Env env = {{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "5"}, {"SLURM_LOCALID", "0"}};
  auto with = [&](Env extra) { return merge({extra, env}); };
  expect_env(rank_env_from(with({{"SLURM_TASKS_PER_NODE", "5"}})), 0, 5, 0, 5, "slurm");
  // "2,1(x2)": node 0 has 2 tasks, nodes 1 and 2 have 1 each.
  expect_env(rank_env_from(with({{"SLURM_TASKS_PER_NODE", "2,1(x2)"}, {"SLURM_NODEID", "0"}})), 0,
             5, 0, 2, "slurm");
  expect_env(rank_env_from(with({{"SLURM_TASKS_PER_NODE", "2,1(x2)"}, {"SLURM_NODEID", "2"}})), 0,
             5, 0, 1, "slurm");
  expect_env(rank_env_from(with({{"SLURM_TASKS_PER_NODE", "3(x1),2"}, {"SLURM_NODEID", "1"}})), 0,
             5, 0, 2, "slurm");
  // A uniform list needs no node id.
  expect_env(rank_env_from(with({{"SLURM_TASKS_PER_NODE", "2(x2),2"}})), 0, 5, 0, 2, "slurm");
  // --ntasks-per-node.
  expect_env(rank_env_from(with({{"SLURM_NTASKS_PER_NODE", "4"}})), 0, 5, 0, 4, "slurm");
}

TEST(RankEnv, SlurmPrefersStepVariables) {
  Env env = {{"SLURM_PROCID", "1"},
             {"SLURM_NTASKS", "16"},
             {"SLURM_STEP_NUM_TASKS", "4"},
             {"SLURM_LOCALID", "1"},
             {"SLURM_NODEID", "0"},
             {"SLURM_NTASKS_PER_NODE", "8"},
             {"SLURM_TASKS_PER_NODE", "8(x2)"},
             {"SLURM_STEP_TASKS_PER_NODE", "2(x2)"}};
  expect_env(rank_env_from(env), 1, 4, 1, 2, "slurm");
  env.erase("SLURM_STEP_TASKS_PER_NODE");
  env.erase("SLURM_STEP_NUM_TASKS");
  expect_env(rank_env_from(env), 1, 16, 1, 8, "slurm");
  // SLURM_TASKS_PER_NODE (what the allocation really has) outranks the requested
  // --ntasks-per-node.
  env["SLURM_TASKS_PER_NODE"] = "6,2";
  expect_env(rank_env_from(env), 1, 16, 1, 6, "slurm");
}

TEST(RankEnv, SlurmMalformedLists) {
  Env env = {{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "0"}};
  for (const char* bad : {"", "4(x)", "4(2)", "x4", "4(x2", "4,,2", "4(x0)", "-1", "4 (x2)"}) {
    Env e = env;
    e["SLURM_TASKS_PER_NODE"] = bad;
    e["SLURM_NODEID"] = "0";
    std::string message = env_error(e);
    EXPECT_NE(message.find("SLURM_TASKS_PER_NODE"), std::string::npos)
        << "'" << bad << "': " << message;
  }
  Env e = env;
  e["SLURM_TASKS_PER_NODE"] = "3,1";
  std::string message = env_error(e);
  EXPECT_NE(message.find("SLURM_NODEID"), std::string::npos) << message;
  e["SLURM_NODEID"] = "2";
  message = env_error(e);
  EXPECT_NE(message.find("SLURM_NODEID=2"), std::string::npos) << message;
  e["SLURM_NODEID"] = "one";
  message = env_error(e);
  EXPECT_NE(message.find("SLURM_NODEID='one'"), std::string::npos) << message;
}

TEST(RankEnv, MalformedValuesNameTheVariable) {
  const std::pair<const char*, const char*> cases[] = {
      {"OMPI_COMM_WORLD_RANK", "abc"},      {"OMPI_COMM_WORLD_SIZE", ""},
      {"OMPI_COMM_WORLD_LOCAL_RANK", "-1"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2x"},
      {"OMPI_COMM_WORLD_RANK", " 5"},       {"OMPI_COMM_WORLD_SIZE", "99999999999"},
      {"OMPI_COMM_WORLD_RANK", "1.0"}};
  for (const auto& [name, value] : cases) {
    Env env = kOpenMpi;
    env[name] = value;
    std::string message = env_error(env);
    EXPECT_NE(message.find(std::string(name) + "='" + value + "'"), std::string::npos)
        << name << ": " << message;
  }
  // A malformed complete source does not silently fall through to the next one.
  Env env = merge({kOpenMpi, kTorchrun});
  env["OMPI_COMM_WORLD_RANK"] = "x";
  EXPECT_NE(env_error(env).find("OMPI_COMM_WORLD_RANK"), std::string::npos);
  env = kTorchrun;
  env["LOCAL_RANK"] = "";
  EXPECT_NE(env_error(env).find("LOCAL_RANK=''"), std::string::npos);
}

TEST(RankEnv, InconsistentValues) {
  Env env = kTorchrun;
  env["RANK"] = "4";  // == WORLD_SIZE
  std::string message = env_error(env);
  EXPECT_NE(message.find("RANK=4"), std::string::npos) << message;
  EXPECT_NE(message.find("WORLD_SIZE=4"), std::string::npos) << message;
  env = kTorchrun;
  env["WORLD_SIZE"] = "0";
  env["RANK"] = "0";
  EXPECT_NE(env_error(env).find("WORLD_SIZE=0"), std::string::npos);
  env = kTorchrun;
  env["LOCAL_RANK"] = "2";  // == LOCAL_WORLD_SIZE
  EXPECT_NE(env_error(env).find("LOCAL_RANK=2"), std::string::npos);
  env = kTorchrun;
  env["LOCAL_WORLD_SIZE"] = "5";  // > WORLD_SIZE
  EXPECT_NE(env_error(env).find("LOCAL_WORLD_SIZE"), std::string::npos);
  env = kTorchrun;
  env["LOCAL_WORLD_SIZE"] = "0";
  EXPECT_NE(env_error(env).find("LOCAL_WORLD_SIZE"), std::string::npos);
}

TEST(RankEnv, FromProcessReadsEnviron) {
  // Open MPI's variables have the highest priority, so whatever else this process's
  // environment holds, these decide.
  std::optional<RankEnv> got;
  {
    testutil::ScopedEnv rank("OMPI_COMM_WORLD_RANK", "3");
    testutil::ScopedEnv size("OMPI_COMM_WORLD_SIZE", "7");
    testutil::ScopedEnv local_rank("OMPI_COMM_WORLD_LOCAL_RANK", "0");
    testutil::ScopedEnv local_size("OMPI_COMM_WORLD_LOCAL_SIZE", "1");
    got = rank_env_from_process();
  }
  expect_env(got, 3, 7, 0, 1, "openmpi");
}

TEST(SelectCudaDevice, UsesTheLocalRank) {
  EXPECT_EQ(select_cuda_device(0, 1), 0);
  EXPECT_EQ(select_cuda_device(3, 8), 3);
}

TEST(SelectCudaDevice, OneVisibleGpuIsThisRanksWhateverItsLocalRank) {
  // srun --gpus-per-task=1: each task sees only its own GPU, as device 0.
  EXPECT_EQ(select_cuda_device(0, 1), 0);
  EXPECT_EQ(select_cuda_device(3, 1), 0);
}

TEST(SelectCudaDevice, TooFewGpusIsAClearError) {
  std::string message;
  {
    testutil::ScopedEnv visible("CUDA_VISIBLE_DEVICES", "0,1");
    try {
      select_cuda_device(3, 2);
    } catch (const Error& e) {
      message = e.what();
    }
  }
  EXPECT_NE(
      message.find("rank has local rank 3 but only 2 GPUs are visible (CUDA_VISIBLE_DEVICES=0,1)"),
      std::string::npos)
      << message;
  testutil::ScopedEnv unset("CUDA_VISIBLE_DEVICES", std::nullopt);
  message.clear();
  try {
    select_cuda_device(0, 0);
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("no GPUs are visible (CUDA_VISIBLE_DEVICES=<unset>)"), std::string::npos)
      << message;
  EXPECT_THROW(select_cuda_device(-1, 2), Error);
}

}  // namespace
}  // namespace dtrain::dist
