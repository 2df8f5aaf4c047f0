// gtest helpers of the checkpoint test suites: EXPECT_CONTAINS, and ThrownMessage
// expecting a CheckpointError unless told otherwise.
#pragma once

#include <string>
#include <utility>

#include "runtime/base/error.h"
#include "tests/gtest_util.h"

namespace dtrain::checkpoint::testing {

template <typename E = CheckpointError, typename F>
std::string ThrownMessage(F&& f) {
  return dtrain::testing::ThrownMessage<E>(std::forward<F>(f));
}

}  // namespace dtrain::checkpoint::testing
