// A gtest fixture for the checkpoint tests that run under mpirun (with
// tests/mpi_gtest_main.cpp): the MPI communicator, this rank, the world size, and dir_,
// a temporary directory that rank 0 creates for every rank and removes after the test
// unless some rank failed (kept for a post-mortem).
//
//   class MyTest : public MpiCheckpointFixture {
//    protected:
//     MyTest() : MpiCheckpointFixture("mine") {}   // $TMPDIR/dtrain-ckpt-mine-XXXXXX
//   };
//
// Not thread-safe (one test at a time, as gtest runs them).
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <utility>

#include <gtest/gtest.h>

#include "runtime/dist/communicator.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint::testing {

class MpiCheckpointFixture : public ::testing::Test {
 protected:
  explicit MpiCheckpointFixture(std::string tag) : tag_(std::move(tag)) {}

  void SetUp() override {
    comm_ = dist::make_communicator("mpi", "cpu");
    rank_ = comm_->rank();
    world_ = comm_->size();
    dir_ = make_shared_temp_dir(*comm_, tag_);
  }
  void TearDown() override {
    const int64_t failed = comm_->all_reduce_int(HasFailure() ? 1 : 0, dist::ReduceOp::kMax);
    if (rank_ == 0 && failed == 0) std::filesystem::remove_all(dir_);
    comm_->barrier();
    comm_.reset();
  }

  // Every rank's `text`; expects them all equal and returns rank 0's.
  std::string ExpectSameOnAllRanks(const std::string& text) {
    const auto all = comm_->all_gather_bytes(text);
    for (size_t r = 1; r < all.size(); ++r) {
      EXPECT_EQ(all[r], all[0]) << "rank " << r << " differs from rank 0";
    }
    return all[0];
  }

  std::shared_ptr<dist::Communicator> comm_;
  int rank_ = 0, world_ = 1;
  std::string dir_;

 private:
  std::string tag_;
};

}  // namespace dtrain::checkpoint::testing
