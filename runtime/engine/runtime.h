// Process-wide runtime set-up, done once by the launcher: MPI, logging with the rank,
// the communicator and intra-op threads. This is the only place that touches
// process-global state (MPI, spdlog's default logger, LibTorch's thread pool).
//
//   dtrain::engine::Runtime rt(&argc, &argv);   // MPI_Init_thread, rank-tagged logs
//   Config cfg = ...;                            // may fail; rt.rank() says who reports
//   auto comm = rt.connect(cfg);                 // DIST.BACKEND, intra-op threads
//
// Not thread-safe; construct one per process on the main thread.
#pragma once

#include <memory>

#include "runtime/base/config.h"
#include "runtime/dist/communicator.h"
#include "runtime/engine/threads.h"

namespace dtrain::dist {
class MpiRuntime;
}

namespace dtrain::engine {

class Runtime {
 public:
  Runtime(int* argc, char*** argv);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Call with the process's exit status just before returning it. Returns, and the
  // destructor shuts MPI down, unless an HDF5 file could not be closed in this process
  // (h5::file_close_failed(): a save onto a full disk): then HDF5's shutdown would crash
  // (HDF5 1.10), so it flushes the logs and ends the process with `status` at once.
  void end(int status);
  // Rank and size in MPI_COMM_WORLD (0 and 1 without mpirun).
  int rank() const { return rank_; }
  int world_size() const { return world_size_; }

  // Builds the communicator for DIST.BACKEND / MODEL.DEVICE and sets the intra-op
  // thread count: SYSTEM.NUM_THREADS, else OMP_NUM_THREADS, else this process's CPUs
  // (affinity mask, cgroup quota) / ranks on this node (threads.h); logs which won.
  std::shared_ptr<dist::Communicator> connect(const Config& cfg);
  // The thread count connect() set, and where it came from.
  ThreadCount threads() const { return threads_; }

 private:
  std::unique_ptr<dist::MpiRuntime> mpi_;
  std::shared_ptr<dist::Communicator> comm_;
  int rank_ = 0;
  int world_size_ = 1;
  ThreadCount threads_;
};

}  // namespace dtrain::engine
