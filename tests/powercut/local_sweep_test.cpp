// Power cuts at every crash point of local snapshots (checkpoint/local_tier.h), in-process
// over a FaultInjectionEnv (fault_env.h): LOCAL.DIR on a disk that keeps only what was
// synced (a node-local NVMe; /dev/shm loses everything anyway). Training takes a local
// snapshot after each of 3 steps with LOCAL.KEEP 1, on 1 rank and on 2 ranks on 2
// "nodes" (buddy replicas). After each cut the durable image must resume from the local
// tier at least the newest snapshot whose commit had returned, bit for bit on every
// rank, and never from a snapshot that was not committed. Both ways of writing a shard
// (LOCAL.WRITE hdf5, and mapped: the third snapshot reuses the first's shard file); on
// 2 ranks also with each snapshot's replicas still in flight while the next one runs
// (commit_local), so that cuts fall between a replica's write, fsync and rename. And
// chained as LOCAL.PERIOD 1 runs them, with LOCAL.KEEP 2 over 4 steps: each snapshot
// commits inside the next one's snapshot_local, before that one's copy, and its prune
// makes the spare that copy goes into (mapped: the fourth reuses the first's file).
#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <string>
#include <vector>

#include "checkpoint/checkpointer.h"
#include "runtime/dist/thread_communicator.h"
#include "tests/checkpoint/test_support.h"
#include "tests/powercut/sweep.h"

namespace dtrain::powercut {
namespace {

using checkpoint::Checkpointer;
using checkpoint::CheckpointerOptions;
using checkpoint::testing::OptKind;
using checkpoint::testing::TrainingState;

constexpr uint64_t kSeed = 11;

// How each snapshot commits: finish_local after it, commit_local after it (its replicas
// in flight while the next step and snapshot run), or inside the next snapshot_local.
enum class Commit { kFinish, kInFlight, kChained };

int64_t iterations(Commit mode) { return mode == Commit::kChained ? 4 : 3; }

dist::ThreadWorldOptions world_options() {
  dist::ThreadWorldOptions options;
  options.timeout = std::chrono::seconds(60);
  return options;
}

CheckpointerOptions options_for(Env& env, const std::string& root, int rank, int world,
                                checkpoint::LocalWrite write, Commit mode) {
  CheckpointerOptions o;
  o.env = &env;
  o.config_yaml = "sweep: local\n";
  checkpoint::LocalTierOptions local;
  local.period = 1;
  local.keep = mode == Commit::kChained ? 2 : 1;
  local.dir = root + "/local";
  // The job's identity is its OUTPUT_DIR; the sweep resumes from a copy of the disk at
  // another path, which is the same job.
  local.output_dir = "/sweep/out";
  local.node_id = world == 1 ? "n0" : fmt::format("n{}", rank);
  local.write = write;
  o.local = local;
  return o;
}

struct Snapshots {
  std::mutex mu;
  int64_t committed = -1;  // the newest snapshot whose commit had returned
  int64_t started = -1;
};

void train(Env& env, const std::string& root, int world, checkpoint::LocalWrite write, Snapshots& snaps,
           Commit mode) {
  const auto errors = dist::run_ranks(world, [&](dist::Communicator& comm) {
    TrainingState s(OptKind::kAdamW, kSeed, comm.rank(), world);
    Checkpointer ckpt(s.model, root + "/out", comm, s.checkpointables(), options_for(env, root, comm.rank(), world, write, mode));
    ckpt.resume_or_load("", /*resume=*/false);
    auto record = [&](int64_t started) {
      if (comm.rank() != 0) return;
      std::lock_guard<std::mutex> lock(snaps.mu);
      snaps.started = started;
      if (ckpt.local_tier()->commits() > 0 && ckpt.local_tier()->failures() == 0) {
        snaps.committed = ckpt.local_tier()->commits() - 1;  // one per iteration, from 0
      }
    };
    for (int64_t it = 0; it < iterations(mode); ++it) {
      s.train(1);
      ckpt.snapshot_local(it);
      record(it);
      if (mode == Commit::kInFlight) {
        ckpt.commit_local();
      } else if (mode == Commit::kFinish) {
        ckpt.finish_local();
      }
      record(it);
    }
    ckpt.finish_local();
    record(iterations(mode) - 1);  // chained: the last snapshot commits here
  }, world_options());
  for (const auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

std::string check_resume(const std::string& image, int world, checkpoint::LocalWrite write, Commit mode,
                         const Snapshots& snaps) {
  std::mutex mu;
  std::string problem;
  auto fail = [&](const std::string& p) {
    std::lock_guard<std::mutex> lock(mu);
    if (problem.empty()) problem = p;
  };
  FaultInjectionEnv after(image);
  const auto errors = dist::run_ranks(world, [&](dist::Communicator& comm) {
    TrainingState fresh(OptKind::kAdamW, kSeed + 1000, comm.rank(), world);
    Checkpointer ckpt(fresh.model, image + "/out", comm, fresh.checkpointables(),
                      options_for(after, image, comm.rank(), world, write, mode));
    const StateDict extra = ckpt.resume_or_load("", /*resume=*/true);
    const auto it = extra.find("iteration");
    const int64_t loaded = it == extra.end() ? -1 : std::get<int64_t>(it->second);
    if (loaded < snaps.committed) {
      fail(fmt::format("resumed from iteration {}, but the snapshot of iteration {} had been committed",
                       loaded, snaps.committed));
    } else if (loaded > snaps.started) {
      fail(fmt::format("resumed from iteration {}, never snapshotted", loaded));
    }
    if (loaded >= 0) {
      if (!ckpt.loaded_from_local()) fail("resumed, but not from the local tier");
      TrainingState expected(OptKind::kAdamW, kSeed, comm.rank(), world);
      expected.train(static_cast<int>(loaded + 1));
      const auto diff = checkpoint::testing::state_diff(expected.snapshot(), fresh.snapshot());
      if (!diff.empty()) {
        fail(fmt::format("rank {}: the state of iteration {} differs: {}", comm.rank(), loaded, diff.front()));
      }
    }
  }, world_options());
  for (const auto& e : errors) {
    if (!e) continue;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      fail(std::string("the resume failed: ") + x.what());
    }
  }
  return problem;
}

const char* mode_name(Commit mode) {
  if (mode == Commit::kInFlight) return " (replicas in flight)";
  return mode == Commit::kChained ? " (chained, KEEP 2)" : "";
}

std::string mode_suffix(Commit mode) {
  if (mode == Commit::kInFlight) return "_in_flight";
  return mode == Commit::kChained ? "_chained" : "";
}

class LocalSweep : public ::testing::TestWithParam<std::tuple<int, checkpoint::LocalWrite, Commit>> {};

TEST_P(LocalSweep, EveryCrashPointResumesACommittedSnapshotBitwise) {
  const int world = std::get<0>(GetParam());
  const checkpoint::LocalWrite write = std::get<1>(GetParam());
  const Commit mode = std::get<2>(GetParam());
  if (mode == Commit::kInFlight && world == 1) GTEST_SKIP() << "one node: no replicas";
  Snapshots snaps;
  const SweepResult r = sweep(
      [&](Env& env, const std::string& root) {
        snaps.committed = snaps.started = -1;
        train(env, root, world, write, snaps, mode);
      },
      [&](const std::string& image, const Outcome&) { return check_resume(image, world, write, mode, snaps); });
  EXPECT_GE(r.reference_log.size(), 12u);
  std::string text;
  for (const auto& f : r.failures) text += fmt::format("\n  cut at {} ({}): {}", f.cut_at, f.mutation, f.problem);
  EXPECT_TRUE(r.failures.empty()) << r.failures.size() << " of " << r.points << " crash points failed:" << text;
  std::cout << fmt::format("[ sweep    ] local np{} {}{}: {} crash points, {} failed; the mutations:\n", world,
                           write == checkpoint::LocalWrite::kMapped ? "mapped" : "hdf5",
                           mode_name(mode),
                           r.points, r.failures.size());
  for (size_t i = 0; i < r.reference_log.size(); ++i) std::cout << fmt::format("  {:3} {}\n", i + 1, r.reference_log[i]);
}

INSTANTIATE_TEST_SUITE_P(Ranks, LocalSweep,
                         ::testing::Combine(::testing::Values(1, 2),
                                            ::testing::Values(checkpoint::LocalWrite::kHdf5,
                                                              checkpoint::LocalWrite::kMapped),
                                            ::testing::Values(Commit::kFinish, Commit::kInFlight, Commit::kChained)),
                         [](const auto& info) {
                           return fmt::format("np{}_{}{}", std::get<0>(info.param),
                                              std::get<1>(info.param) == checkpoint::LocalWrite::kMapped ? "mapped"
                                                                                                          : "hdf5",
                                              mode_suffix(std::get<2>(info.param)));
                         });

}  // namespace
}  // namespace dtrain::powercut
