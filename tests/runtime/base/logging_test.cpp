// Tests of dtrain::log: rank 0 prints every line; other ranks print only their errors
// and the lines marked as their own (_RANK), so a multi-rank job logs shared lines once.
#include "runtime/base/logging.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace dtrain {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

// What one round of every kind of line prints on stderr after log::init(rank, 2).
std::string log_as(int rank) {
  log::init(rank, 2);
  ::testing::internal::CaptureStderr();
  DTRAIN_LOG_INFO("shared info {}", 1);
  DTRAIN_LOG_WARN("shared warning");
  DTRAIN_LOG_INFO_RANK("own info of rank {}", rank);
  DTRAIN_LOG_WARN_RANK("own warning of rank {}", rank);
  DTRAIN_LOG_ERROR("error on rank {}", rank);
  spdlog::default_logger()->flush();
  log::main_logger().flush();
  return ::testing::internal::GetCapturedStderr();
}

TEST(LoggingTest, RankZeroPrintsEverything) {
  const std::string out = log_as(0);
  EXPECT_THAT(out, AllOf(HasSubstr("[dtrain r0/2 "), HasSubstr("shared info 1"),
                         HasSubstr("shared warning"), HasSubstr("own info of rank 0"),
                         HasSubstr("own warning of rank 0"), HasSubstr("error on rank 0")));
}

TEST(LoggingTest, OtherRanksPrintOnlyTheirOwnLinesAndErrors) {
  const std::string out = log_as(1);
  EXPECT_THAT(out, AllOf(Not(HasSubstr("shared info")), Not(HasSubstr("shared warning"))));
  EXPECT_THAT(out, AllOf(HasSubstr("[dtrain r1/2 "), HasSubstr("own info of rank 1"),
                         HasSubstr("own warning of rank 1"), HasSubstr("error on rank 1")));
  log::init(0, 1);  // back to a single process for other tests
}

}  // namespace
}  // namespace dtrain
