// MpiCommunicator::exchange_bytes_async: point-to-point transfers that go on while the
// caller does other things (the local checkpoint tier's replicas).
#include <algorithm>
#include <utility>

#include "runtime/base/error.h"
#include "runtime/dist/mpi_communicator.h"

namespace dtrain::dist {

namespace {

constexpr const char* kOp = "exchange_bytes_async";
// Tags of exchange k: kFirstTag + 2 * (k % kTagPairs) for the lengths, + 1 for the bytes
// (MPI guarantees tags up to 32767).
constexpr int kFirstTag = 16384;
constexpr int kTagPairs = 4096;

}  // namespace

class MpiExchange : public Exchange {
 public:
  MpiExchange(MpiCommunicator& comm, std::string_view send, std::shared_ptr<const void> keep,
              const std::vector<int>& dests, const std::vector<int>& sources, int64_t sequence)
      : comm_(comm), state_(std::make_shared<State>()) {
    length_tag_ = kFirstTag + 2 * static_cast<int>(sequence % kTagPairs);
    state_->send = send;
    state_->keep = std::move(keep);
    state_->out_length = static_cast<int64_t>(send.size());
    state_->sources.resize(sources.size());
    for (size_t i = 0; i < sources.size(); ++i) state_->sources[i].rank = sources[i];
    try {
      post_all(dests);
    } catch (...) {
      give_up_all();
      throw;
    }
  }

  ~MpiExchange() override {
    if (!done_) give_up_all();
  }

  bool test() override {
    if (done_) return true;
    comm_.drain();
    bool all_posted = true;
    for (Source& s : state_->sources) {
      if (!s.posted) {
        int arrived = 0;
        comm_.check(MPI_Test(&s.length_request, &arrived, MPI_STATUS_IGNORE), kOp);
        if (arrived) post_data(s);
      }
      all_posted = all_posted && s.posted;
    }
    if (!all_posted) return false;
    std::vector<MPI_Request*> open = open_requests();
    for (MPI_Request* r : open) {
      int finished = 0;
      comm_.check(MPI_Test(r, &finished, MPI_STATUS_IGNORE), kOp);
      if (!finished) return false;
    }
    done_ = true;
    return true;
  }

  std::vector<std::string> wait() override {
    if (!done_) {
      comm_.drain();
      for (Source& s : state_->sources) {
        if (s.posted) continue;
        comm_.check(MPI_Wait(&s.length_request, MPI_STATUS_IGNORE), kOp);
        post_data(s);
      }
      for (MPI_Request* r : open_requests()) comm_.check(MPI_Wait(r, MPI_STATUS_IGNORE), kOp);
      done_ = true;
    }
    std::vector<std::string> out;
    for (Source& s : state_->sources) out.push_back(std::move(s.bytes));
    return out;
  }

 private:
  struct Source {
    int rank = -1;
    int64_t length = -1;  // the length receive's buffer
    MPI_Request length_request = MPI_REQUEST_NULL;
    bool posted = false;  // the bytes' receives are posted
    std::vector<MPI_Request> data;
    std::string bytes;
  };
  // What MPI reads or writes: on the heap, so that an exchange given up can leave it to
  // the communicator.
  struct State {
    std::string_view send;
    std::shared_ptr<const void> keep;
    int64_t out_length = 0;
    std::vector<Source> sources;
  };

  template <typename F>
  void for_chunks(int64_t length, F&& f) const {
    const int64_t chunk = std::max<int64_t>(1, comm_.options_.max_count_per_call);
    for (int64_t start = 0; start < length; start += chunk) {
      f(start, static_cast<int>(std::min(chunk, length - start)));
    }
  }

  void post_all(const std::vector<int>& dests) {
    for (Source& s : state_->sources) {
      comm_.check(MPI_Irecv(&s.length, 1, MPI_INT64_T, s.rank, length_tag_, comm_.comm_.get(),
                            &s.length_request),
                  kOp);
    }
    for (int dest : dests) {
      sends_.push_back(MPI_REQUEST_NULL);
      comm_.check(MPI_Isend(&state_->out_length, 1, MPI_INT64_T, dest, length_tag_, comm_.comm_.get(),
                            &sends_.back()),
                  kOp);
      for_chunks(state_->out_length, [&](int64_t start, int count) {
        sends_.push_back(MPI_REQUEST_NULL);
        comm_.check(MPI_Isend(state_->send.data() + start, count, MPI_BYTE, dest, length_tag_ + 1,
                              comm_.comm_.get(), &sends_.back()),
                    kOp);
      });
    }
  }

  // Given up (an error on the way, or dropped unfinished): cancels the receives, frees
  // every request, and leaves the buffers, which MPI may still use, to the communicator.
  void give_up_all() noexcept {
    try {
      comm_.drain();
    } catch (...) {
    }
    for (Source& s : state_->sources) {
      give_up(s.length_request, true);
      for (MPI_Request& r : s.data) give_up(r, true);
    }
    for (MPI_Request& r : sends_) give_up(r, false);
    try {
      comm_.orphans_.push_back(std::move(state_));
    } catch (...) {
      (void)new std::shared_ptr<State>(std::move(state_));  // out of memory: kept all the same
    }
  }

  void post_data(Source& s) {
    s.posted = true;
    DTRAIN_CHECK_T(CommError, s.length >= 0,
                   "mpi backend: {} on rank {} of {} (host {}): rank {} announced a message of {} bytes",
                   kOp, comm_.rank_, comm_.size_, comm_.host_, s.rank, s.length);
    s.bytes.resize(static_cast<size_t>(s.length));
    for_chunks(s.length, [&](int64_t start, int count) {
      s.data.push_back(MPI_REQUEST_NULL);
      comm_.check(MPI_Irecv(s.bytes.data() + start, count, MPI_BYTE, s.rank, length_tag_ + 1,
                            comm_.comm_.get(), &s.data.back()),
                  kOp);
    });
  }

  std::vector<MPI_Request*> open_requests() {
    std::vector<MPI_Request*> out;
    for (MPI_Request& r : sends_) out.push_back(&r);
    for (Source& s : state_->sources) {
      for (MPI_Request& r : s.data) out.push_back(&r);
    }
    return out;
  }

  static void give_up(MPI_Request& r, bool receive) noexcept {
    if (r == MPI_REQUEST_NULL) return;
    if (receive) MPI_Cancel(&r);
    MPI_Request_free(&r);
  }

  MpiCommunicator& comm_;
  std::shared_ptr<State> state_;
  std::vector<MPI_Request> sends_;
  int length_tag_ = kFirstTag;
  bool done_ = false;
};

std::unique_ptr<Exchange> MpiCommunicator::exchange_bytes_async(std::string_view send,
                                                                std::shared_ptr<const void> keep,
                                                                const std::vector<int>& dests,
                                                                const std::vector<int>& sources) {
  check_exchange_ranks(*this, dests, sources);
  drain();
  return std::make_unique<MpiExchange>(*this, send, std::move(keep), dests, sources, exchanges_++);
}

}  // namespace dtrain::dist
