// main() for GoogleTest binaries that run under mpirun: initializes MPI, keeps the
// result printer on rank 0 only, finalizes MPI after all tests. Other ranks print each
// failed assertion (and each failed test) to stderr prefixed with "[rank R]", and rank 0
// names the ranks that failed tests at the end, so a failure seen by one rank only is
// visible too. A failure on any rank makes that rank exit non-zero, which makes mpirun
// exit non-zero.
#include <mpi.h>

#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace {

class MpiEnvironment : public ::testing::Environment {
 public:
  void TearDown() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    // Rank 0's summary only covers rank 0: tell which other ranks failed tests.
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int failed = ::testing::UnitTest::GetInstance()->failed_test_count();
    std::vector<int> all(static_cast<size_t>(size), 0);
    MPI_Gather(&failed, 1, MPI_INT, all.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (rank == 0) {
      for (int r = 1; r < size; ++r) {
        if (all[r] > 0) {
          std::fprintf(stderr, "[rank 0] rank %d failed %d test(s); see its \"[rank %d]\" lines\n",
                       r, all[r], r);
        }
      }
      std::fflush(stderr);
    }
    MPI_Finalize();
  }
};

// Prints failures of a rank other than 0 (whose default printer was removed), one line
// group per failed assertion, prefixed with the rank. Not thread-safe (gtest calls it
// from the test thread).
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}

  void OnTestStart(const ::testing::TestInfo& info) override {
    test_ = std::string(info.test_suite_name()) + "." + info.name();
  }

  // Called with gtest's internal lock held: must not call back into UnitTest.
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure in %s\n%s\n", rank_,
                 result.file_name() ? result.file_name() : "unknown", result.line_number(),
                 test_.c_str(), result.message());
    std::fflush(stderr);
  }

  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed()) {
      std::fprintf(stderr, "[rank %d] [  FAILED  ] %s.%s\n", rank_, info.test_suite_name(),
                   info.name());
      std::fflush(stderr);
    }
  }

 private:
  int rank_;
  std::string test_ = "(outside a test)";
};

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);  // as MpiRuntime
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));  // owned by gtest
  }
  ::testing::AddGlobalTestEnvironment(new MpiEnvironment);
  return RUN_ALL_TESTS();
}
