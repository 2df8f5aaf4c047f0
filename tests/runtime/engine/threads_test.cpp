// Tests of the intra-op thread count: resolve_threads' order of precedence with made-up
// inputs (independent of the test machine), cgroup cpu.max parsing, and keeping a
// checkpoint's count on resume.
#include "runtime/engine/threads.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include "runtime/base/error.h"
#include "runtime/base/logging.h"
#include "tests/test_util.h"

namespace dtrain::engine {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testutil::TempDir;

ThreadInputs machine(int affinity, double cgroup, int hardware, int local_size) {
  ThreadInputs in;
  in.affinity_cpus = affinity;
  in.cgroup_cpus = cgroup;
  in.hardware_threads = hardware;
  in.local_size = local_size;
  return in;
}

TEST(ResolveThreadsTest, ConfigWinsOverEverything) {
  ThreadInputs in = machine(16, 4, 64, 2);
  in.config = 3;
  in.omp_num_threads = "8";
  const ThreadCount t = resolve_threads(in);
  EXPECT_EQ(t.count, 3);  // per rank as given: not divided among local ranks
  EXPECT_EQ(t.source, ThreadSource::kConfig);
  EXPECT_TRUE(t.chosen());
  EXPECT_EQ(t.detail, "SYSTEM.NUM_THREADS 3");
}

TEST(ResolveThreadsTest, OmpNumThreadsWinsOverTheCpuCount) {
  // train.sbatch exports SLURM_CPUS_PER_TASK this way; dtrain launch passes it with -x.
  ThreadInputs in = machine(16, 0, 64, 4);
  in.omp_num_threads = "6";
  ThreadCount t = resolve_threads(in);
  EXPECT_EQ(t.count, 6);
  EXPECT_EQ(t.source, ThreadSource::kEnv);
  EXPECT_EQ(t.detail, "OMP_NUM_THREADS=6");
  in.omp_num_threads = "5,2";  // nested levels: the first is ours
  EXPECT_EQ(resolve_threads(in).count, 5);
}

TEST(ResolveThreadsTest, InvalidOmpNumThreadsIsIgnoredWithAWarning) {
  for (const char* bad : {"abc", "0", "-2", "1.5", ""}) {
    ThreadInputs in = machine(8, 0, 64, 2);
    in.omp_num_threads = bad;
    const ThreadCount t = resolve_threads(in);
    EXPECT_EQ(t.count, 4) << bad;
    EXPECT_EQ(t.source, ThreadSource::kAffinity) << bad;
    if (*bad) {
      EXPECT_THAT(t.warning, HasSubstr("is not a positive integer; ignored")) << bad;
    }
  }
}

TEST(ResolveThreadsTest, ProcessCpusDividedAmongLocalRanks) {
  // The affinity mask, not the machine.
  ThreadCount t = resolve_threads(machine(8, 0, 128, 2));
  EXPECT_EQ(t.count, 4);
  EXPECT_EQ(t.source, ThreadSource::kAffinity);
  EXPECT_EQ(t.detail, "8 CPUs (CPU affinity) / 2 local ranks");
  EXPECT_FALSE(t.chosen());
  // A cgroup quota below the mask wins (2.5 CPUs: 3 threads' worth of time).
  t = resolve_threads(machine(8, 2.5, 128, 1));
  EXPECT_EQ(t.count, 3);
  EXPECT_EQ(t.source, ThreadSource::kCgroup);
  // ... but not one above it.
  EXPECT_EQ(resolve_threads(machine(8, 32, 128, 1)).source, ThreadSource::kAffinity);
  // Unknown mask: the hardware threads; never below 1.
  t = resolve_threads(machine(0, 0, 6, 1));
  EXPECT_EQ(t.count, 6);
  EXPECT_EQ(t.source, ThreadSource::kHardware);
  EXPECT_EQ(resolve_threads(machine(2, 0, 2, 8)).count, 1);
}

TEST(CgroupCpuLimitTest, ReadsTheSmallestQuotaUpTheHierarchy) {
  TempDir root;
  root.write("cpu.max", "max 100000\n");
  root.write("job/cpu.max", "400000 100000\n");
  root.write("job/step/cpu.max", "max 100000\n");
  EXPECT_DOUBLE_EQ(cgroup_cpu_limit("0::/job/step\n", root.path()), 4.0);
  root.write("job/step/cpu.max", "150000 100000\n");
  EXPECT_DOUBLE_EQ(cgroup_cpu_limit("0::/job/step\n", root.path()), 1.5);
  EXPECT_DOUBLE_EQ(cgroup_cpu_limit("0::/\n", root.path()), 0.0);          // "max"
  EXPECT_DOUBLE_EQ(cgroup_cpu_limit("0::/elsewhere\n", root.path()), 0.0);  // unreadable
  EXPECT_DOUBLE_EQ(cgroup_cpu_limit("1:cpu:/v1/only\n", root.path()), 0.0); // cgroup v1
}

TEST(KeepCheckpointThreadsTest, AnAutomaticCountTakesTheCheckpoints) {
  ThreadCount automatic;
  automatic.count = 2;
  automatic.source = ThreadSource::kAffinity;
  automatic.detail = "2 CPUs (CPU affinity) / 1 local rank";
  set_intra_op_threads(automatic);
  const ThreadCount t = keep_checkpoint_threads(3);
  EXPECT_EQ(t.count, 3);
  EXPECT_EQ(t.source, ThreadSource::kCheckpoint);
  EXPECT_EQ(at::get_num_threads(), 3);
  EXPECT_EQ(current_threads().count, 3);
  // Saved with it again.
  ThreadCountState state;
  EXPECT_EQ(state_int(state.state_dict(), "intra_op_threads", "t"), 3);
}

TEST(KeepCheckpointThreadsTest, AChosenCountIsKeptWithAWarningNamingBoth) {
  ThreadCount chosen;
  chosen.count = 2;
  chosen.source = ThreadSource::kEnv;
  chosen.detail = "OMP_NUM_THREADS=2";
  set_intra_op_threads(chosen);
  log::init(0, 1);  // the rank-tagged logger on stderr
  ::testing::internal::CaptureStderr();
  const ThreadCount t = keep_checkpoint_threads(1);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(t.count, 2);
  EXPECT_EQ(at::get_num_threads(), 2);
  EXPECT_THAT(err, AllOf(HasSubstr("written with 1 intra-op threads per rank, this run uses 2 "
                                   "(OMP_NUM_THREADS=2)"),
                         HasSubstr("no longer bitwise equal")));
  // Equal counts, or no saved count: nothing to say.
  ::testing::internal::CaptureStderr();
  keep_checkpoint_threads(2);
  keep_checkpoint_threads(std::nullopt);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

TEST(ThreadCountStateTest, RoundTrip) {
  ThreadCountState state;
  EXPECT_FALSE(state.saved().has_value());
  state.load_state_dict({{"intra_op_threads", int64_t{7}}});
  EXPECT_EQ(state.saved(), 7);
  EXPECT_THROW(state.load_state_dict({}), Error);
}

}  // namespace
}  // namespace dtrain::engine
