// Buffers that readers of foreign files fill: allocated so that the first touch is cheap,
// and checked where a byte pattern can be invalid (bool). Thread-safe.
#pragma once

#include <string>

#include <ATen/core/Tensor.h>

namespace dtrain::interop {

// An uninitialized CPU tensor of `shape` and `dtype` to read into. From 2 MiB up it is a
// mapping of its own that starts on a 2 MiB boundary and asks for transparent huge pages:
// touching fresh memory 4 KiB at a time can cost more than reading the data into it (3 s
// per GiB measured on a VM where copying from the page cache took 0.1 s). Such a tensor
// cannot be resized (it is not the allocator's); smaller ones are plain at::empty.
at::Tensor empty_for_read(at::IntArrayRef shape, c10::ScalarType dtype);

// Throws dtrain::CheckpointError "<what>: bool element i is the byte b, expected 0 or 1"
// unless every byte of the bool tensor `t` is 0 or 1 (anything else is not a valid C++
// bool); `what` names the file and the tensor. No-op for other dtypes.
void check_bool_bytes(const at::Tensor& t, const std::string& what);

}  // namespace dtrain::interop
