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

}  // namespace

void LocalCommunicator::broadcast(at::Tensor& tensor, int root) {
  check_tensor(tensor, "broadcast");
  check_root(root, "broadcast");
}

void LocalCommunicator::all_reduce(at::Tensor& tensor, ReduceOp op) {
  check_tensor(tensor, "all_reduce");
  const std::string why = reduction_error(tensor.scalar_type(), op);
  DTRAIN_CHECK_T(CommError, why.empty(), "local backend: all_reduce on rank 0 of 1: {}", why);
}

std::vector<std::string> LocalCommunicator::all_gather_bytes(const std::string& mine) {
  return {mine};
}

void LocalCommunicator::broadcast_bytes(std::string& /*bytes*/, int root) {
  check_root(root, "broadcast_bytes");
}

}  // namespace dtrain::dist
