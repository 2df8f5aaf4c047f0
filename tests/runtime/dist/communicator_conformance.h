// The Communicator conformance suite (tensorstore's habit): one set of test bodies that
// every backend must pass, instantiated per backend by the binary that can run it:
//
//   communicator_conformance_test.cpp      local (world of one), thread world of 1, 2, 4
//   mpi_communicator_conformance_test.cpp  mpi under mpirun -np 1, 2, 4
//   nccl_communicator_conformance_test.cpp nccl under mpirun (label gpu, NCCL builds only)
//
// A backend is a type B with
//   static const char* name();                  // backend_name()
//   static at::Device device();                 // where the suite's tensors live
//   static void run(const std::function<void(Communicator&)>& fn,
//                   const Flavor& flavor = {});  // fn on every rank, each with its comm
// `run` reports what a rank throws as a test failure naming the rank. Test bodies use
// EXPECT_*/ASSERT_* on whichever thread runs them (gtest records failures from any thread).
//
// Include this header in exactly one file per binary, then
//   INSTANTIATE_TYPED_TEST_SUITE_P(Mpi, CommunicatorConformance, MpiBackend);
#pragma once

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/dist/communicator.h"
#include "tests/gtest_util.h"

namespace dtrain::dist::conformance {

// Variations of a communicator a backend builds for one test.
struct Flavor {
  // > 0: the most elements (bytes for byte calls) one underlying call may move, so that
  // the splitting of messages past MPI's 2^31-1 count limit is tested with small
  // messages. Backends without such a limit (local, thread) ignore it.
  int64_t max_count_per_call = 0;
};

inline at::Tensor make(const std::vector<double>& values, at::ScalarType dtype, at::Device device) {
  at::Tensor t = at::empty({static_cast<int64_t>(values.size())}, at::kDouble);
  for (size_t i = 0; i < values.size(); ++i) t.data_ptr<double>()[i] = values[i];
  return t.to(dtype).to(device);
}

inline std::vector<double> values_of(const at::Tensor& t) {
  at::Tensor d = t.to(at::kCPU).to(at::kDouble).contiguous().reshape({-1});
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

// `values` as they read back after a round trip through `dtype`.
inline std::vector<double> as_dtype(const std::vector<double>& values, at::ScalarType dtype) {
  return values_of(make(values, dtype, at::kCPU));
}

// The CommError message fn throws; a failure when it throws nothing.
template <typename Fn>
std::string comm_error(Fn&& fn) {
  return dtrain::testing::ThrownMessage<CommError>(std::forward<Fn>(fn));
}

// Every backend's argument errors start with "<backend> backend: <op> on rank R of N".
inline void expect_error_prefix(const std::string& message, const Communicator& comm,
                                const std::string& op) {
  const std::string prefix = fmt::format("{} backend: {} on rank {} of {}", comm.backend_name(), op,
                                         comm.rank(), comm.size());
  EXPECT_EQ(message.rfind(prefix, 0), 0u) << "expected '" << prefix << "' to start:\n" << message;
}

inline const std::vector<at::ScalarType>& reduced_dtypes() {
  static const std::vector<at::ScalarType> all = {at::kFloat,    at::kDouble, at::kHalf,
                                                  at::kBFloat16, at::kChar,   at::kByte,
                                                  at::kShort,    at::kInt,    at::kLong};
  return all;
}

inline bool is_integral(at::ScalarType dtype) {
  return !at::isFloatingType(dtype) && dtype != at::kBool;
}

template <typename B>
class CommunicatorConformance : public ::testing::Test {};

TYPED_TEST_SUITE_P(CommunicatorConformance);

TYPED_TEST_P(CommunicatorConformance, Topology) {
  TypeParam::run([](Communicator& comm) {
    EXPECT_EQ(comm.backend_name(), TypeParam::name());
    const int n = comm.size();
    ASSERT_GE(n, 1);
    ASSERT_GE(comm.rank(), 0);
    ASSERT_LT(comm.rank(), n);
    EXPECT_GE(comm.local_rank(), 0);
    EXPECT_LT(comm.local_rank(), comm.local_size());
    EXPECT_LE(comm.local_size(), n);
    // The ranks are 0..n-1, each once.
    const auto all = comm.all_gather_bytes(std::to_string(comm.rank()));
    ASSERT_EQ(static_cast<int>(all.size()), n);
    for (int r = 0; r < n; ++r) EXPECT_EQ(all[r], std::to_string(r));
  });
}

// Every reducible dtype with every op, exact results (small integers, representable in
// every dtype). Rank r contributes {r+1, 2(r+1), 10, 3r} and, for signed dtypes, -(r+1).
TYPED_TEST_P(CommunicatorConformance, AllReduceEveryDtypeAndOp) {
  const at::Device device = TypeParam::device();
  TypeParam::run([device](Communicator& comm) {
    const int r = comm.rank();
    const double n = comm.size();
    const double s = n * (n + 1) / 2;  // sum of r+1
    for (at::ScalarType dtype : reduced_dtypes()) {
      const bool has_negatives = dtype != at::kByte;
      std::vector<double> mine = {r + 1.0, 2.0 * (r + 1), 10, 3.0 * r};
      std::vector<double> sum = {s, 2 * s, 10 * n, 3 * (s - n)};
      std::vector<double> max = {n, 2 * n, 10, 3 * (n - 1)};
      std::vector<double> min = {1, 2, 10, 0};
      if (has_negatives) {
        mine.push_back(-(r + 1.0));
        sum.push_back(-s);
        max.push_back(-1);
        min.push_back(-n);
      }
      std::vector<double> avg;
      for (double v : sum) avg.push_back(is_integral(dtype) ? std::trunc(v / n) : v / n);
      for (auto [op, expected] : {std::pair{ReduceOp::kSum, sum}, std::pair{ReduceOp::kAvg, avg},
                                  std::pair{ReduceOp::kMax, max}, std::pair{ReduceOp::kMin, min}}) {
        SCOPED_TRACE(fmt::format("{} op {}", c10::toString(dtype), static_cast<int>(op)));
        at::Tensor t = make(mine, dtype, device);
        comm.all_reduce(t, op);
        EXPECT_EQ(t.scalar_type(), dtype);
        EXPECT_EQ(t.device(), device);
        EXPECT_EQ(values_of(t), as_dtype(expected, dtype));
      }
    }
  });
}

// Integer averages divide the sum and truncate toward zero (C++ `/`), on every rank alike.
TYPED_TEST_P(CommunicatorConformance, AverageOfIntegersTruncatesTowardZero) {
  const at::Device device = TypeParam::device();
  TypeParam::run([device](Communicator& comm) {
    const int r = comm.rank();
    const double n = comm.size();
    // Sums: n(n-1)/2, its negation, 1 (only rank 0 contributes), 7n.
    const std::vector<double> mine = {1.0 * r, -1.0 * r, r == 0 ? 1.0 : 0.0, 7};
    const double s = n * (n - 1) / 2;
    const std::vector<double> expected = {std::trunc(s / n), std::trunc(-s / n), std::trunc(1 / n),
                                          7};
    for (at::ScalarType dtype : {at::kChar, at::kShort, at::kInt, at::kLong}) {
      SCOPED_TRACE(c10::toString(dtype));
      at::Tensor t = make(mine, dtype, device);
      comm.all_reduce(t, ReduceOp::kAvg);
      EXPECT_EQ(values_of(t), expected);
    }
    EXPECT_EQ(comm.all_reduce_int(r == 0 ? 1 : 0, ReduceOp::kAvg), comm.size() == 1 ? 1 : 0);
  });
}

// bool: kSum and kMax are "any", kMin is "all", kAvg is an error.
TYPED_TEST_P(CommunicatorConformance, Bools) {
  const at::Device device = TypeParam::device();
  TypeParam::run([device](Communicator& comm) {
    const bool last = comm.rank() == comm.size() - 1;
    const double several = comm.size() > 1 ? 1.0 : 0.0;
    // Columns: true on the last rank only; on every rank; on none; on all but the last.
    const std::vector<double> any = {1, 1, 0, several};
    const std::vector<double> all = {1 - several, 1, 0, 0};
    for (auto [op, expected] : {std::pair{ReduceOp::kSum, any}, std::pair{ReduceOp::kMax, any},
                                std::pair{ReduceOp::kMin, all}}) {
      SCOPED_TRACE(static_cast<int>(op));
      at::Tensor b = make({last ? 1.0 : 0.0, 1, 0, last ? 0.0 : 1.0}, at::kBool, device);
      comm.all_reduce(b, op);
      EXPECT_EQ(b.scalar_type(), at::kBool);
      EXPECT_EQ(values_of(b), expected);
    }
    at::Tensor b = make({1, 0}, at::kBool, device);
    const std::string message = comm_error([&] { comm.all_reduce(b, ReduceOp::kAvg); });
    expect_error_prefix(message, comm, "all_reduce");
    EXPECT_CONTAINS(message, "reduce op avg is not supported for dtype Bool");
    EXPECT_EQ(comm.all_reduce_int(1, ReduceOp::kSum), comm.size());  // still in step
  });
}

TYPED_TEST_P(CommunicatorConformance, EmptyAndZeroDimTensors) {
  const at::Device device = TypeParam::device();
  TypeParam::run([device](Communicator& comm) {
    at::Tensor empty = at::empty({0}, at::TensorOptions().dtype(at::kFloat).device(device));
    comm.all_reduce(empty, ReduceOp::kSum);
    comm.broadcast(empty, comm.size() - 1);
    EXPECT_EQ(empty.numel(), 0);
    at::Tensor scalar =
        at::scalar_tensor(comm.rank() + 1.0, at::TensorOptions().dtype(at::kDouble).device(device));
    comm.all_reduce(scalar, ReduceOp::kMax);
    EXPECT_EQ(scalar.dim(), 0);
    EXPECT_EQ(scalar.item<double>(), comm.size());
    at::Tensor matrix = make({1.0 * comm.rank(), 2, 3, 4, 5, 6}, at::kFloat, device).view({2, 3});
    comm.all_reduce(matrix, ReduceOp::kSum);
    const double n = comm.size();
    EXPECT_EQ(values_of(matrix),
              (std::vector<double>{n * (n - 1) / 2, 2 * n, 3 * n, 4 * n, 5 * n, 6 * n}));
  });
}

TYPED_TEST_P(CommunicatorConformance, ScalarHelpers) {
  TypeParam::run([](Communicator& comm) {
    const int r = comm.rank();
    const int n = comm.size();
    const int64_t s = static_cast<int64_t>(n) * (n + 1) / 2;
    EXPECT_EQ(comm.all_reduce_int(r + 1, ReduceOp::kSum), s);
    EXPECT_EQ(comm.all_reduce_int(r + 1, ReduceOp::kMax), n);
    EXPECT_EQ(comm.all_reduce_int(-(r + 1), ReduceOp::kMin), -n);
    EXPECT_EQ(comm.all_reduce_int(r + 1, ReduceOp::kAvg), s / n);
    EXPECT_EQ(comm.all_reduce_int(int64_t{1} << 40, ReduceOp::kSum), n * (int64_t{1} << 40));
    EXPECT_DOUBLE_EQ(comm.all_reduce_double(r + 1.0, ReduceOp::kAvg), static_cast<double>(s) / n);
    EXPECT_DOUBLE_EQ(comm.all_reduce_double(0.5 * r, ReduceOp::kMax), 0.5 * (n - 1));
  });
}

// Several asynchronous all-reduces in flight, waited for in another order, polled, or
// dropped unwaited: each ends with its own result, applied once.
TYPED_TEST_P(CommunicatorConformance, AllReduceAsync) {
  const at::Device device = TypeParam::device();
  TypeParam::run([device](Communicator& comm) {
    const int r = comm.rank();
    const double n = comm.size();
    const double s = n * (n + 1) / 2;
    at::Tensor a = make({r + 1.0, -(r + 1.0)}, at::kFloat, device);
    at::Tensor b = make({r + 1.0, 10}, at::kLong, device);
    at::Tensor h = make({r + 1.0, 2}, at::kHalf, device);
    auto work_a = comm.all_reduce_async(a, ReduceOp::kAvg);
    auto work_b = comm.all_reduce_async(b, ReduceOp::kSum);
    auto work_h = comm.all_reduce_async(h, ReduceOp::kMax);
    ASSERT_TRUE(work_a && work_b && work_h);
    work_b->wait();
    work_a->wait();
    work_h->wait();
    while (!work_h->is_completed()) {
    }
    EXPECT_TRUE(work_a->is_completed());
    EXPECT_EQ(values_of(a), (std::vector<double>{s / n, -s / n}));
    EXPECT_EQ(values_of(b), (std::vector<double>{s, 10 * n}));
    EXPECT_EQ(values_of(h), (std::vector<double>{n, 2}));
    work_a->wait();  // a second wait changes nothing (the division is not applied twice)
    EXPECT_EQ(values_of(a), (std::vector<double>{s / n, -s / n}));
    at::Tensor dropped = make({r + 1.0}, at::kDouble, device);
    comm.all_reduce_async(dropped, ReduceOp::kSum);  // the Work's destructor waits
    comm.barrier();
    EXPECT_EQ(values_of(dropped), (std::vector<double>{s}));
  });
}

TYPED_TEST_P(CommunicatorConformance, BroadcastFromEveryRoot) {
  const at::Device device = TypeParam::device();
  TypeParam::run([device](Communicator& comm) {
    const int r = comm.rank();
    for (int root = 0; root < comm.size(); ++root) {
      for (at::ScalarType dtype :
           {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16, at::kLong, at::kByte, at::kBool}) {
        SCOPED_TRACE(fmt::format("{} from root {}", c10::toString(dtype), root));
        const bool boolean = dtype == at::kBool;
        auto values = [&](int of) {
          return boolean ? std::vector<double>{of == root ? 1.0 : 0.0, 1, 0}
                         : std::vector<double>{1.0 * of, 3.0 * of + 1, 7};
        };
        at::Tensor t = make(values(r), dtype, device);
        comm.broadcast(t, root);
        EXPECT_EQ(values_of(t), as_dtype(values(root), dtype));
      }
      at::Tensor m = make({1.0 * r, 2, 3, 4, 5, 6}, at::kFloat, device).view({2, 3});
      comm.broadcast(m, root);
      EXPECT_EQ(values_of(m), (std::vector<double>{1.0 * root, 2, 3, 4, 5, 6}));
    }
  });
}

TYPED_TEST_P(CommunicatorConformance, AllGatherBytesOfDifferentSizes) {
  TypeParam::run([](Communicator& comm) {
    const int n = comm.size();
    // Rank r sends 3r bytes (rank 0 nothing), NULs included.
    auto payload = [](int of, int scale) {
      std::string s;
      for (int i = 0; i < scale * of; ++i) s.push_back(static_cast<char>((of * 31 + i) % 256));
      return s;
    };
    for (int scale : {3, 40000}) {
      const auto all = comm.all_gather_bytes(payload(comm.rank(), scale));
      ASSERT_EQ(static_cast<int>(all.size()), n);
      for (int r = 0; r < n; ++r) EXPECT_EQ(all[r], payload(r, scale)) << "from rank " << r;
    }
    EXPECT_EQ(comm.all_gather_bytes(""), std::vector<std::string>(static_cast<size_t>(n), ""));
    const auto last = comm.all_gather_bytes(comm.rank() == n - 1 ? "last" : "");
    for (int r = 0; r < n; ++r) EXPECT_EQ(last[r], r == n - 1 ? "last" : "");
  });
}

// Point-to-point rounds: a ring shift (a rank of a world of one sends to itself), of
// sizes from empty to past one MPI message chunk; then one pair, the others idle.
TYPED_TEST_P(CommunicatorConformance, SendRecvBytes) {
  TypeParam::run([](Communicator& comm) {
    const int n = comm.size(), r = comm.rank();
    auto payload = [](int from, size_t size) {
      std::string s(size, '\0');
      for (size_t i = 0; i < size; ++i) s[i] = static_cast<char>((from * 131 + i * 7) & 0xff);
      return s;
    };
    for (size_t size : {size_t{0}, size_t{5}, size_t{(3u << 20) + 17}}) {
      const int dest = (r + 1) % n, source = (r + n - 1) % n;
      EXPECT_EQ(comm.send_recv_bytes(payload(r, size), dest, source), payload(source, size))
          << "ring of " << size << " bytes";
    }
    const int last = n - 1;
    const std::string got = comm.send_recv_bytes(r == 0 ? payload(0, 1000) : "x", r == 0 ? last : -1,
                                                 r == last ? 0 : -1);
    EXPECT_EQ(got, r == last ? payload(0, 1000) : "");
  });
}

// Transfers in the background: each rank sends to the next one or two ranks and receives
// from the previous ones, sizes from empty to past one MPI message chunk, with another
// call of the communicator while they are in flight; one dropped unfinished leaves the
// communicator working; two exchanges at once, waited for in the reverse order, do not
// mix; naming this rank is refused.
TYPED_TEST_P(CommunicatorConformance, ExchangeBytesAsync) {
  TypeParam::run([](Communicator& comm) {
    const int n = comm.size(), r = comm.rank();
    auto payload = [](int from, size_t size, int salt) {
      std::string s(size, '\0');
      for (size_t i = 0; i < size; ++i) s[i] = static_cast<char>((from * 131 + i * 7 + salt) & 0xff);
      return s;
    };
    std::vector<int> dests, sources;
    for (int k = 1; k <= std::min(2, n - 1); ++k) {
      dests.push_back((r + k) % n);
      sources.push_back((r + n - k) % n);
    }
    for (size_t size : {size_t{0}, size_t{5}, size_t{(3u << 20) + 17}}) {
      auto mine = std::make_shared<const std::string>(payload(r, size, 0));
      auto exchange = comm.exchange_bytes_async(*mine, mine, dests, sources);
      EXPECT_EQ(comm.all_reduce_int(1, ReduceOp::kSum), n);
      for (int tries = 0; tries < 100000 && !exchange->test(); ++tries) {
      }
      const auto got = exchange->wait();
      ASSERT_EQ(got.size(), sources.size());
      for (size_t i = 0; i < sources.size(); ++i) {
        EXPECT_EQ(got[i], payload(sources[i], size, 0)) << size << " bytes from rank " << sources[i];
      }
    }
    {
      // Dropped unfinished (an error on the way): the communicator goes on working.
      auto big = std::make_shared<const std::string>(payload(r, 300000, 3));
      auto dropped = comm.exchange_bytes_async(*big, big, dests, sources);
    }
    EXPECT_EQ(comm.all_reduce_int(2, ReduceOp::kSum), 2 * n);
    const std::string first = payload(r, 1000, 1), second = payload(r, 70000, 2);
    auto a = comm.exchange_bytes_async(first, nullptr, dests, sources);
    auto b = comm.exchange_bytes_async(second, nullptr, dests, sources);
    const auto got_b = b->wait();
    const auto got_a = a->wait();
    for (size_t i = 0; i < sources.size(); ++i) {
      EXPECT_EQ(got_a[i], payload(sources[i], 1000, 1));
      EXPECT_EQ(got_b[i], payload(sources[i], 70000, 2));
    }
    try {
      comm.exchange_bytes_async("x", nullptr, {r}, {});
      ADD_FAILURE() << "an exchange with this rank itself was accepted";
    } catch (const CommError& e) {
      EXPECT_NE(std::string(e.what()).find(fmt::format("rank {} of {} names rank {} among its dests", r, n, r)),
                std::string::npos)
          << e.what();
    }
  });
}

TYPED_TEST_P(CommunicatorConformance, BroadcastBytesFromEveryRoot) {
  TypeParam::run([](Communicator& comm) {
    for (int root = comm.size() - 1; root >= 0; --root) {
      const std::string sent = std::string("root\0payload-", 13) + std::to_string(root);
      // Other ranks start with longer or shorter content, all of which is replaced.
      std::string bytes = comm.rank() == root ? sent : std::string(comm.rank() * 40, 'z');
      comm.broadcast_bytes(bytes, root);
      EXPECT_EQ(bytes, sent);
    }
    std::string empty = comm.rank() == comm.size() - 1 ? "" : "stale";
    comm.broadcast_bytes(empty, comm.size() - 1);
    EXPECT_EQ(empty, "");
    std::string big = comm.rank() == 0 ? std::string(1 << 20, 'b') : "";
    comm.broadcast_bytes(big, 0);
    EXPECT_EQ(big, std::string(1 << 20, 'b'));
  });
}

TYPED_TEST_P(CommunicatorConformance, Barrier) {
  TypeParam::run([](Communicator& comm) {
    for (int i = 0; i < 3; ++i) EXPECT_NO_THROW(comm.barrier());
    EXPECT_EQ(comm.all_reduce_int(1, ReduceOp::kSum), comm.size());
  });
}

// Messages longer than one call may carry are split (MPI: counts past 2^31-1); with a
// limit of 3 elements every collective runs in several pieces and gives the same result.
TYPED_TEST_P(CommunicatorConformance, ChunkedMessages) {
  const at::Device device = TypeParam::device();
  Flavor small;
  small.max_count_per_call = 3;
  TypeParam::run(
      [device](Communicator& comm) {
        const int r = comm.rank();
        const int n = comm.size();
        const double s = n * (n + 1) / 2.0;
        std::vector<double> mine, sum, from_last;
        for (int i = 0; i < 10; ++i) {
          mine.push_back((r + 1) * (i + 1));
          sum.push_back(s * (i + 1));
          from_last.push_back(n * (i + 1));
        }
        for (at::ScalarType dtype : {at::kDouble, at::kHalf, at::kLong}) {
          SCOPED_TRACE(c10::toString(dtype));
          at::Tensor t = make(mine, dtype, device);
          comm.all_reduce(t, ReduceOp::kSum);
          EXPECT_EQ(values_of(t), sum);
          at::Tensor a = make(mine, dtype, device);
          comm.all_reduce_async(a, ReduceOp::kAvg)->wait();
          std::vector<double> avg;
          for (double v : sum) avg.push_back(is_integral(dtype) ? std::trunc(v / n) : v / n);
          EXPECT_EQ(values_of(a), as_dtype(avg, dtype));
        }
        at::Tensor b = make(mine, at::kDouble, device);  // 80 bytes
        comm.broadcast(b, n - 1);
        EXPECT_EQ(values_of(b), from_last);
        // all_gather_bytes in rounds: totals above the limit, ranks of different sizes.
        auto payload = [](int of) {
          return std::string(static_cast<size_t>(5 * of + 1), 'a' + of);
        };
        const auto all = comm.all_gather_bytes(payload(r));
        ASSERT_EQ(static_cast<int>(all.size()), n);
        for (int i = 0; i < n; ++i) EXPECT_EQ(all[i], payload(i));
        std::string bytes = r == n - 1 ? std::string("0123456789abcdef") : "";
        comm.broadcast_bytes(bytes, n - 1);
        EXPECT_EQ(bytes, "0123456789abcdef");
        // exchange_bytes_async in chunks: a ring shift of 16 bytes, 3 at a time.
        if (n > 1) {
          const std::string ring = std::string(16, 'a' + r);
          const auto got = comm.exchange_bytes_async(ring, nullptr, {(r + 1) % n}, {(r + n - 1) % n})->wait();
          EXPECT_EQ(got, std::vector<std::string>{std::string(16, 'a' + (r + n - 1) % n)});
        }
      },
      small);
}

// Bad calls fail before any communication, on the ranks that made them, with
// "<backend> backend: <op> on rank R of N: <what>"; the ranks stay in step.
TYPED_TEST_P(CommunicatorConformance, ArgumentErrorFormat) {
  const at::Device device = TypeParam::device();
  TypeParam::run([device](Communicator& comm) {
    const int n = comm.size();
    at::Tensor strided = make({1, 2, 3, 4, 5, 6}, at::kFloat, device).view({2, 3}).t();
    std::string message = comm_error([&] { comm.all_reduce(strided, ReduceOp::kSum); });
    expect_error_prefix(message, comm, "all_reduce");
    EXPECT_CONTAINS(message, "contiguous");
    message = comm_error([&] { comm.broadcast(strided, 0); });
    expect_error_prefix(message, comm, "broadcast");
    EXPECT_CONTAINS(message, "contiguous");
    message = comm_error([&] { comm.all_reduce_async(strided, ReduceOp::kAvg); });
    expect_error_prefix(message, comm, "all_reduce_async");
    EXPECT_CONTAINS(message, "contiguous");

    at::Tensor undefined;
    message = comm_error([&] { comm.all_reduce(undefined, ReduceOp::kSum); });
    expect_error_prefix(message, comm, "all_reduce");
    EXPECT_CONTAINS(message, "undefined");

    at::Tensor complex =
        at::zeros({2}, at::TensorOptions().dtype(at::kComplexFloat).device(device));
    message = comm_error([&] { comm.all_reduce(complex, ReduceOp::kSum); });
    expect_error_prefix(message, comm, "all_reduce");
    EXPECT_CONTAINS(message, "dtype ComplexFloat is not supported for reductions");

    at::Tensor t = make({1}, at::kFloat, device);
    message = comm_error([&] { comm.broadcast(t, n); });
    expect_error_prefix(message, comm, "broadcast");
    EXPECT_CONTAINS(message, fmt::format("root {} is out of range [0, {})", n, n));
    std::string bytes;
    message = comm_error([&] { comm.broadcast_bytes(bytes, -1); });
    expect_error_prefix(message, comm, "broadcast_bytes");
    EXPECT_CONTAINS(message, fmt::format("root -1 is out of range [0, {})", n));
    // Every rank threw before communicating: the communicator is still in step.
    EXPECT_EQ(comm.all_reduce_int(1, ReduceOp::kSum), n);
  });
}

REGISTER_TYPED_TEST_SUITE_P(CommunicatorConformance, Topology, AllReduceEveryDtypeAndOp,
                            AverageOfIntegersTruncatesTowardZero, Bools, EmptyAndZeroDimTensors,
                            ScalarHelpers, AllReduceAsync, BroadcastFromEveryRoot,
                            AllGatherBytesOfDifferentSizes, SendRecvBytes, ExchangeBytesAsync,
                            BroadcastBytesFromEveryRoot, Barrier,
                            ChunkedMessages, ArgumentErrorFormat);

}  // namespace dtrain::dist::conformance
