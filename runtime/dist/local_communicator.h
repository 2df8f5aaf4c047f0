// A world of one: the Communicator for single-process runs and tests, with no MPI.
//
//   dtrain::dist::LocalCommunicator comm;   // rank 0 of 1
//   comm.all_reduce(t, ReduceOp::kAvg);     // leaves t unchanged
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/dist/communicator.h"

namespace dtrain::dist {

// Rank 0 of a world of size 1: every collective is the identity (the reduction of one
// value is that value, kAvg divides by 1). Tensors may live on any device. Arguments are
// still checked like the other backends (defined and contiguous tensors, root 0, the
// dtypes and ops of runtime/dist/reduce_rules.h) so that code tested on it keeps working
// on "mpi". Makes no MPI call. Stateless, hence
// thread-safe.
class LocalCommunicator : public Communicator {
 public:
  LocalCommunicator() = default;

  std::string backend_name() const override { return "local"; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 1; }

  // Returns immediately.
  void barrier() override {}
  // Leaves `tensor` unchanged; throws CommError unless root == 0.
  void broadcast(at::Tensor& tensor, int root) override;
  // Leaves `tensor` unchanged; throws CommError for what MPI cannot reduce (bool kAvg,
  // complex dtypes...).
  void all_reduce(at::Tensor& tensor, ReduceOp op) override;
  // Checks like all_reduce (errors name all_reduce_async); returns a completed Work.
  std::shared_ptr<Work> all_reduce_async(at::Tensor& tensor, ReduceOp op) override;
  // Returns {mine}.
  std::vector<std::string> all_gather_bytes(const std::string& mine) override;
  // Leaves `bytes` unchanged; throws CommError unless root == 0.
  void broadcast_bytes(std::string& bytes, int root) override;
};

}  // namespace dtrain::dist
