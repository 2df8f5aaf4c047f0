// Runtime: MPI, logging, communicator and thread set-up (see runtime.h).
#include "runtime/engine/runtime.h"

#include <mpi.h>

#include <cstdio>
#include <cstdlib>

#include "runtime/base/logging.h"
#include "runtime/dist/mpi_runtime.h"
#include "runtime/engine/malloc_tuning.h"
#include "runtime/h5/handle.h"

namespace dtrain::engine {

Runtime::Runtime(int* argc, char*** argv) : mpi_(std::make_unique<dist::MpiRuntime>(argc, argv)) {
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size_);
  log::init(rank_, world_size_);
  DTRAIN_LOG_DEBUG("glibc malloc: {}", tune_malloc().why);
}

Runtime::~Runtime() {
  comm_.reset();  // communicators free their MPI handles before MPI_Finalize
  mpi_.reset();
}

void Runtime::end(int status) {
  if (!h5::file_close_failed()) return;
  DTRAIN_LOG_WARN_RANK("an HDF5 file could not be closed after a write error; exiting with "
                       "status {} without HDF5's and MPI's shutdown, which HDF5 1.10 cannot "
                       "complete after that (HDFGroup/hdf5#2257)",
                       status);
  spdlog::default_logger()->flush();
  std::fflush(nullptr);
  std::_Exit(status);
}

std::shared_ptr<dist::Communicator> Runtime::connect(const Config& cfg) {
  comm_ = dist::make_communicator(cfg.get_string("DIST.BACKEND"), cfg.get_string("MODEL.DEVICE"));
  threads_ = resolve_threads(probe_thread_inputs(cfg.get_int("SYSTEM.NUM_THREADS"),
                                                 comm_->local_size()));
  if (!threads_.warning.empty()) DTRAIN_LOG_WARN("{}", threads_.warning);
  set_intra_op_threads(threads_);
  DTRAIN_LOG_INFO("Intra-op threads per rank: {} ({})", threads_.count, threads_.detail);
  return comm_;
}

}  // namespace dtrain::engine
