// What only the world of one does (its collectives are in the conformance suite,
// communicator_conformance.h) and make_communicator()'s errors (MPI is never initialized
// in this binary).
#include "runtime/dist/communicator.h"

#include <ATen/ops/empty.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/dist/local_communicator.h"
#include "tests/gtest_util.h"

namespace dtrain::dist {
namespace {

at::Tensor make_doubles(const std::vector<double>& values) {
  at::Tensor t = at::empty({static_cast<int64_t>(values.size())}, at::kDouble);
  for (size_t i = 0; i < values.size(); ++i) t.data_ptr<double>()[i] = values[i];
  return t;
}

std::vector<double> to_vector(const at::Tensor& t) {
  at::Tensor d = t.to(at::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

// Runs `fn` and returns the CommError message it throws ("" if none).
template <typename Fn>
std::string comm_error(Fn fn) {
  return dtrain::testing::ThrownMessage<CommError>(fn);
}

TEST(LocalCommunicator, DefaultAsyncReturnsCompletedWork) {
  LocalCommunicator comm;
  at::Tensor t = make_doubles({4.0, 5.0});
  auto work = comm.all_reduce_async(t, ReduceOp::kAvg);
  ASSERT_NE(work, nullptr);
  EXPECT_TRUE(work->is_completed());
  work->wait();
  EXPECT_EQ(to_vector(t), (std::vector<double>{4.0, 5.0}));
}

// Unlike the MPI and thread backends, the world of one takes tensors on any device.
TEST(LocalCommunicator, TakesTensorsOnAnyDevice) {
  LocalCommunicator comm;
  at::Tensor meta = at::empty({4}, at::TensorOptions().dtype(at::kFloat).device(at::kMeta));
  EXPECT_NO_THROW(comm.all_reduce(meta, ReduceOp::kAvg));
  EXPECT_NO_THROW(comm.broadcast(meta, 0));
}

TEST(MakeCommunicator, Local) {
  auto comm = make_communicator("local", "cpu");
  ASSERT_NE(comm, nullptr);
  EXPECT_EQ(comm->backend_name(), "local");
  EXPECT_EQ(comm->size(), 1);
}

TEST(MakeCommunicator, UnknownBackendListsValidNames) {
  std::string message = comm_error([] { make_communicator("gloo", "cpu"); });
  EXPECT_NE(message.find("'gloo'"), std::string::npos) << message;
  for (const char* name : {"auto", "mpi", "nccl", "local"}) {
    EXPECT_NE(message.find(name), std::string::npos) << name << " missing in: " << message;
  }
  EXPECT_NE(comm_error([] { make_communicator("", "cpu"); }), "");
  EXPECT_NE(comm_error([] { make_communicator("MPI ", "cpu"); }), "");
}

#ifndef DTRAIN_HAVE_NCCL
TEST(MakeCommunicator, NcclWithoutNcclBuild) {
  EXPECT_FALSE(nccl_available());
  std::string message = comm_error([] { make_communicator("nccl", "cuda:0"); });
  EXPECT_NE(message.find("dtrain was built without NCCL"), std::string::npos) << message;
}
#else
TEST(MakeCommunicator, NcclAvailable) { EXPECT_TRUE(nccl_available()); }
#endif

TEST(MakeCommunicator, MpiWithoutMpiRuntimeFailsClearly) {
  // This binary never initializes MPI; "auto" on CPU (and on CUDA without NCCL) means mpi.
  std::vector<std::string> messages = {
      comm_error([] { make_communicator("mpi", "cpu"); }),
      comm_error([] { make_communicator("auto", "cpu"); }),
  };
  if (!nccl_available()) {
    messages.push_back(comm_error([] { make_communicator("auto", "cuda:0"); }));
  }
  for (const std::string& message : messages) {
    EXPECT_NE(message.find("mpi"), std::string::npos) << message;
    EXPECT_NE(message.find("MpiRuntime"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace dtrain::dist
