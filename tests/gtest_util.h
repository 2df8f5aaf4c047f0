// gtest helpers shared by the test suites (header-only; tests/test_util.h holds the ones
// that need no gtest).
#pragma once

#include <string>
#include <utility>

#include <gtest/gtest.h>

#include "runtime/base/error.h"

// Expects `part` in `text`, printing both when it is missing.
#define EXPECT_CONTAINS(text, part)                          \
  EXPECT_NE(std::string(text).find(part), std::string::npos) \
      << "expected '" << (part) << "' in:\n"                 \
      << (text)

namespace dtrain::testing {

// The message of the E that f() throws; records a failure when it throws nothing.
template <typename E, typename F>
std::string ThrownMessage(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an exception";
  return "";
}

// The message of the dtrain::Error (or subclass) that f() throws; records a failure when
// it throws nothing.
template <typename F>
std::string error_of(F&& f) {
  return ThrownMessage<dtrain::Error>(std::forward<F>(f));
}

}  // namespace dtrain::testing
