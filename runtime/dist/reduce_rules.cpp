// The reduction rules shared by the CPU backends (see reduce_rules.h).
#include "runtime/dist/reduce_rules.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace dtrain::dist {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kMin:
      return "min";
  }
  return "?";
}

bool reduced_via_float32(at::ScalarType dtype) {
  return dtype == at::kHalf || dtype == at::kBFloat16;
}

std::string reduction_error(at::ScalarType dtype, ReduceOp op) {
  switch (dtype) {
    case at::kFloat:
    case at::kDouble:
    case at::kHalf:
    case at::kBFloat16:
    case at::kChar:
    case at::kByte:
    case at::kShort:
    case at::kInt:
    case at::kLong:
      return "";
    case at::kBool:
      if (op != ReduceOp::kAvg) return "";
      return fmt::format("reduce op {} is not supported for dtype {}", reduce_op_name(op),
                         c10::toString(dtype));
    default:
      return fmt::format(
          "dtype {} is not supported for reductions (supported: float32, float64, float16, "
          "bfloat16, int8, uint8, int16, int32, int64, bool)",
          c10::toString(dtype));
  }
}

std::string cpu_tensor_error(const at::Tensor& tensor, const char* cpu_hint) {
  if (!tensor.defined()) return "the tensor is undefined";
  if (!tensor.device().is_cpu()) {
    return fmt::format("expected a CPU tensor, got one on {} ({})", tensor.device().str(), cpu_hint);
  }
  if (tensor.layout() != at::kStrided) return "expected a dense (strided) tensor";
  if (!tensor.is_contiguous()) {
    return fmt::format("the tensor must be contiguous (sizes [{}], strides [{}]); call "
                       ".contiguous() and copy the result back",
                       fmt::join(tensor.sizes(), ", "), fmt::join(tensor.strides(), ", "));
  }
  return "";
}

std::string root_error(int root, int size) {
  if (root >= 0 && root < size) return "";
  return fmt::format("root {} is out of range [0, {})", root, size);
}

}  // namespace dtrain::dist
