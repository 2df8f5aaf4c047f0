// The reduction rules every CPU backend shares (MPI, the thread world, the world of one):
// which dtypes reduce, which ops a dtype allows, and how the result is rounded.
//
//   if (std::string why = reduction_error(t.scalar_type(), op); !why.empty()) fail(why);
//
// Supported dtypes: float32, float64, float16, bfloat16, int8, uint8, int16, int32, int64,
// bool. float16/bfloat16 are reduced in float32 and rounded once; kAvg divides the sum by
// the world size, truncating toward zero for integers; bool kSum/kMax are logical or,
// kMin is logical and, kAvg is rejected. Stateless, thread-safe.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "runtime/dist/communicator.h"

namespace dtrain::dist {

// "sum", "avg", "max" or "min".
const char* reduce_op_name(ReduceOp op);

// Why `op` cannot reduce `dtype` ("dtype ComplexFloat is not supported for reductions
// (supported: ...)", "reduce op avg is not supported for dtype Bool"), or "" when it can.
std::string reduction_error(at::ScalarType dtype, ReduceOp op);

// True for float16 and bfloat16, which are reduced in a float32 temporary.
bool reduced_via_float32(at::ScalarType dtype);

// Why `tensor` cannot be an argument of a CPU backend's collective (undefined, not on
// the CPU -- `cpu_hint` says what to use instead, e.g. "use the nccl backend for GPU
// tensors" --, not strided, not contiguous), or "" when it can.
std::string cpu_tensor_error(const at::Tensor& tensor, const char* cpu_hint);

// "root R is out of range [0, size)" or "".
std::string root_error(int root, int size);

}  // namespace dtrain::dist
