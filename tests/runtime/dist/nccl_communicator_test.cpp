// The NCCL backend on real GPUs under mpirun (label "gpu"): exact values of collectives
// on CUDA tensors, async completion and stream ordering, dtypes, error paths, CPU tensors
// and bytes through MPI, and an all-reduce bandwidth figure. Registered for 1 rank (runs
// on any machine with a GPU) and 2 ranks (needs 2 GPUs: on a node with fewer GPUs than
// ranks every test but SharedGpuIsRefused skips, saying why).
#include <ATen/ATen.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "runtime/base/error.h"
#include "runtime/dist/communicator.h"
#include "runtime/dist/rank_env.h"

namespace dtrain::dist {
namespace {

int visible_gpus() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

int ranks_on_node() {
  auto env = rank_env_from_process();
  return env ? env->local_size : 1;
}

// Under a plain mpirun every rank sees the same GPUs: more ranks than GPUs on the node
// means two ranks would share one, which NCCL refuses.
bool ranks_outnumber_gpus() { return ranks_on_node() > visible_gpus(); }

// Message of the CommError that `f` throws ("" when it throws none).
template <class F>
std::string comm_error_of(F&& f) {
  try {
    f();
  } catch (const CommError& e) {
    return e.what();
  }
  return "";
}

class NcclTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!at::hasCUDA()) GTEST_SKIP() << "no GPU";
    if (ranks_outnumber_gpus()) {
      GTEST_SKIP() << ranks_on_node() << " ranks on this node but " << visible_gpus()
                   << " GPU(s): NCCL needs one GPU per rank (the 1-rank run covers this "
                      "machine)";
    }
    comm_ = make_communicator("nccl", "cuda");
  }
  at::Device device() const {
    return at::Device(at::kCUDA, visible_gpus() == 1 ? 0 : comm_->local_rank());
  }
  at::TensorOptions on_gpu(at::ScalarType t = at::kFloat) const {
    return at::TensorOptions().dtype(t).device(device());
  }
  std::shared_ptr<Communicator> comm_;
};

TEST_F(NcclTest, AllReduceSumAvgMaxExact) {
  const int r = comm_->rank(), w = comm_->size();
  EXPECT_EQ(comm_->backend_name(), "nccl");
  at::Tensor t = at::full({1 << 20}, static_cast<float>(r + 1), on_gpu());
  comm_->all_reduce(t, ReduceOp::kSum);
  EXPECT_TRUE(t.cpu().eq(static_cast<float>(w * (w + 1) / 2)).all().item<bool>());
  at::Tensor a = at::full({1000}, static_cast<double>(r), on_gpu(at::kDouble));
  comm_->all_reduce(a, ReduceOp::kAvg);
  EXPECT_DOUBLE_EQ(a.cpu()[7].item<double>(), (w - 1) / 2.0);
  at::Tensor m = at::full({3}, static_cast<int64_t>(r * 10), on_gpu(at::kLong));
  comm_->all_reduce(m, ReduceOp::kMax);
  EXPECT_EQ(m.cpu()[2].item<int64_t>(), (w - 1) * 10);
}

TEST_F(NcclTest, AsyncAndBroadcastAndCpuFallback) {
  at::Tensor t = at::ones({4096}, on_gpu());
  auto work = comm_->all_reduce_async(t, ReduceOp::kSum);
  work->wait();
  EXPECT_FLOAT_EQ(t.cpu()[0].item<float>(), static_cast<float>(comm_->size()));
  at::Tensor b = at::full({5}, static_cast<float>(comm_->rank()), on_gpu());
  comm_->broadcast(b, comm_->size() - 1);
  EXPECT_FLOAT_EQ(b.cpu()[4].item<float>(), static_cast<float>(comm_->size() - 1));
  EXPECT_EQ(comm_->all_reduce_int(1, ReduceOp::kSum), comm_->size());  // CPU path via MPI
  at::Tensor c = at::full({4}, 2.0f);                                  // CPU tensor via MPI
  comm_->all_reduce(c, ReduceOp::kSum);
  EXPECT_FLOAT_EQ(c[3].item<float>(), 2.0f * comm_->size());
  auto all = comm_->all_gather_bytes(std::string(comm_->rank() + 1, 'x'));
  ASSERT_EQ(static_cast<int>(all.size()), comm_->size());
  EXPECT_EQ(all.back().size(), static_cast<size_t>(comm_->size()));
}

// Other dtypes and Min; bool goes as uint8 (Max = logical or).
TEST_F(NcclTest, DtypesAndMin) {
  const int r = comm_->rank(), w = comm_->size();
  at::Tensor h = at::full({1000}, 0.5, on_gpu(at::kHalf));
  comm_->all_reduce(h, ReduceOp::kSum);
  EXPECT_FLOAT_EQ(h.cpu().to(at::kFloat)[999].item<float>(), 0.5f * w);
  at::Tensor bf = at::full({1000}, 2.0, on_gpu(at::kBFloat16));
  comm_->all_reduce(bf, ReduceOp::kSum);
  EXPECT_FLOAT_EQ(bf.cpu().to(at::kFloat)[0].item<float>(), 2.0f * w);
  at::Tensor i = at::full({17}, r + 5, on_gpu(at::kInt));
  comm_->all_reduce(i, ReduceOp::kMin);
  EXPECT_EQ(i.cpu()[16].item<int>(), 5);
  at::Tensor u = at::full({8}, r == 0 ? 200 : 3, on_gpu(at::kByte));
  comm_->all_reduce(u, ReduceOp::kMax);
  EXPECT_EQ(u.cpu()[0].item<uint8_t>(), 200);
  at::Tensor flag = at::full({1}, r == w - 1, on_gpu(at::kBool));
  comm_->all_reduce(flag, ReduceOp::kMax);
  EXPECT_TRUE(flag.cpu().item<bool>());
  at::Tensor empty = at::empty({0}, on_gpu());
  EXPECT_NO_THROW(comm_->all_reduce(empty, ReduceOp::kSum));
}

// The collective sees kernels queued on the default stream before it, kernels queued
// after Work::wait() see its result, and is_completed() turns true without wait().
TEST_F(NcclTest, AsyncWorkIsOrderedWithTheDefaultStream) {
  const int w = comm_->size();
  at::Tensor t = at::zeros({64 << 20}, on_gpu());  // 256 MiB: the kernels take a while
  for (int k = 0; k < 20; ++k) t.add_(1.0);        // queued, not finished, when NCCL starts
  auto work = comm_->all_reduce_async(t, ReduceOp::kSum);
  const auto start = std::chrono::steady_clock::now();
  while (!work->is_completed() &&
         std::chrono::steady_clock::now() - start < std::chrono::seconds(60)) {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  EXPECT_TRUE(work->is_completed());
  work->wait();
  t.mul_(0.5);  // after the collective on the default stream
  at::Tensor host = t.cpu();
  EXPECT_TRUE(host.eq(10.0f * w).all().item<bool>()) << host.min().item<float>() << " .. "
                                                      << host.max().item<float>();
}

TEST_F(NcclTest, ErrorsNameTheOperationAndRank) {
  at::Tensor strided = at::ones({64, 2}, on_gpu()).select(1, 0);  // not contiguous
  EXPECT_NE(comm_error_of([&] { comm_->all_reduce(strided, ReduceOp::kSum); }).find("contiguous"),
            std::string::npos);
  at::Tensor cplx = at::ones({4}, on_gpu(at::kComplexFloat));
  const std::string dtype_msg = comm_error_of([&] { comm_->all_reduce(cplx, ReduceOp::kSum); });
  EXPECT_NE(dtype_msg.find("not supported"), std::string::npos) << dtype_msg;
  EXPECT_NE(dtype_msg.find("rank " + std::to_string(comm_->rank())), std::string::npos) << dtype_msg;
  const std::string cpu_msg = comm_error_of([] { make_communicator("nccl", "cpu"); });
  EXPECT_NE(cpu_msg.find("MODEL.DEVICE cuda"), std::string::npos) << cpu_msg;
  if (visible_gpus() > 1) {  // a tensor on another rank's GPU
    at::Tensor other = at::ones({4}, at::TensorOptions().device(
                                         at::Device(at::kCUDA, (device().index() + 1) % visible_gpus())));
    const std::string dev_msg = comm_error_of([&] { comm_->all_reduce(other, ReduceOp::kSum); });
    EXPECT_NE(dev_msg.find("this rank uses cuda:"), std::string::npos) << dev_msg;
  }
  // The communicator still works after refusing those.
  at::Tensor t = at::ones({8}, on_gpu());
  comm_->all_reduce(t, ReduceOp::kSum);
  EXPECT_FLOAT_EQ(t.cpu()[7].item<float>(), static_cast<float>(comm_->size()));
}

// Prints (rank 0) the all-reduce bandwidth of 1, 16 and 256 MiB float32 in the nccl-tests
// terms: algbw = bytes / time, busbw = algbw * 2 (n - 1) / n. With one rank an in-place
// all-reduce moves no data (H200: ~1.5 us a call at every size), so only the time is printed.
TEST_F(NcclTest, AllReduceBandwidth) {
  const int w = comm_->size();
  for (int64_t mib : {1, 16, 256}) {
    at::Tensor t = at::ones({mib << 18}, on_gpu());
    for (int k = 0; k < 3; ++k) comm_->all_reduce_async(t, ReduceOp::kSum)->wait();
    comm_->barrier();
    const int iters = mib >= 256 ? 20 : 50;
    const auto start = std::chrono::steady_clock::now();
    for (int k = 0; k < iters; ++k) comm_->all_reduce_async(t, ReduceOp::kSum)->wait();
    comm_->barrier();
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iters;
    const double algbw = static_cast<double>(mib << 20) / s / 1e9;
    if (w == 1) {
      std::printf("[ nccl     ] all_reduce %4lld MiB float32, 1 rank: %8.1f us a call (no data "
                  "moves in place)\n",
                  static_cast<long long>(mib), s * 1e6);
      std::fflush(stdout);
    } else if (comm_->rank() == 0) {
      std::printf("[ nccl     ] all_reduce %4lld MiB float32, %d rank(s): %8.1f us, algbw %7.2f "
                  "GB/s, busbw %7.2f GB/s\n",
                  static_cast<long long>(mib), w, s * 1e6, algbw, algbw * 2.0 * (w - 1) / w);
      std::fflush(stdout);
    }
  }
}

// With more ranks on a node than GPUs, the communicator refuses before NCCL starts, with
// the same message on every rank (rather than NCCL's "Duplicate GPU detected").
TEST(NcclSharedGpu, SharedGpuIsRefused) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no GPU";
  if (!ranks_outnumber_gpus()) GTEST_SKIP() << "each rank has its own GPU";
  const std::string msg = comm_error_of([] { make_communicator("nccl", "cuda"); });
  EXPECT_NE(msg.find("NCCL needs one GPU per rank"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ranks 0 and 1"), std::string::npos) << msg;
}

}  // namespace
}  // namespace dtrain::dist
