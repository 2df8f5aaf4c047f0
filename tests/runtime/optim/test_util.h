// Small helpers shared by the optim tests: catching an exception's message and
// reading a tensor back as doubles.
#pragma once

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <gtest/gtest.h>

namespace dtrain::optim::testing {

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
