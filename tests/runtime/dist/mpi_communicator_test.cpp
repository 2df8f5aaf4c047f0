// MpiCommunicator under mpirun (-np 2 and 4): exact results of every collective, async
// all-reduce, chunked messages, topology, and errors carrying backend/op/rank/MPI text.
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

TEST_F(MpiCommunicatorTest, AllReduceExactValues) {
  const double n = n_;
  for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kLong}) {
    SCOPED_TRACE(c10::toString(dtype));
    const bool integral = dtype == at::kLong;
    struct Case {
      ReduceOp op;
      std::vector<double> expected;
    };
    const std::vector<Case> cases = {
        {ReduceOp::kSum, {s_, 2 * s_, -s_, 10 * n}},
        {ReduceOp::kMax, {n, 2 * n, -1, 10}},
        {ReduceOp::kMin, {1, 2, -n, 10}},
        // Integer averages truncate toward zero: n=2 gives 3/2=1, -3/2=-1.
        {ReduceOp::kAvg, integral ? std::vector<double>{std::trunc(s_ / n), std::trunc(2 * s_ / n),
                                                        std::trunc(-s_ / n), 10}
                                  : std::vector<double>{s_ / n, 2 * s_ / n, -s_ / n, 10}},
    };
    for (const Case& c : cases) {
      at::Tensor t = make_tensor(contribution(rank_), dtype);
      comm_.all_reduce(t, c.op);
      EXPECT_EQ(t.scalar_type(), dtype);
      EXPECT_EQ(to_vector(t), c.expected) << "op " << static_cast<int>(c.op);
    }
  }
}

TEST_F(MpiCommunicatorTest, AllReduceOtherDtypes) {
  const double n = n_;
  for (at::ScalarType dtype : {at::kHalf, at::kBFloat16, at::kInt, at::kShort, at::kChar}) {
    SCOPED_TRACE(c10::toString(dtype));
    at::Tensor t = make_tensor(contribution(rank_), dtype);
    comm_.all_reduce(t, ReduceOp::kSum);
    EXPECT_EQ(t.scalar_type(), dtype);
    EXPECT_EQ(to_vector(t), (std::vector<double>{s_, 2 * s_, -s_, 10 * n}));
  }
  // float16/bfloat16 averages go through float32: (1+2)/2 = 1.5, (1+..+4)/4 = 2.5 exactly.
  for (at::ScalarType dtype : {at::kHalf, at::kBFloat16}) {
    at::Tensor t = make_tensor({rank_ + 1.0}, dtype);
    comm_.all_reduce(t, ReduceOp::kAvg);
    EXPECT_EQ(to_vector(t), (std::vector<double>{s_ / n}));
  }
  at::Tensor u = make_tensor({static_cast<double>(rank_), 200}, at::kByte);
  comm_.all_reduce(u, ReduceOp::kMax);
  EXPECT_EQ(to_vector(u), (std::vector<double>{n - 1, 200}));
  // bool: sum/max are "any", min is "all".
  const bool only_last = rank_ == n_ - 1;
  for (auto [op, expected] : {std::pair{ReduceOp::kSum, std::vector<double>{1, 1, 0}},
                              std::pair{ReduceOp::kMax, std::vector<double>{1, 1, 0}},
                              std::pair{ReduceOp::kMin, std::vector<double>{0, 1, 0}}}) {
    at::Tensor b = make_tensor({only_last ? 1.0 : 0.0, 1, 0}, at::kBool);
    comm_.all_reduce(b, op);
    EXPECT_EQ(to_vector(b), expected);
  }
}

TEST_F(MpiCommunicatorTest, ScalarHelpers) {
  EXPECT_EQ(comm_.all_reduce_int(rank_ + 1, ReduceOp::kSum), static_cast<int64_t>(s_));
  EXPECT_EQ(comm_.all_reduce_int(rank_ + 1, ReduceOp::kMax), n_);
  EXPECT_EQ(comm_.all_reduce_int(-(rank_ + 1), ReduceOp::kMin), -n_);
  EXPECT_EQ(comm_.all_reduce_int(rank_ + 1, ReduceOp::kAvg), static_cast<int64_t>(s_) / n_);
  EXPECT_DOUBLE_EQ(comm_.all_reduce_double(rank_ + 1.0, ReduceOp::kAvg), s_ / n_);
  EXPECT_DOUBLE_EQ(comm_.all_reduce_double(0.5 * rank_, ReduceOp::kMax), 0.5 * (n_ - 1));
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

TEST_F(MpiCommunicatorTest, BroadcastFromFirstAndLastRank) {
  for (int root : {0, n_ - 1}) {
    for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kLong, at::kHalf, at::kBool}) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + " root " + std::to_string(root));
      std::vector<double> values = {static_cast<double>(rank_ % 2), rank_ * 3.0, 7.0};
      if (dtype == at::kBool) values = {static_cast<double>(rank_ == root), 1, 0};
      at::Tensor t = make_tensor(values, dtype);
      const std::vector<double> expected = to_vector(
          make_tensor(dtype == at::kBool ? std::vector<double>{1, 1, 0}
                                         : std::vector<double>{root % 2 * 1.0, root * 3.0, 7},
                      dtype));
      comm_.broadcast(t, root);
      EXPECT_EQ(to_vector(t), expected);
    }
  }
  // Multi-dimensional tensors are broadcast whole.
  at::Tensor m = make_tensor({1.0 * rank_, 2, 3, 4, 5, 6}, at::kFloat).view({2, 3});
  comm_.broadcast(m, n_ - 1);
  EXPECT_EQ(to_vector(m.reshape({-1})), (std::vector<double>{n_ - 1.0, 2, 3, 4, 5, 6}));
}

TEST_F(MpiCommunicatorTest, AllGatherBytesWithDifferentSizes) {
  // Rank r sends r*3 bytes (rank 0 sends nothing), including NUL bytes.
  auto payload = [](int r) {
    std::string s;
    for (int i = 0; i < 3 * r; ++i) s.push_back(static_cast<char>((r * 31 + i) % 256));
    return s;
  };
  std::vector<std::string> all = comm_.all_gather_bytes(payload(rank_));
  ASSERT_EQ(static_cast<int>(all.size()), n_);
  for (int r = 0; r < n_; ++r) EXPECT_EQ(all[r], payload(r)) << "from rank " << r;
  // Everyone empty.
  all = comm_.all_gather_bytes("");
  EXPECT_EQ(all, std::vector<std::string>(n_, ""));
  // Only the last rank non-empty.
  all = comm_.all_gather_bytes(rank_ == n_ - 1 ? "last" : "");
  for (int r = 0; r < n_; ++r) EXPECT_EQ(all[r], r == n_ - 1 ? "last" : "");
}

TEST_F(MpiCommunicatorTest, BroadcastBytes) {
  for (int root : {0, n_ - 1}) {
    const std::string sent = std::string("root\0payload-", 13) + std::to_string(root);
    // Non-roots start with longer or shorter content, all of which is replaced.
    std::string bytes = rank_ == root ? sent : std::string(rank_ * 40, 'z');
    comm_.broadcast_bytes(bytes, root);
    EXPECT_EQ(bytes, sent);
  }
  std::string empty = rank_ == 0 ? "" : "stale";
  comm_.broadcast_bytes(empty, 0);
  EXPECT_EQ(empty, "");
}

TEST_F(MpiCommunicatorTest, Barrier) {
  for (int i = 0; i < 3; ++i) EXPECT_NO_THROW(comm_.barrier());
  // After a barrier every rank's value is visible to a following collective.
  EXPECT_EQ(comm_.all_reduce_int(1, ReduceOp::kSum), n_);
}

// Messages longer than max_count_per_call are split into several MPI calls.
TEST_F(MpiCommunicatorTest, ChunkedMessages) {
  MpiCommunicator::Options options;
  options.max_count_per_call = 3;
  MpiCommunicator small(MPI_COMM_WORLD, options);
  std::vector<double> mine, sum;
  for (int i = 0; i < 10; ++i) {
    mine.push_back((rank_ + 1) * (i + 1));
    sum.push_back(s_ * (i + 1));
  }
  at::Tensor t = make_tensor(mine, at::kDouble);
  small.all_reduce(t, ReduceOp::kSum);
  EXPECT_EQ(to_vector(t), sum);
  at::Tensor a = make_tensor(mine, at::kLong);
  auto work = small.all_reduce_async(a, ReduceOp::kSum);
  work->wait();
  EXPECT_EQ(to_vector(a), sum);
  at::Tensor h = make_tensor(mine, at::kHalf);
  small.all_reduce(h, ReduceOp::kSum);
  EXPECT_EQ(to_vector(h), sum);

  at::Tensor b = make_tensor(mine, at::kDouble);  // 80 bytes in 27 chunks of <= 3 bytes
  small.broadcast(b, n_ - 1);
  std::vector<double> last;
  for (int i = 0; i < 10; ++i) last.push_back(n_ * (i + 1));
  EXPECT_EQ(to_vector(b), last);

  // all_gather_bytes in rounds: totals well above 3 bytes, ranks of different sizes.
  auto payload = [](int r) { return std::string(static_cast<size_t>(5 * r + 1), 'a' + r); };
  std::vector<std::string> all = small.all_gather_bytes(payload(rank_));
  ASSERT_EQ(static_cast<int>(all.size()), n_);
  for (int r = 0; r < n_; ++r) EXPECT_EQ(all[r], payload(r));

  std::string bytes = rank_ == 0 ? std::string("0123456789abcdef") : "";
  small.broadcast_bytes(bytes, 0);
  EXPECT_EQ(bytes, "0123456789abcdef");
}

TEST_F(MpiCommunicatorTest, ArgumentErrorsNameBackendOpAndRank) {
  const std::string who = "rank " + std::to_string(rank_) + " of " + std::to_string(n_);
  at::Tensor strided = make_tensor({1, 2, 3, 4, 5, 6}, at::kFloat).view({2, 3}).t();
  std::string message = comm_error([&] { comm_.all_reduce(strided, ReduceOp::kSum); });
  EXPECT_NE(message.find("mpi"), std::string::npos) << message;
  EXPECT_NE(message.find("all_reduce"), std::string::npos) << message;
  EXPECT_NE(message.find("contiguous"), std::string::npos) << message;
  EXPECT_NE(message.find(who), std::string::npos) << message;
  message = comm_error([&] { comm_.broadcast(strided, 0); });
  EXPECT_NE(message.find("broadcast"), std::string::npos) << message;
  message = comm_error([&] { comm_.all_reduce_async(strided, ReduceOp::kAvg); });
  EXPECT_NE(message.find("all_reduce_async"), std::string::npos) << message;

  at::Tensor meta = at::empty({4}, at::TensorOptions().dtype(at::kFloat).device(at::kMeta));
  message = comm_error([&] { comm_.all_reduce(meta, ReduceOp::kSum); });
  EXPECT_NE(message.find("mpi"), std::string::npos) << message;
  EXPECT_NE(message.find("CPU"), std::string::npos) << message;
  EXPECT_NE(message.find("meta"), std::string::npos) << message;

  at::Tensor complex = at::empty({2}, at::kComplexFloat);
  message = comm_error([&] { comm_.all_reduce(complex, ReduceOp::kSum); });
  EXPECT_NE(message.find("ComplexFloat"), std::string::npos) << message;
  at::Tensor flags = make_tensor({1, 0}, at::kBool);
  message = comm_error([&] { comm_.all_reduce(flags, ReduceOp::kAvg); });
  EXPECT_NE(message.find("avg"), std::string::npos) << message;
  EXPECT_NE(message.find("Bool"), std::string::npos) << message;

  at::Tensor t = make_tensor({1}, at::kFloat);
  message = comm_error([&] { comm_.broadcast(t, n_); });
  EXPECT_NE(message.find("root " + std::to_string(n_)), std::string::npos) << message;
  std::string bytes;
  message = comm_error([&] { comm_.broadcast_bytes(bytes, -1); });
  EXPECT_NE(message.find("broadcast_bytes"), std::string::npos) << message;
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
