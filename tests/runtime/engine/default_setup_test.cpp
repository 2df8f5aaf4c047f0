// engine::resolve_seed (the one path for SEED -1, used by dtrain train and DefaultTrainer)
// and default_setup (rank 0 creates OUTPUT_DIR, its error reaches every rank), in a
// world of one and with other ranks played by a ScriptedCommunicator.
#include "runtime/engine/default_trainer.h"

#include <gtest/gtest.h>

#include <string>

#include "runtime/base/config.h"
#include "runtime/base/error.h"
#include "runtime/dist/local_communicator.h"
#include "tests/gtest_util.h"
#include "tests/runtime/dist/scripted_communicator.h"
#include "tests/test_util.h"

namespace dtrain::engine {
namespace {

using dtrain::testing::ScriptedCommunicator;
using dtrain::testutil::TempDir;

Config config_with(const std::string& out, int64_t seed) {
  Config cfg = Config::defaults();
  cfg.set("OUTPUT_DIR", out);
  cfg.set("SEED", seed);
  return cfg;
}

TEST(ResolveSeed, AGivenSeedIsUsedWithoutCommunicating) {
  ScriptedCommunicator comm(1, 2);
  EXPECT_EQ(resolve_seed(config_with("unused", 7), comm, /*resume=*/true), 7);
  EXPECT_EQ(comm.broadcast_calls + comm.gather_calls, 0);
}

TEST(ResolveSeed, MinusOneIsRankZerosChoiceBroadcast) {
  // Another rank takes what rank 0 broadcast.
  ScriptedCommunicator comm(1, 2);
  comm.broadcasts.push_back("+12345");
  EXPECT_EQ(resolve_seed(config_with("unused", -1), comm), 12345);
  // Rank 0 draws one in [0, 2^31).
  dist::LocalCommunicator local;
  const int64_t drawn = resolve_seed(config_with("unused", -1), local);
  EXPECT_GE(drawn, 0);
  EXPECT_LT(drawn, int64_t{1} << 31);
}

TEST(ResolveSeed, AResumeTakesTheSeedItsRunRecorded) {
  TempDir dir;
  Config first = config_with(dir.path(), 424242);
  dtrain::testutil::write_file(dir / "config.yaml", first.to_yaml());
  dist::LocalCommunicator local;
  EXPECT_EQ(resolve_seed(config_with(dir.path(), -1), local, /*resume=*/true), 424242);
  // Not resuming: a new seed, whatever config.yaml says (this draw may hit 424242 only
  // with probability 2^-31).
  EXPECT_NE(resolve_seed(config_with(dir.path(), -1), local, /*resume=*/false), 424242);
  // An unreadable config.yaml: a new seed (with a warning), not a failure.
  dtrain::testutil::write_file(dir / "config.yaml", "SEED: [not a number");
  EXPECT_GE(resolve_seed(config_with(dir.path(), -1), local, /*resume=*/true), 0);
}

TEST(DefaultSetup, RankZeroWritesTheConfigAndItsErrorReachesEveryRank) {
  TempDir dir;
  dist::LocalCommunicator local;
  default_setup(config_with(dir / "out", 3), local);
  EXPECT_EQ(Config::from_file(dir / "out/config.yaml").get_int("SEED"), 3);
  // OUTPUT_DIR under a regular file: rank 0's error, thrown by rank 1 too.
  dtrain::testutil::write_file(dir / "file", "x");
  ScriptedCommunicator comm(1, 2);
  comm.broadcasts.push_back("-Ecannot create directory");
  EXPECT_EQ(dtrain::testing::error_of([&] { default_setup(config_with(dir / "file/out", 3), comm); }),
            "setting up OUTPUT_DIR '" + (dir / "file/out") + "' failed: cannot create directory");
  EXPECT_CONTAINS(dtrain::testing::error_of([&] {
                    default_setup(config_with(dir / "file/out", 3), local);
                  }),
                  "setting up OUTPUT_DIR '" + (dir / "file/out") + "' failed: ");
}

}  // namespace
}  // namespace dtrain::engine
