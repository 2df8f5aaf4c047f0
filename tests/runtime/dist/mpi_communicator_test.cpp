// What only MpiCommunicator does, under mpirun (-np 2 and 4): topology as mpirun tells it,
// all_reduce_async on its thread and as MPI_Iallreduce (ordering with blocking calls),
// host and device in argument errors, MPI's own error text. The results of every
// collective, chunking and the error format are in the conformance suite
// (communicator_conformance.h, run on MPI by mpi_communicator_conformance_test).
#include "runtime/dist/mpi_communicator.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/dist/communicator.h"
#include "runtime/dist/rank_env.h"

namespace dtrain::dist {
namespace {

at::Tensor make_tensor(const std::vector<double>& values, at::ScalarType dtype) {
  at::Tensor t = at::empty({static_cast<int64_t>(values.size())}, at::kDouble);
  for (size_t i = 0; i < values.size(); ++i) t.data_ptr<double>()[i] = values[i];
  return t.to(dtype);
}

std::vector<double> to_vector(const at::Tensor& t) {
  at::Tensor d = t.to(at::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

// Runs `fn` and returns the CommError message it throws ("" if none).
// Not ThrownMessage: "" without a failure when nothing is thrown, as some ranks of a test
// expect (MpiErrorCarriesMpiText: only rank 1 of the pair fails).
template <typename Fn>
std::string comm_error(Fn fn) {
  try {
    fn();
  } catch (const CommError& e) {
    return e.what();
  }
  return "";
}

class MpiCommunicatorTest : public ::testing::Test {
 protected:
  MpiCommunicator comm_;
  int rank_ = comm_.rank();
  int n_ = comm_.size();
  // Sum of (r + 1) over all ranks.
  double s_ = n_ * (n_ + 1) / 2.0;

  // What rank `r` contributes to the reduction tests.
  static std::vector<double> contribution(int r) {
    return {r + 1.0, 2.0 * (r + 1), -(r + 1.0), 10.0};
  }
};

TEST_F(MpiCommunicatorTest, Topology) {
  int world_rank = -1;
  int world_size = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  EXPECT_EQ(comm_.backend_name(), "mpi");
  EXPECT_EQ(comm_.rank(), world_rank);
  EXPECT_EQ(comm_.size(), world_size);
  EXPECT_GE(world_size, 2);
  // All test ranks run on one node.
  EXPECT_EQ(comm_.local_size(), comm_.size());
  EXPECT_EQ(comm_.local_rank(), comm_.rank());
  // mpirun's environment tells the same story before MPI is asked.
  auto env = rank_env_from_process();
  ASSERT_TRUE(env.has_value());
  EXPECT_EQ(env->source, "openmpi");
  EXPECT_EQ(env->rank, comm_.rank());
  EXPECT_EQ(env->world_size, comm_.size());
  EXPECT_EQ(env->local_rank, comm_.local_rank());
  EXPECT_EQ(env->local_size, comm_.local_size());
}

// all_reduce_async on its thread (the default) and as MPI_Iallreduce.
class MpiAsyncTest : public MpiCommunicatorTest, public ::testing::WithParamInterface<bool> {
 protected:
  static MpiCommunicator::Options options() {
    MpiCommunicator::Options o;
    o.async_thread = GetParam();
    return o;
  }
  MpiCommunicator async_{MPI_COMM_WORLD, options()};
};

TEST_P(MpiAsyncTest, AllReduceAsync) {
  at::Tensor a = make_tensor(contribution(rank_), at::kFloat);
  at::Tensor b = make_tensor(contribution(rank_), at::kDouble);
  at::Tensor h = make_tensor(contribution(rank_), at::kHalf);
  auto work_a = async_.all_reduce_async(a, ReduceOp::kAvg);
  auto work_b = async_.all_reduce_async(b, ReduceOp::kSum);
  auto work_h = async_.all_reduce_async(h, ReduceOp::kMax);
  work_b->wait();
  work_a->wait();
  // Polling until completion also leaves the finished result in the tensor.
  while (!work_h->is_completed()) {
  }
  EXPECT_TRUE(work_a->is_completed());
  EXPECT_TRUE(work_b->is_completed());
  EXPECT_EQ(to_vector(a), (std::vector<double>{s_ / n_, 2 * s_ / n_, -s_ / n_, 10}));
  EXPECT_EQ(to_vector(b), (std::vector<double>{s_, 2 * s_, -s_, 10.0 * n_}));
  EXPECT_EQ(to_vector(h), (std::vector<double>{1.0 * n_, 2.0 * n_, -1, 10}));
  work_h->wait();  // a no-op now; the avg division is not applied twice
  work_a->wait();
  EXPECT_EQ(to_vector(a), (std::vector<double>{s_ / n_, 2 * s_ / n_, -s_ / n_, 10}));
}

TEST_P(MpiAsyncTest, AsyncWorkDroppedUnwaitedStillCompletes) {
  at::Tensor t = make_tensor({rank_ + 1.0}, at::kDouble);
  async_.all_reduce_async(t, ReduceOp::kSum);  // the Work's destructor waits
  EXPECT_EQ(to_vector(t), (std::vector<double>{s_}));
}

// Blocking collectives called while all-reduces are queued run after them, on every
// rank in the same order, and see their results.
TEST_P(MpiAsyncTest, BlockingCollectivesAfterQueuedAllReducesKeepTheOrder) {
  std::vector<at::Tensor> big;
  std::vector<std::shared_ptr<Work>> works;
  for (int i = 0; i < 4; ++i) {
    big.push_back(at::full({1 << 18}, static_cast<double>(rank_ + i), at::kDouble));
    works.push_back(async_.all_reduce_async(big.back(), ReduceOp::kSum));
  }
  at::Tensor x = make_tensor({rank_ + 1.0}, at::kDouble);
  async_.all_reduce(x, ReduceOp::kSum);
  EXPECT_EQ(to_vector(x), (std::vector<double>{s_}));
  const auto names = async_.all_gather_bytes(std::to_string(rank_));
  EXPECT_EQ(static_cast<int>(names.size()), n_);
  async_.barrier();
  for (int i = 0; i < 4; ++i) {
    if (GetParam()) {
      EXPECT_TRUE(works[i]->is_completed()) << i;  // drained by the blocking calls
    }
    works[i]->wait();
    const double expected = s_ - n_ + static_cast<double>(n_) * i;  // sum of (r + i)
    EXPECT_EQ(big[i][0].item<double>(), expected) << i;
    EXPECT_EQ(big[i][(1 << 18) - 1].item<double>(), expected) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Mode, MpiAsyncTest, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Thread" : "Iallreduce";
                         });

// MPI-only parts of the argument errors (the rest is in the conformance suite): the host
// in the message, and CPU tensors only.
TEST_F(MpiCommunicatorTest, ArgumentErrorsNameHostAndDevice) {
  at::Tensor strided = make_tensor({1, 2, 3, 4, 5, 6}, at::kFloat).view({2, 3}).t();
  std::string message = comm_error([&] { comm_.all_reduce(strided, ReduceOp::kSum); });
  EXPECT_NE(message.find("(host " + comm_.host() + ")"), std::string::npos) << message;
  at::Tensor meta = at::empty({4}, at::TensorOptions().dtype(at::kFloat).device(at::kMeta));
  message = comm_error([&] { comm_.all_reduce(meta, ReduceOp::kSum); });
  EXPECT_NE(message.find("mpi backend: all_reduce on rank"), std::string::npos) << message;
  EXPECT_NE(message.find("CPU"), std::string::npos) << message;
  EXPECT_NE(message.find("meta"), std::string::npos) << message;
  message = comm_error([&] { comm_.broadcast(meta, 0); });
  EXPECT_NE(message.find("CPU"), std::string::npos) << message;
  // Every rank threw before any MPI call: the communicator is still in step.
  EXPECT_EQ(comm_.all_reduce_int(1, ReduceOp::kSum), n_);
}

// A real MPI error comes back as a CommError with MPI_Error_string's text: rank 0 of a
// two-rank communicator broadcasts more bytes than rank 1 expects (MPI_ERR_TRUNCATE).
TEST_F(MpiCommunicatorTest, MpiErrorCarriesMpiText) {
  MPI_Comm pair_raw = MPI_COMM_NULL;
  ASSERT_EQ(MPI_Comm_split(MPI_COMM_WORLD, rank_ < 2 ? 0 : MPI_UNDEFINED, rank_, &pair_raw),
            MPI_SUCCESS);
  MpiCommHandle pair(pair_raw);
  if (rank_ < 2) {
    MpiCommunicator two(pair.get());
    at::Tensor t = make_tensor(std::vector<double>(rank_ == 0 ? 8 : 2, 1.0), at::kFloat);
    std::string message = comm_error([&] { two.broadcast(t, 0); });
    if (rank_ == 1) {
      EXPECT_NE(message.find("mpi backend: broadcast failed on rank 1 of 2"), std::string::npos)
          << message;
      EXPECT_NE(message.find("MPI_ERR_TRUNCATE"), std::string::npos) << message;
    }
  }
  comm_.barrier();
}

TEST_F(MpiCommunicatorTest, MakeCommunicator) {
  for (const char* backend : {"mpi", "auto"}) {
    auto comm = make_communicator(backend, "cpu");
    EXPECT_EQ(comm->backend_name(), "mpi");
    EXPECT_EQ(comm->rank(), rank_);
    EXPECT_EQ(comm->size(), n_);
    EXPECT_EQ(comm->all_reduce_int(rank_, ReduceOp::kMax), n_ - 1);
  }
}

}  // namespace
}  // namespace dtrain::dist
