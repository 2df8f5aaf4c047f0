// Shared by the interop tests: the PyTorch-made files (make_torch_files.py, run once per
// test binary) and bit-for-bit comparison of tensors against torch's own bytes.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <gtest/gtest.h>

namespace dtrain::interop::testing {

// The directory holding the files make_torch_files.py wrote (made on first use; the test
// is skipped by the caller when it returns "", i.e. python3-torch is missing).
const std::string& torch_files();

// Expects `tensors` to hold exactly the tensors recorded under ref/<name>/ (same names,
// dtypes, shapes and bytes, in any order).
void expect_matches_reference(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                              const std::string& name);

// The contiguous bytes of `t`.
std::string tensor_bytes(const at::Tensor& t);

}  // namespace dtrain::interop::testing
