// The Communicator conformance suite (communicator_conformance.h) on the NCCL backend with
// CUDA tensors, under mpirun (label gpu; built only with DTRAIN_HAVE_NCCL). Each rank
// uses the GPU its local rank selects.
#include <algorithm>
#include <functional>
#include <memory>

#include "runtime/dist/communicator.h"
#include "runtime/dist/rank_env.h"
#include "tests/runtime/dist/communicator_conformance.h"

namespace dtrain::dist::conformance {
namespace {

// A fresh NCCL communicator per test, on the GPU the rank's local rank selects. With more
// ranks on a node than GPUs, NCCL refuses (nccl_communicator_test checks the refusal) and
// the tests are skipped. NCCL has no count limit per call here: the Flavor is ignored.
struct NcclBackend {
  static const char* name() { return "nccl"; }
  static int visible_gpus() { return static_cast<int>(at::globalContext().getNumGPUs()); }
  static RankEnv env() {
    auto env = rank_env_from_process();
    return env ? *env : RankEnv{};
  }
  static at::Device device() {
    const int gpus = std::max(1, visible_gpus());
    return at::Device(at::kCUDA,
                      static_cast<c10::DeviceIndex>(select_cuda_device(env().local_rank, gpus)));
  }
  static void run(const std::function<void(Communicator&)>& fn, const Flavor& = {}) {
    if (!at::hasCUDA()) GTEST_SKIP() << "no GPU";
    if (env().local_size > visible_gpus()) {
      GTEST_SKIP() << env().local_size << " ranks on this node but " << visible_gpus()
                   << " GPU(s): NCCL needs one GPU per rank";
    }
    std::shared_ptr<Communicator> comm = make_communicator("nccl", "cuda");
    try {
      fn(*comm);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "rank " << comm->rank() << " threw: " << e.what();
    }
  }
};

INSTANTIATE_TYPED_TEST_SUITE_P(Nccl, CommunicatorConformance, NcclBackend);

}  // namespace
}  // namespace dtrain::dist::conformance
