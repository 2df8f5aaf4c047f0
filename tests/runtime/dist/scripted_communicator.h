// A Communicator for single-process tests of multi-rank logic: it plays rank `rank` of
// `size`, and the other ranks' contributions come from a script the test writes.
//
//   ScriptedCommunicator comm(/*rank=*/0, /*size=*/3);
//   comm.gathers.push_back({"", "Eboom", ""});   // ranks 1 and 2 (rank 0's is `mine`)
//   dist::all_or_none(comm, "x", [] {});         // throws "x failed: rank 1: boom"
//
// Not thread-safe (a test's own object).
#pragma once

#include <deque>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "runtime/dist/communicator.h"

namespace dtrain::testing {

class ScriptedCommunicator : public dist::Communicator {
 public:
  ScriptedCommunicator(int rank, int size) : rank_(rank), size_(size) {}

  // Each all_gather_bytes() takes the front entry (one string per rank; this rank's is
  // replaced by `mine`). An empty script gathers `mine` from every rank.
  std::deque<std::vector<std::string>> gathers;
  // Each broadcast_bytes() from another root takes the front entry.
  std::deque<std::string> broadcasts;
  // Each all_reduce() sets every element of the tensor to the front entry (an empty
  // script leaves the tensor as it is).
  std::deque<double> reductions;
  int gather_calls = 0;
  int broadcast_calls = 0;

  std::string backend_name() const override { return "scripted"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return rank_; }
  int local_size() const override { return size_; }
  void barrier() override {}
  void broadcast(at::Tensor&, int) override {}
  void all_reduce(at::Tensor& tensor, dist::ReduceOp) override {
    if (reductions.empty()) return;
    tensor.fill_(reductions.front());
    reductions.pop_front();
  }
  std::vector<std::string> all_gather_bytes(const std::string& mine) override {
    ++gather_calls;
    std::vector<std::string> all(static_cast<size_t>(size_), mine);
    if (!gathers.empty()) {
      all = gathers.front();
      gathers.pop_front();
      all.resize(static_cast<size_t>(size_));
      all[static_cast<size_t>(rank_)] = mine;
    }
    return all;
  }
  void broadcast_bytes(std::string& bytes, int root) override {
    ++broadcast_calls;
    if (root == rank_ || broadcasts.empty()) return;
    bytes = broadcasts.front();
    broadcasts.pop_front();
  }

 private:
  int rank_;
  int size_;
};

}  // namespace dtrain::testing
