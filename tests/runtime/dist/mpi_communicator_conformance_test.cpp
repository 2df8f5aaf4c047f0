// The Communicator conformance suite (communicator_conformance.h) on the MPI backend,
// under mpirun -np 1, 2 and 4 (tests/mpi_gtest_main.cpp initializes MPI).
#include <mpi.h>

#include <functional>

#include "runtime/dist/mpi_communicator.h"
#include "tests/runtime/dist/communicator_conformance.h"

namespace dtrain::dist::conformance {
namespace {

// A fresh MpiCommunicator over MPI_COMM_WORLD per test (construction is collective).
struct MpiBackend {
  static const char* name() { return "mpi"; }
  static at::Device device() { return at::kCPU; }
  static void run(const std::function<void(Communicator&)>& fn, const Flavor& flavor = {}) {
    MpiCommunicator::Options options;
    if (flavor.max_count_per_call > 0) options.max_count_per_call = flavor.max_count_per_call;
    MpiCommunicator comm(MPI_COMM_WORLD, options);
    try {
      fn(comm);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "rank " << comm.rank() << " threw: " << e.what();
    }
  }
};

INSTANTIATE_TYPED_TEST_SUITE_P(Mpi, CommunicatorConformance, MpiBackend);

}  // namespace
}  // namespace dtrain::dist::conformance
