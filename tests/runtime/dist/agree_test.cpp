// Single-process tests of rank agreement (runtime/dist/agree.h): a world of one
// (LocalCommunicator) and several ranks played by a ScriptedCommunicator: the message
// listing the failing ranks, kind precedence, on_rank's broadcast error,
// check_collective's mismatch message and typed all_gather/broadcast.
#include "runtime/dist/agree.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/base/interrupt.h"
#include "runtime/dist/local_communicator.h"
#include "tests/gtest_util.h"
#include "tests/runtime/dist/agree_test_util.h"
#include "tests/runtime/dist/scripted_communicator.h"

namespace dtrain::dist {
namespace {

using dtrain::testing::ScriptedCommunicator;
using dtrain::testing::error_of;
using dtrain::testing::ThrownMessage;
using dtrain::testing::TestMessage;

TEST(AllOrNone, WorldOfOneRunsOnceAndNamesNoRank) {
  LocalCommunicator comm;
  int runs = 0;
  all_or_none<CheckpointError>(comm, "loading 'x'", [&] { ++runs; });
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(ThrownMessage<CheckpointError>([&] {
              all_or_none<CheckpointError>(comm, "loading 'x'", [] { throw Error("disk full"); });
            }),
            "loading 'x' failed: disk full");
}

TEST(AllOrNone, ListsFailingRanksInOrderGroupedByMessage) {
  ScriptedCommunicator comm(0, 4);
  comm.gathers.push_back({"", "Eno space", "Eread-only", "Eno space"});
  EXPECT_EQ(ThrownMessage<CheckpointError>([&] {
              all_or_none<CheckpointError>(comm, "saving 'm'", [] { throw Error("read-only"); });
            }),
            "saving 'm' failed: ranks 0, 2: read-only; ranks 1, 3: no space");
  // Another rank's failure stops this one, which succeeded.
  comm.gathers.push_back({"", "", "", "Eboom"});
  EXPECT_EQ(ThrownMessage<CheckpointError>([&] { all_or_none<CheckpointError>(comm, "x", [] {}); }),
            "x failed: rank 3: boom");
  // Nobody failed: no error.
  all_or_none<CheckpointError>(comm, "x", [] {});
}

TEST(AllOrNone, KindPrecedenceInterruptedThenConfigThenErr) {
  ScriptedCommunicator comm(0, 3);
  // A ConfigError anywhere makes it a ConfigError (not the caller's kind).
  comm.gathers.push_back({"", "Cbad key", ""});
  EXPECT_EQ(ThrownMessage<ConfigError>([&] {
              all_or_none<CheckpointError>(comm, "x", [] { throw CheckpointError("bad file"); });
            }),
            "x failed: rank 0: bad file; rank 1: bad key");
  // An Interrupted wins over both, and keeps its signal.
  comm.gathers.push_back({"", "Cbad key", "I15 stopped"});
  try {
    all_or_none<CheckpointError>(comm, "x", [] { throw CheckpointError("bad file"); });
    ADD_FAILURE() << "nothing thrown";
  } catch (const Interrupted& e) {
    EXPECT_EQ(e.signal(), 15);
    EXPECT_EQ(std::string(e.what()), "x failed: rank 0: bad file; rank 1: bad key; rank 2: stopped");
  }
  // This rank's own kind travels too.
  comm.gathers.push_back({"", "", ""});
  try {
    all_or_none<CheckpointError>(comm, "x", [] { throw Interrupted("sigusr1", 10); });
    ADD_FAILURE() << "nothing thrown";
  } catch (const Interrupted& e) {
    EXPECT_EQ(e.signal(), 10);
    EXPECT_EQ(std::string(e.what()), "x failed: rank 0: sigusr1");
  }
  // Otherwise the caller's kind, whatever each rank threw.
  comm.gathers.push_back({"", "Eb", ""});
  EXPECT_EQ(ThrownMessage<CommError>([&] {
              all_or_none<CommError>(comm, "x", [] { throw std::runtime_error("a"); });
            }),
            "x failed: rank 0: a; rank 1: b");
}

TEST(OnRank, RootRunsAndBroadcastsItsResult) {
  LocalCommunicator local;
  EXPECT_EQ(on_root<CheckpointError>(local, "x", [] { return std::string("dir"); }), "dir");

  ScriptedCommunicator comm(1, 2);
  bool ran = false;
  comm.broadcasts.push_back("+from root");
  EXPECT_EQ(on_rank<CheckpointError>(comm, 0, "x", [&] {
              ran = true;
              return std::string("mine");
            }),
            "from root");
  EXPECT_FALSE(ran) << "only the root runs fn";
  // As the root, this rank runs it.
  EXPECT_EQ(on_rank<CheckpointError>(comm, 1, "x", [] { return std::string("mine"); }), "mine");
}

TEST(OnRank, RootsErrorIsThrownOnEveryRankWithItsKind) {
  EXPECT_EQ(ThrownMessage<CheckpointError>([] {
              LocalCommunicator local;
              on_root<CheckpointError>(local, "saving 'm'", []() -> std::string {
                throw std::runtime_error("mkdir: permission denied");
              });
            }),
            "saving 'm' failed: mkdir: permission denied");
  ScriptedCommunicator comm(1, 2);
  comm.broadcasts.push_back("-Edisk full");
  EXPECT_EQ(ThrownMessage<CheckpointError>([&] {
              on_root<CheckpointError>(comm, "saving 'm'", [] { return std::string(); });
            }),
            "saving 'm' failed: disk full");
  comm.broadcasts.push_back("-Cno such key");
  EXPECT_EQ(ThrownMessage<ConfigError>([&] {
              on_root<CheckpointError>(comm, "x", [] { return std::string(); });
            }),
            "x failed: no such key");
  comm.broadcasts.push_back("-I15 stopped");
  try {
    on_root<CheckpointError>(comm, "x", [] { return std::string(); });
    ADD_FAILURE() << "nothing thrown";
  } catch (const Interrupted& e) {
    EXPECT_EQ(e.signal(), 15);
  }
}

TEST(CheckCollective, SameCallsPassDifferentOnesNameEveryRank) {
  LocalCommunicator local;
  check_collective<CheckpointError>(local, "Checkpointer", "save", "a");
  ScriptedCommunicator comm(0, 3);
  comm.gathers.push_back({"", "save(a)", "save(a)"});
  check_collective<CheckpointError>(comm, "Checkpointer", "save", "a");
  comm.gathers.push_back({"", "save(a)", "load(b)"});
  EXPECT_EQ(ThrownMessage<CheckpointError>([&] {
              check_collective<CheckpointError>(comm, "Checkpointer", "save", "a");
            }),
            "Checkpointer methods are collective, but the ranks called different ones:\n"
            "  rank 0: save(a)\n  rank 1: save(a)\n  rank 2: load(b)");
}

TEST(Typed, AllGatherAndBroadcastRoundTrip) {
  const TestMessage mine{7, "seven"};
  LocalCommunicator local;
  const auto all = all_gather(local, mine);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0], mine);
  EXPECT_EQ(broadcast(local, mine, 0), mine);

  ScriptedCommunicator comm(1, 3);
  comm.gathers.push_back({TestMessage{1, "one"}.encode(), "", TestMessage{3, ""}.encode()});
  const auto gathered = all_gather(comm, mine);
  ASSERT_EQ(gathered.size(), 3u);
  EXPECT_EQ(gathered[0], (TestMessage{1, "one"}));
  EXPECT_EQ(gathered[1], mine);
  EXPECT_EQ(gathered[2], (TestMessage{3, ""}));
  comm.broadcasts.push_back(TestMessage{9, "nine"}.encode());
  EXPECT_EQ(broadcast(comm, mine, 2), (TestMessage{9, "nine"}));
  // Bytes the type cannot read: its decode names the rank they came from.
  comm.gathers.push_back({TestMessage{0, "zero"}.encode(), "", "garbage"});
  EXPECT_EQ(error_of([&] { all_gather(comm, mine); }),
            "TestMessage from rank 2: cannot read 7 bytes");
}

// A message that cannot be encoded: all_gather on one rank must not try.
struct Unencodable {
  int value = 0;
  std::string encode() const { throw Error("encoded"); }
  static Unencodable decode(const std::string&, int) { throw Error("decoded"); }
};

TEST(Typed, AllGatherOnOneRankReturnsTheValueWithoutEncodingItButStillGathers) {
  ScriptedCommunicator comm(0, 1);
  const auto all = all_gather(comm, Unencodable{5});
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].value, 5);
  EXPECT_EQ(comm.gather_calls, 1);  // the collective ran: a failure of it would surface
}

}  // namespace
}  // namespace dtrain::dist
