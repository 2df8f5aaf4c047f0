// MpiCommunicator::exchange_bytes_async: point-to-point transfers that go on while the
// caller does other things (the local checkpoint tier's replicas).
#include <new>
#include <utility>

#include "runtime/base/error.h"
#include "runtime/base/logging.h"
#include "runtime/dist/chunks.h"
#include "runtime/dist/mpi_communicator.h"

namespace dtrain::dist {

namespace {

constexpr const char* kOp = "exchange_bytes_async";
// Tags of exchange k: kFirstTag + 2 * (k % kTagPairs) for the lengths, + 1 for the bytes
// (MPI guarantees tags up to 32767). A given-up exchange may leave messages unmatched
// with its tags: the communicator is then on its way out (LocalTier::abandon), not
// 4096 exchanges further.
constexpr int kFirstTag = 16384;
constexpr int kTagPairs = 4096;

}  // namespace

// What MPI reads or writes for one exchange, and its requests: on the heap, so that an
// exchange given up can leave them to the communicator (MpiCommunicator::orphans_).
struct MpiCommunicator::ExchangeState {
  struct Source {
    int rank = -1;
    int64_t length = -1;  // the length receive's buffer
    MPI_Request length_request = MPI_REQUEST_NULL;
    bool posted = false;  // the bytes' receives are posted
    std::vector<MPI_Request> data;
    std::string bytes;
  };
  std::string_view send;
  std::shared_ptr<const void> keep;
  int64_t out_length = 0;
  std::vector<Source> sources;
  std::vector<MPI_Request> sends;

  // Every request not yet completed.
  std::vector<MPI_Request*> open_requests() {
    std::vector<MPI_Request*> out;
    for (MPI_Request& r : sends) out.push_back(&r);
    for (Source& s : sources) {
      out.push_back(&s.length_request);
      for (MPI_Request& r : s.data) out.push_back(&r);
    }
    return out;
  }
};

class MpiExchange : public Exchange {
 public:
  using State = MpiCommunicator::ExchangeState;

  MpiExchange(MpiCommunicator& comm, std::string_view send, std::shared_ptr<const void> keep,
              const std::vector<int>& dests, const std::vector<int>& sources, int64_t sequence)
      : comm_(comm), state_(std::make_shared<State>()) {
    length_tag_ = kFirstTag + 2 * static_cast<int>(sequence % kTagPairs);
    state_->send = send;
    state_->keep = std::move(keep);
    state_->out_length = static_cast<int64_t>(send.size());
    state_->sources.resize(sources.size());
    for (size_t i = 0; i < sources.size(); ++i) state_->sources[i].rank = sources[i];
    // A give-up must not allocate (it runs in a destructor): room for every exchange alive.
    ++comm_.live_exchanges_;
    try {
      comm_.orphans_.reserve(comm_.orphans_.size() + static_cast<size_t>(comm_.live_exchanges_));
      post_all(dests);
    } catch (...) {
      give_up();
      throw;
    }
  }

  ~MpiExchange() override { give_up(); }

  bool test() override {
    if (done_) return true;
    comm_.drain();
    bool all_posted = true;
    for (State::Source& s : state_->sources) {
      if (!s.posted) {
        int arrived = 0;
        comm_.check(MPI_Test(&s.length_request, &arrived, MPI_STATUS_IGNORE), kOp);
        if (arrived) post_data(s);
      }
      all_posted = all_posted && s.posted;
    }
    if (!all_posted) return false;
    for (MPI_Request* r : state_->open_requests()) {
      int finished = 0;
      comm_.check(MPI_Test(r, &finished, MPI_STATUS_IGNORE), kOp);
      if (!finished) return false;
    }
    finished();
    return true;
  }

  std::vector<std::string> wait() override {
    if (!done_) {
      comm_.drain();
      for (State::Source& s : state_->sources) {
        if (s.posted) continue;
        comm_.check(MPI_Wait(&s.length_request, MPI_STATUS_IGNORE), kOp);
        post_data(s);
      }
      for (MPI_Request* r : state_->open_requests()) comm_.check(MPI_Wait(r, MPI_STATUS_IGNORE), kOp);
      finished();
    }
    std::vector<std::string> out;
    for (State::Source& s : state_->sources) out.push_back(std::move(s.bytes));
    return out;
  }

 private:
  void post_all(const std::vector<int>& dests) {
    for (State::Source& s : state_->sources) {
      comm_.check(MPI_Irecv(&s.length, 1, MPI_INT64_T, s.rank, length_tag_, comm_.comm_.get(),
                            &s.length_request),
                  kOp);
    }
    for (int dest : dests) {
      state_->sends.push_back(MPI_REQUEST_NULL);
      comm_.check(MPI_Isend(&state_->out_length, 1, MPI_INT64_T, dest, length_tag_, comm_.comm_.get(),
                            &state_->sends.back()),
                  kOp);
      detail::for_each_chunk(state_->out_length, comm_.options_.max_count_per_call, [&](int64_t start, int count) {
        state_->sends.push_back(MPI_REQUEST_NULL);
        comm_.check(MPI_Isend(state_->send.data() + start, count, MPI_BYTE, dest, length_tag_ + 1,
                              comm_.comm_.get(), &state_->sends.back()),
                    kOp);
      });
    }
  }

  void post_data(State::Source& s) {
    s.posted = true;
    DTRAIN_CHECK_T(CommError, s.length >= 0,
                   "mpi backend: {} on rank {} of {} (host {}): rank {} announced a message of {} bytes",
                   kOp, comm_.rank_, comm_.size_, comm_.host_, s.rank, s.length);
    s.bytes.resize(static_cast<size_t>(s.length));
    detail::for_each_chunk(s.length, comm_.options_.max_count_per_call, [&](int64_t start, int count) {
      s.data.push_back(MPI_REQUEST_NULL);
      comm_.check(MPI_Irecv(s.bytes.data() + start, count, MPI_BYTE, s.rank, length_tag_ + 1,
                            comm_.comm_.get(), &s.data.back()),
                  kOp);
    });
  }

  // Every transfer finished: what was sent is no longer needed (a whole shard, held by
  // `keep`, would otherwise live as long as this exchange).
  void finished() {
    done_ = true;
    state_->keep.reset();
    state_->send = {};
  }

  // Unfinished (an error on the way, or dropped): cancels every request still open and
  // leaves the state to the communicator, which waits for the cancellations before it is
  // freed (~MpiCommunicator). No allocation: orphans_ has room (constructor).
  void give_up() noexcept {
    --comm_.live_exchanges_;
    if (done_ || !state_) return;
    try {
      comm_.drain();
    } catch (...) {
    }
    for (MPI_Request* r : state_->open_requests()) {
      if (*r != MPI_REQUEST_NULL) MPI_Cancel(r);
    }
    comm_.orphans_.push_back(std::move(state_));
  }

  MpiCommunicator& comm_;
  std::shared_ptr<State> state_;
  int length_tag_ = kFirstTag;
  bool done_ = false;
};

void MpiCommunicator::settle_orphans() noexcept {
  for (auto& orphan : orphans_) {
    int unfinished = 0;
    for (MPI_Request* r : orphan->open_requests()) {
      int done = 1;
      if (*r != MPI_REQUEST_NULL && MPI_Test(r, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && !done) ++unfinished;
    }
    if (unfinished > 0) {
      // A peer never took its part (a send MPI could not cancel): MPI may still read
      // these buffers, so they stay (the process is ending after an error).
      DTRAIN_LOG_WARN_RANK("mpi backend: rank {} of {} ends with {} transfer(s) of a dropped exchange "
                           "unfinished; their buffers are kept",
                           rank_, size_, unfinished);
      (void)new (std::nothrow) std::shared_ptr<ExchangeState>(std::move(orphan));  // kept on purpose
    }
  }
  orphans_.clear();
}

std::unique_ptr<Exchange> MpiCommunicator::exchange_bytes_async(std::string_view send,
                                                                std::shared_ptr<const void> keep,
                                                                const std::vector<int>& dests,
                                                                const std::vector<int>& sources) {
  check_exchange_ranks(*this, dests, sources);
  drain();
  return std::make_unique<MpiExchange>(*this, send, std::move(keep), dests, sources, exchanges_++);
}

}  // namespace dtrain::dist
