// average_finite_loss (simple_trainer.h): a non-finite loss on any rank is one
// FloatingPointError, in detectron2's words, naming the ranks where it happened; a finite
// average costs one all-reduce and nothing else.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "runtime/base/error.h"
#include "runtime/dist/local_communicator.h"
#include "runtime/engine/simple_trainer.h"
#include "tests/gtest_util.h"
#include "tests/runtime/dist/scripted_communicator.h"

namespace dtrain::engine {
namespace {

using dtrain::testing::ScriptedCommunicator;
using dtrain::testing::ThrownMessage;

constexpr double kInf = std::numeric_limits<double>::infinity();

TEST(AverageFiniteLoss, WorldOfOne) {
  dist::LocalCommunicator comm;
  EXPECT_DOUBLE_EQ(average_finite_loss(comm, 3, 0.25), 0.25);
  EXPECT_EQ(ThrownMessage<FloatingPointError>([&] { average_finite_loss(comm, 7, std::nan("")); }),
            "Loss became infinite or NaN at iteration=7!\nloss_dict = {'total_loss': nan}");
  EXPECT_EQ(ThrownMessage<FloatingPointError>([&] { average_finite_loss(comm, 0, -kInf); }),
            "Loss became infinite or NaN at iteration=0!\nloss_dict = {'total_loss': -inf}");
}

TEST(AverageFiniteLoss, FiniteAverageGathersNothing) {
  ScriptedCommunicator comm(0, 2);
  comm.reductions.push_back(1.5);
  EXPECT_DOUBLE_EQ(average_finite_loss(comm, 3, 1.0), 1.5);
  EXPECT_EQ(comm.gather_calls, 0);
}

TEST(AverageFiniteLoss, NamesTheRanksWithNonFiniteLosses) {
  // Seen from rank 0, whose own loss was finite: the same message as on the bad ranks.
  ScriptedCommunicator comm(0, 4);
  comm.reductions.push_back(std::nan(""));
  comm.gathers.push_back({"", "nan", "inf", "nan"});
  EXPECT_EQ(ThrownMessage<FloatingPointError>([&] { average_finite_loss(comm, 12, 2.5); }),
            "Loss became infinite or NaN at iteration=12!\nloss_dict = {'total_loss': nan} on "
            "ranks 1, 3; {'total_loss': inf} on rank 2 (of 4 ranks)");
  EXPECT_EQ(comm.gather_calls, 1);
}

TEST(AverageFiniteLoss, AnOverflowingAverageSaysSo) {
  ScriptedCommunicator comm(1, 2);
  comm.reductions.push_back(kInf);
  comm.gathers.push_back({"1e308", ""});
  EXPECT_EQ(ThrownMessage<FloatingPointError>([&] { average_finite_loss(comm, 4, 1.7e308); }),
            "Loss became infinite or NaN at iteration=4!\nloss_dict = {'total_loss': inf} (the "
            "average over 2 ranks overflowed; every rank's own loss was finite)");
}

}  // namespace
}  // namespace dtrain::engine
