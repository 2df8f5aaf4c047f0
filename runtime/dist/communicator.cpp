// Communicator's default methods and make_communicator(), the backend factory.
#include "runtime/dist/communicator.h"

#include <algorithm>

#include <ATen/ops/empty.h>

#include "runtime/base/error.h"
#include "runtime/dist/local_communicator.h"
#include "runtime/dist/mpi_communicator.h"

namespace dtrain::dist {

#ifdef DTRAIN_HAVE_NCCL
// Defined by nccl_communicator.cpp (compiled only with DTRAIN_HAVE_NCCL).
std::shared_ptr<Communicator> make_nccl_communicator(const std::string& device);
#endif

namespace {

// The Work of an operation that already finished when it was returned.
class CompletedWork : public Work {
 public:
  void wait() override {}
  bool is_completed() override { return true; }
};

}  // namespace

std::shared_ptr<Work> Communicator::all_reduce_async(at::Tensor& tensor, ReduceOp op) {
  all_reduce(tensor, op);
  return std::make_shared<CompletedWork>();
}

namespace {

class FinishedExchange : public Exchange {
 public:
  explicit FinishedExchange(std::vector<std::string> received) : received_(std::move(received)) {}
  bool test() override { return true; }
  std::vector<std::string> wait() override { return std::move(received_); }

 private:
  std::vector<std::string> received_;
};

}  // namespace

void check_exchange_ranks(const Communicator& comm, const std::vector<int>& dests,
                          const std::vector<int>& sources) {
  for (const auto* list : {&dests, &sources}) {
    for (size_t i = 0; i < list->size(); ++i) {
      const int r = (*list)[i];
      const bool twice = std::find(list->begin(), list->begin() + static_cast<std::ptrdiff_t>(i), r) !=
                         list->begin() + static_cast<std::ptrdiff_t>(i);
      DTRAIN_CHECK_T(CommError, r >= 0 && r < comm.size() && r != comm.rank() && !twice,
                     "exchange_bytes_async: rank {} of {} names rank {} among its {} (each other "
                     "rank at most once)",
                     comm.rank(), comm.size(), r, list == &dests ? "dests" : "sources");
    }
  }
}

std::unique_ptr<Exchange> Communicator::exchange_bytes_async(std::string_view send,
                                                             std::shared_ptr<const void> /*keep*/,
                                                             const std::vector<int>& dests,
                                                             const std::vector<int>& sources) {
  check_exchange_ranks(*this, dests, sources);
  auto all = all_gather_bytes(dests.empty() ? std::string() : std::string(send));
  std::vector<std::string> received;
  for (int s : sources) received.push_back(std::move(all[static_cast<size_t>(s)]));
  return std::make_unique<FinishedExchange>(std::move(received));
}

std::string Communicator::send_recv_bytes(const std::string& send, int dest, int source) {
  DTRAIN_CHECK_T(CommError, dest < size() && source < size(),
                 "send_recv_bytes: rank {} of {} names dest {} and source {}", rank(), size(), dest,
                 source);
  auto all = all_gather_bytes(dest >= 0 ? send : std::string());
  return source >= 0 ? std::move(all[static_cast<size_t>(source)]) : std::string();
}

int64_t Communicator::all_reduce_int(int64_t value, ReduceOp op) {
  at::Tensor t = at::empty({1}, at::kLong);
  t.data_ptr<int64_t>()[0] = value;
  all_reduce(t, op);
  return t.data_ptr<int64_t>()[0];
}

double Communicator::all_reduce_double(double value, ReduceOp op) {
  at::Tensor t = at::empty({1}, at::kDouble);
  t.data_ptr<double>()[0] = value;
  all_reduce(t, op);
  return t.data_ptr<double>()[0];
}

std::shared_ptr<Communicator> make_communicator(const std::string& backend,
                                                const std::string& device) {
  std::string chosen = backend;
  if (backend == "auto") {
    chosen = device.rfind("cuda", 0) == 0 && nccl_available() ? "nccl" : "mpi";
  }
  if (chosen == "mpi") return std::make_shared<MpiCommunicator>();
  if (chosen == "local") return std::make_shared<LocalCommunicator>();
  if (chosen == "nccl") {
#ifdef DTRAIN_HAVE_NCCL
    return make_nccl_communicator(device);
#else
    throw CommError(
        "nccl backend: dtrain was built without NCCL (it needs NCCL and a CUDA build of "
        "LibTorch at configure time); use backend \"mpi\" or \"auto\"");
#endif
  }
  throw CommError(fmt::format(
      "unknown communicator backend '{}'; valid backends: auto, mpi, nccl, local", backend));
}

bool nccl_available() {
#ifdef DTRAIN_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

}  // namespace dtrain::dist
