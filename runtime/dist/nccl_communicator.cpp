// NCCL backend (see nccl_communicator.h).
#include "runtime/dist/nccl_communicator.h"

#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <unistd.h>

#include <cstring>

#include <fmt/format.h>

#include "runtime/base/error.h"
#include "runtime/dist/mpi_communicator.h"
#include "runtime/dist/rank_env.h"
#include "runtime/dist/reduce_rules.h"

namespace dtrain::dist {
namespace {

std::string nccl_version() {
  int v = 0;
  ncclGetVersion(&v);
  return fmt::format("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100);
}

#define DTRAIN_NCCL(call, op, rank)                                                         \
  do {                                                                                      \
    ncclResult_t r_ = (call);                                                               \
    if (r_ != ncclSuccess) {                                                                \
      throw CommError(fmt::format("nccl backend: {} failed on rank {}: {} (NCCL {}, {}:{})", \
                                  op, rank, ncclGetErrorString(r_), nccl_version(),          \
                                  __FILE__, __LINE__));                                     \
    }                                                                                       \
  } while (0)

#define DTRAIN_CUDA(call, op, rank)                                                       \
  do {                                                                                    \
    cudaError_t e_ = (call);                                                              \
    if (e_ != cudaSuccess) {                                                              \
      throw CommError(fmt::format("nccl backend: {} failed on rank {}: CUDA error {} ({}:{})", \
                                  op, rank, cudaGetErrorString(e_), __FILE__, __LINE__)); \
    }                                                                                     \
  } while (0)

ncclDataType_t nccl_type(at::ScalarType t, const char* op, int rank) {
  switch (t) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kHalf: return ncclFloat16;
#if NCCL_MAJOR > 2 || (NCCL_MAJOR == 2 && NCCL_MINOR >= 10)
    case at::kBFloat16: return ncclBfloat16;
#endif
    case at::kChar: return ncclInt8;
    case at::kByte: return ncclUint8;
    case at::kBool: return ncclUint8;
    case at::kInt: return ncclInt32;
    case at::kLong: return ncclInt64;
    default:
      throw CommError(fmt::format("nccl backend: {} on rank {}: dtype {} is not supported by this "
                                  "NCCL", op, rank, c10::toString(t)));
  }
}

// NCCL's op for `op` on `dtype`. bools travel as uint8, so "any" (kSum, kMax) is ncclMax
// and "all" (kMin) is ncclMin, as the MPI backend's logical or/and (reduce_rules.h).
ncclRedOp_t nccl_op(ReduceOp op, at::ScalarType dtype) {
  if (dtype == at::kBool) return op == ReduceOp::kMin ? ncclMin : ncclMax;
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kAvg: return ncclAvg;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

// An NCCL collective in flight on the communicator's stream.
class NcclWork : public Work {
 public:
  NcclWork(at::Tensor tensor, cudaStream_t stream, int rank) : tensor_(std::move(tensor)), rank_(rank) {
    DTRAIN_CUDA(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming), "cudaEventCreate", rank_);
    DTRAIN_CUDA(cudaEventRecord(done_, stream), "cudaEventRecord", rank_);
  }
  ~NcclWork() override { cudaEventDestroy(done_); }
  // Makes LibTorch's default stream wait for the collective (no host blocking).
  void wait() override {
    DTRAIN_CUDA(cudaStreamWaitEvent(cudaStreamLegacy, done_, 0), "Work::wait", rank_);
  }
  bool is_completed() override { return cudaEventQuery(done_) == cudaSuccess; }

 private:
  at::Tensor tensor_;  // keeps the buffer alive until the collective finished
  cudaEvent_t done_{};
  int rank_;
};

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator() : mpi_(std::make_unique<MpiCommunicator>()) {
    int gpus = 0;
    DTRAIN_CUDA(cudaGetDeviceCount(&gpus), "cudaGetDeviceCount", mpi_->rank());
    device_ = select_cuda_device(mpi_->local_rank(), gpus);
    DTRAIN_CUDA(cudaSetDevice(device_), "cudaSetDevice", mpi_->rank());
    refuse_shared_gpus(gpus);
    ncclUniqueId id{};
    if (mpi_->rank() == 0) DTRAIN_NCCL(ncclGetUniqueId(&id), "ncclGetUniqueId", 0);
    std::string bytes(reinterpret_cast<const char*>(&id), sizeof id);
    mpi_->broadcast_bytes(bytes, 0);
    std::memcpy(&id, bytes.data(), sizeof id);
    DTRAIN_NCCL(ncclCommInitRank(&comm_, mpi_->size(), id, mpi_->rank()), "ncclCommInitRank",
                mpi_->rank());
    DTRAIN_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate",
                mpi_->rank());
    DTRAIN_CUDA(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming), "cudaEventCreate",
                mpi_->rank());
  }
  ~NcclCommunicator() override {
    if (stream_) cudaStreamSynchronize(stream_);
    if (comm_) ncclCommDestroy(comm_);
    if (ready_) cudaEventDestroy(ready_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  std::string backend_name() const override { return "nccl"; }
  int rank() const override { return mpi_->rank(); }
  int size() const override { return mpi_->size(); }
  int local_rank() const override { return mpi_->local_rank(); }
  int local_size() const override { return mpi_->local_size(); }

  void barrier() override {
    DTRAIN_CUDA(cudaStreamSynchronize(stream_), "barrier", rank());
    mpi_->barrier();
  }

  void broadcast(at::Tensor& t, int root) override {
    if (t.defined() && !t.is_cuda()) return mpi_->broadcast(t, root);
    check(t, "broadcast");
    check_root(root, "broadcast");
    order_after_default_stream();
    DTRAIN_NCCL(ncclBroadcast(t.data_ptr(), t.data_ptr(), t.numel(),
                              nccl_type(t.scalar_type(), "broadcast", rank()), root, comm_, stream_),
                "broadcast", rank());
    NcclWork(t, stream_, rank()).wait();
  }

  void all_reduce(at::Tensor& t, ReduceOp op) override {
    if (t.defined() && !t.is_cuda()) return mpi_->all_reduce(t, op);
    start_all_reduce(t, op, "all_reduce")->wait();
  }

  std::shared_ptr<Work> all_reduce_async(at::Tensor& t, ReduceOp op) override {
    if (t.defined() && !t.is_cuda()) return mpi_->all_reduce_async(t, op);
    return start_all_reduce(t, op, "all_reduce_async");
  }

  std::vector<std::string> all_gather_bytes(const std::string& mine) override {
    return mpi_->all_gather_bytes(mine);
  }
  void broadcast_bytes(std::string& bytes, int root) override {
    check_root(root, "broadcast_bytes");
    mpi_->broadcast_bytes(bytes, root);
  }
  std::string send_recv_bytes(const std::string& send, int dest, int source) override {
    return mpi_->send_recv_bytes(send, dest, source);
  }
  std::unique_ptr<Exchange> exchange_bytes_async(std::string_view send, std::shared_ptr<const void> keep,
                                                 const std::vector<int>& dests,
                                                 const std::vector<int>& sources) override {
    return mpi_->exchange_bytes_async(send, std::move(keep), dests, sources);
  }

 private:
  // Argument errors read "nccl backend: <op> on rank R of N: ..." like the other backends'.
  void check(const at::Tensor& t, const char* op) const {
    DTRAIN_CHECK_T(CommError, t.defined(),
                   "nccl backend: {} on rank {} of {}: the tensor is undefined", op, rank(),
                   size());
    DTRAIN_CHECK_T(CommError, t.is_contiguous(),
                   "nccl backend: {} on rank {} of {}: the tensor must be contiguous", op, rank(),
                   size());
    DTRAIN_CHECK_T(CommError, t.get_device() == device_,
                   "nccl backend: {} on rank {} of {}: tensor is on cuda:{} but this rank uses "
                   "cuda:{}",
                   op, rank(), size(), t.get_device(), device_);
  }
  void check_root(int root, const char* op) const {
    DTRAIN_CHECK_T(CommError, root >= 0 && root < size(),
                   "nccl backend: {} on rank {} of {}: root {} is out of range [0, {})", op, rank(),
                   size(), root, size());
  }
  std::shared_ptr<Work> start_all_reduce(at::Tensor& t, ReduceOp op, const char* name) {
    check(t, name);
    const std::string why = reduction_error(t.scalar_type(), op);
    DTRAIN_CHECK_T(CommError, why.empty(), "nccl backend: {} on rank {} of {}: {}", name, rank(),
                   size(), why);
    const ncclDataType_t type = nccl_type(t.scalar_type(), name, rank());
    order_after_default_stream();
    DTRAIN_NCCL(ncclAllReduce(t.data_ptr(), t.data_ptr(), t.numel(), type,
                              nccl_op(op, t.scalar_type()), comm_, stream_),
                name, rank());
    return std::make_shared<NcclWork>(t, stream_, rank());
  }
  // NCCL refuses two ranks on one GPU ("Duplicate GPU detected", as ncclInvalidUsage
  // from ncclCommInitRank). Every rank compares (host, PCI bus id) of all ranks first and
  // throws the same error that says what to change (all ranks see the same list).
  void refuse_shared_gpus(int visible_gpus) {
    char bus[32] = {};
    DTRAIN_CUDA(cudaDeviceGetPCIBusId(bus, sizeof bus, device_), "cudaDeviceGetPCIBusId", rank());
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    const std::vector<std::string> all =
        mpi_->all_gather_bytes(std::string(host) + '\n' + bus);
    for (size_t a = 0; a < all.size(); ++a) {
      for (size_t b = a + 1; b < all.size(); ++b) {
        if (all[a] != all[b]) continue;
        const size_t nl = all[a].find('\n');
        throw CommError(fmt::format(
            "nccl backend: ranks {} and {} both use GPU {} on host {} ({} GPU(s) visible to "
            "rank {}, {} ranks on its node); NCCL needs one GPU per rank: start at most as "
            "many ranks per node as GPUs, or use DIST.BACKEND mpi",
            a, b, all[a].substr(nl + 1), all[a].substr(0, nl), visible_gpus, rank(),
            local_size()));
      }
    }
  }

  // NCCL's stream must see what LibTorch queued on the default stream so far.
  void order_after_default_stream() {
    DTRAIN_CUDA(cudaEventRecord(ready_, cudaStreamLegacy), "cudaEventRecord", rank());
    DTRAIN_CUDA(cudaStreamWaitEvent(stream_, ready_, 0), "cudaStreamWaitEvent", rank());
  }

  std::unique_ptr<MpiCommunicator> mpi_;
  int device_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;
};

}  // namespace

std::shared_ptr<Communicator> make_nccl_communicator(const std::string& device) {
  DTRAIN_CHECK_T(CommError, device.rfind("cuda", 0) == 0,
                 "nccl backend needs MODEL.DEVICE cuda, got '{}'", device);
  return std::make_shared<NcclCommunicator>();
}

}  // namespace dtrain::dist
