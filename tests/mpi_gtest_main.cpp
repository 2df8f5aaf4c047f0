// main() for GoogleTest binaries that run under mpirun: initializes MPI, keeps the
// result printer on rank 0 only, finalizes MPI after all tests. A failure on any rank
// makes that rank exit non-zero, which makes mpirun exit non-zero.
#include <mpi.h>

#include <gtest/gtest.h>

namespace {

class MpiEnvironment : public ::testing::Environment {
 public:
  void TearDown() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
};

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  ::testing::AddGlobalTestEnvironment(new MpiEnvironment);
  return RUN_ALL_TESTS();
}
