// Small helpers shared by the optim tests: catching an exception's message
// (tests/gtest_util.h) and reading a tensor back as doubles.
#pragma once

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <gtest/gtest.h>

#include "tests/gtest_util.h"

namespace dtrain::optim::testing {

using dtrain::testing::ThrownMessage;

// Whether `text` contains `part`; use as EXPECT_TRUE(Contains(msg, "KEY")) << msg.
inline bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The elements of a CPU double tensor.
inline std::vector<double> ToVector(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  const double* p = c.data_ptr<double>();
  return std::vector<double>(p, p + c.numel());
}

}  // namespace dtrain::optim::testing
