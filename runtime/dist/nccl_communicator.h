// NcclCommunicator: the NCCL backend for CUDA tensors (compiled only when CMake finds
// NCCL and a CUDA LibTorch; see cmake/FindNCCL.cmake).
//
//   auto comm = make_communicator("nccl", "cuda");   // or "auto" with MODEL.DEVICE cuda
//
// One NCCL communicator per job: rank 0 creates the unique id, MPI broadcasts it, every
// rank selects GPU local_rank and joins. Collectives run on the communicator's own CUDA
// stream, ordered after the work already queued on LibTorch's default (legacy) stream
// by an event, and the default stream waits for them in Work::wait(). Ranks that would
// share a GPU (more ranks on a node than GPUs) are refused with a CommError naming the
// ranks and the GPU before NCCL starts, the same on every rank. CPU tensors and
// byte collectives go over the MPI communicator used for bootstrap. Errors are
// CommError with the operation, the rank, NCCL's message, its version and file:line.
// Not thread-safe, except that collectives may be issued from autograd's device
// threads as long as one thread at a time does.
#pragma once

#include <memory>
#include <string>

#include "runtime/dist/communicator.h"

namespace dtrain::dist {

// `device`: "cuda" or "cuda:<i>" (the index is ignored: each rank takes local_rank).
std::shared_ptr<Communicator> make_nccl_communicator(const std::string& device);

}  // namespace dtrain::dist
