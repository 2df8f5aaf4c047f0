// The NCCL backend on real GPUs under mpirun (label "gpu"): exact values of collectives
// on CUDA tensors, async completion, CPU tensors and bytes through MPI.
#include <ATen/ATen.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <gtest/gtest.h>

#include "runtime/dist/communicator.h"

namespace dtrain::dist {
namespace {

class NcclTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!at::hasCUDA()) GTEST_SKIP() << "no GPU";
    comm_ = make_communicator("nccl", "cuda");
  }
  at::Device device() const { return at::Device(at::kCUDA, comm_->local_rank()); }
  std::shared_ptr<Communicator> comm_;
};

TEST_F(NcclTest, AllReduceSumAvgMaxExact) {
  const int r = comm_->rank(), w = comm_->size();
  at::Tensor t = at::full({1 << 20}, static_cast<float>(r + 1), at::TensorOptions().device(device()));
  comm_->all_reduce(t, ReduceOp::kSum);
  EXPECT_TRUE(t.cpu().eq(static_cast<float>(w * (w + 1) / 2)).all().item<bool>());
  at::Tensor a = at::full({1000}, static_cast<double>(r), at::TensorOptions().dtype(at::kDouble).device(device()));
  comm_->all_reduce(a, ReduceOp::kAvg);
  EXPECT_DOUBLE_EQ(a.cpu()[7].item<double>(), (w - 1) / 2.0);
  at::Tensor m = at::full({3}, static_cast<int64_t>(r * 10), at::TensorOptions().dtype(at::kLong).device(device()));
  comm_->all_reduce(m, ReduceOp::kMax);
  EXPECT_EQ(m.cpu()[2].item<int64_t>(), (w - 1) * 10);
}

TEST_F(NcclTest, AsyncAndBroadcastAndCpuFallback) {
  at::Tensor t = at::ones({4096}, at::TensorOptions().device(device()));
  auto work = comm_->all_reduce_async(t, ReduceOp::kSum);
  work->wait();
  EXPECT_FLOAT_EQ(t.cpu()[0].item<float>(), static_cast<float>(comm_->size()));
  at::Tensor b = at::full({5}, static_cast<float>(comm_->rank()), at::TensorOptions().device(device()));
  comm_->broadcast(b, comm_->size() - 1);
  EXPECT_FLOAT_EQ(b.cpu()[4].item<float>(), static_cast<float>(comm_->size() - 1));
  EXPECT_EQ(comm_->all_reduce_int(1, ReduceOp::kSum), comm_->size());  // CPU path via MPI
  auto all = comm_->all_gather_bytes(std::string(comm_->rank() + 1, 'x'));
  ASSERT_EQ(static_cast<int>(all.size()), comm_->size());
  EXPECT_EQ(all.back().size(), static_cast<size_t>(comm_->size()));
}

}  // namespace
}  // namespace dtrain::dist
