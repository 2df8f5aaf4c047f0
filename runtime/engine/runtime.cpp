// Runtime: MPI, logging, communicator and thread set-up (see runtime.h).
#include "runtime/engine/runtime.h"

#include <mpi.h>

#include <algorithm>
#include <thread>

#include <ATen/Parallel.h>

#include "runtime/base/logging.h"
#include "runtime/dist/mpi_runtime.h"

namespace dtrain::engine {

int threads_per_rank(int64_t requested, int local_size) {
  if (requested > 0) return static_cast<int>(requested);
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, hw / std::max(1, local_size));
}

Runtime::Runtime(int* argc, char*** argv) : mpi_(std::make_unique<dist::MpiRuntime>(argc, argv)) {
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size_);
  log::init(rank_, world_size_);
}

Runtime::~Runtime() {
  comm_.reset();  // communicators free their MPI handles before MPI_Finalize
  mpi_.reset();
}

std::shared_ptr<dist::Communicator> Runtime::connect(const Config& cfg) {
  comm_ = dist::make_communicator(cfg.get_string("DIST.BACKEND"), cfg.get_string("MODEL.DEVICE"));
  const int threads = threads_per_rank(cfg.get_int("SYSTEM.NUM_THREADS"), comm_->local_size());
  at::set_num_threads(threads);
  DTRAIN_LOG_DEBUG("{} intra-op threads per rank", threads);
  return comm_;
}

}  // namespace dtrain::engine
