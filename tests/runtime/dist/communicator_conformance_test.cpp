// The Communicator conformance suite (communicator_conformance.h) on the backends that
// run in one process: the world of one (local) and the thread world of 1, 2 and 4 ranks.
#include "tests/runtime/dist/communicator_conformance.h"

#include <functional>

#include "runtime/dist/local_communicator.h"
#include "runtime/dist/thread_communicator.h"

namespace dtrain::dist::conformance {
namespace {

struct LocalBackend {
  static const char* name() { return "local"; }
  static at::Device device() { return at::kCPU; }
  static void run(const std::function<void(Communicator&)>& fn, const Flavor& = {}) {
    LocalCommunicator comm;
    fn(comm);
  }
};

// The thread world has no count limit per call: Flavor::max_count_per_call is ignored.
template <int N>
struct ThreadBackend {
  static const char* name() { return "thread"; }
  static at::Device device() { return at::kCPU; }
  static void run(const std::function<void(Communicator&)>& fn, const Flavor& = {}) {
    const auto errors = run_ranks(N, fn);
    for (size_t r = 0; r < errors.size(); ++r) {
      if (errors[r]) ADD_FAILURE() << "rank " << r << " threw: " << exception_message(errors[r]);
    }
  }
};

using Backends =
    ::testing::Types<LocalBackend, ThreadBackend<1>, ThreadBackend<2>, ThreadBackend<4>>;

// Names the instantiations Local, Thread1, Thread2, Thread4.
struct BackendName {
  template <typename B>
  static std::string GetName(int) {
    if constexpr (std::is_same_v<B, LocalBackend>) {
      return "Local";
    } else if constexpr (std::is_same_v<B, ThreadBackend<1>>) {
      return "Thread1";
    } else if constexpr (std::is_same_v<B, ThreadBackend<2>>) {
      return "Thread2";
    } else {
      return "Thread4";
    }
  }
};

INSTANTIATE_TYPED_TEST_SUITE_P(InProcess, CommunicatorConformance, Backends, BackendName);

}  // namespace
}  // namespace dtrain::dist::conformance
