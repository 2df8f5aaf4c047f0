// MpiRuntime and MpiCommunicator in a process started without mpirun (an MPI singleton):
// the test environment owns MPI's lifetime and checks finalization at the end.
#include <ATen/ops/empty.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/dist/communicator.h"
#include "runtime/dist/mpi_communicator.h"
#include "runtime/dist/mpi_runtime.h"

namespace dtrain::dist {
namespace {

// Owns the MpiRuntime for all tests; checks that destroying it finalizes MPI for good.
class SingletonEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    ASSERT_FALSE(MpiRuntime::is_initialized());
    runtime_ = std::make_unique<MpiRuntime>();
  }
  void TearDown() override {
    ASSERT_TRUE(runtime_->owns_mpi());
    runtime_.reset();
    EXPECT_TRUE(MpiRuntime::is_finalized());
    std::string message;
    try {
      MpiRuntime again;
    } catch (const CommError& e) {
      message = e.what();
    }
    EXPECT_NE(message.find("finalized"), std::string::npos) << message;
    message.clear();
    try {
      make_communicator("mpi", "cpu");
    } catch (const CommError& e) {
      message = e.what();
    }
    EXPECT_NE(message.find("not initialized"), std::string::npos) << message;
  }
  static MpiRuntime& runtime() { return *runtime_; }

 private:
  static std::unique_ptr<MpiRuntime> runtime_;
};

std::unique_ptr<MpiRuntime> SingletonEnvironment::runtime_;

[[maybe_unused]] ::testing::Environment* const kEnvironment =
    ::testing::AddGlobalTestEnvironment(new SingletonEnvironment);

TEST(MpiSingleton, RuntimeOwnsMpi) {
  EXPECT_TRUE(MpiRuntime::is_initialized());
  EXPECT_FALSE(MpiRuntime::is_finalized());
  EXPECT_TRUE(SingletonEnvironment::runtime().owns_mpi());
  EXPECT_GE(SingletonEnvironment::runtime().thread_level(), MPI_THREAD_FUNNELED);
  // A second runtime while MPI is up owns nothing and does not finalize.
  {
    MpiRuntime nested;
    EXPECT_FALSE(nested.owns_mpi());
  }
  EXPECT_FALSE(MpiRuntime::is_finalized());
}

TEST(MpiSingleton, CommunicatorIsAWorldOfOne) {
  MpiCommunicator comm;
  EXPECT_EQ(comm.backend_name(), "mpi");
  EXPECT_EQ(comm.rank(), 0);
  EXPECT_EQ(comm.size(), 1);
  EXPECT_EQ(comm.local_rank(), 0);
  EXPECT_EQ(comm.local_size(), 1);
  EXPECT_FALSE(comm.host().empty());
  EXPECT_NE(comm.mpi_comm(), MPI_COMM_WORLD);
  comm.barrier();

  at::Tensor t = at::empty({3}, at::kFloat);
  float* p = t.data_ptr<float>();
  p[0] = 1.5f;
  p[1] = -2.0f;
  p[2] = 3.0f;
  comm.all_reduce(t, ReduceOp::kSum);
  EXPECT_EQ(std::vector<float>(p, p + 3), (std::vector<float>{1.5f, -2.0f, 3.0f}));
  comm.all_reduce(t, ReduceOp::kAvg);
  EXPECT_EQ(std::vector<float>(p, p + 3), (std::vector<float>{1.5f, -2.0f, 3.0f}));
  auto work = comm.all_reduce_async(t, ReduceOp::kMax);
  work->wait();
  EXPECT_TRUE(work->is_completed());
  EXPECT_EQ(std::vector<float>(p, p + 3), (std::vector<float>{1.5f, -2.0f, 3.0f}));
  comm.broadcast(t, 0);
  EXPECT_EQ(std::vector<float>(p, p + 3), (std::vector<float>{1.5f, -2.0f, 3.0f}));

  EXPECT_EQ(comm.all_reduce_int(-9, ReduceOp::kAvg), -9);
  EXPECT_DOUBLE_EQ(comm.all_reduce_double(0.25, ReduceOp::kSum), 0.25);
  EXPECT_EQ(comm.all_gather_bytes("hello"), (std::vector<std::string>{"hello"}));
  std::string bytes("x\0y", 3);
  comm.broadcast_bytes(bytes, 0);
  EXPECT_EQ(bytes, std::string("x\0y", 3));
  EXPECT_THROW(comm.broadcast_bytes(bytes, 1), CommError);
}

TEST(MpiSingleton, MakeCommunicatorMpiAndAuto) {
  for (const char* backend : {"mpi", "auto"}) {
    auto comm = make_communicator(backend, "cpu");
    ASSERT_NE(comm, nullptr);
    EXPECT_EQ(comm->backend_name(), "mpi") << backend;
    EXPECT_EQ(comm->size(), 1);
  }
  if (!nccl_available()) {
    EXPECT_EQ(make_communicator("auto", "cuda:0")->backend_name(), "mpi");
  }
}

}  // namespace
}  // namespace dtrain::dist
