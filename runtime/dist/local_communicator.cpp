// LocalCommunicator: identity collectives for a world of one.
#include "runtime/dist/local_communicator.h"

#include "runtime/base/error.h"
#include "runtime/dist/reduce_rules.h"

namespace dtrain::dist {
namespace {

void check_root(int root, const char* op) {
  DTRAIN_CHECK_T(CommError, root == 0,
                 "local backend: {} on rank 0 of 1: root {} is out of range [0, 1)", op, root);
}

void check_tensor(const at::Tensor& tensor, const char* op) {
  DTRAIN_CHECK_T(CommError, tensor.defined(),
                 "local backend: {} on rank 0 of 1: the tensor "
                 "is undefined",
                 op);
  DTRAIN_CHECK_T(CommError, tensor.is_contiguous(),
                 "local backend: {} on rank 0 of 1: the tensor must be contiguous", op);
}

void check_reduction(const at::Tensor& tensor, ReduceOp op, const char* name) {
  check_tensor(tensor, name);
  const std::string why = reduction_error(tensor.scalar_type(), op);
  DTRAIN_CHECK_T(CommError, why.empty(), "local backend: {} on rank 0 of 1: {}", name, why);
}

}  // namespace

void LocalCommunicator::broadcast(at::Tensor& tensor, int root) {
  check_tensor(tensor, "broadcast");
  check_root(root, "broadcast");
}

void LocalCommunicator::all_reduce(at::Tensor& tensor, ReduceOp op) {
  check_reduction(tensor, op, "all_reduce");
}

std::shared_ptr<Work> LocalCommunicator::all_reduce_async(at::Tensor& tensor, ReduceOp op) {
  check_reduction(tensor, op, "all_reduce_async");
  return Communicator::all_reduce_async(tensor, op);  // a completed Work
}

std::vector<std::string> LocalCommunicator::all_gather_bytes(const std::string& mine) {
  return {mine};
}

void LocalCommunicator::broadcast_bytes(std::string& /*bytes*/, int root) {
  check_root(root, "broadcast_bytes");
}

}  // namespace dtrain::dist
