// Unit tests of runtime/engine/tensorboard_writer.h: every scalar put into the storage
// reaches the event file once, at the iteration it was put, unsmoothed; session starts.
#include "runtime/engine/tensorboard_writer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>
#include <utility>

#include "tests/runtime/tensorboard/read_events.h"
#include "tests/test_util.h"

namespace dtrain::engine {
namespace {

namespace tbp = tensorboard::proto;
using tensorboard::testing::read_events;

// (tag, step) -> value of every scalar in the file; fails on a (tag, step) seen twice.
std::map<std::pair<std::string, int64_t>, float> scalars_of(const std::vector<tbp::Event>& events) {
  std::map<std::pair<std::string, int64_t>, float> out;
  for (const auto& e : events) {
    for (const auto& v : e.summary().value()) {
      EXPECT_TRUE(out.emplace(std::make_pair(v.tag(), e.step()), v.simple_value()).second)
          << v.tag() << " at step " << e.step() << " written twice";
    }
  }
  return out;
}

size_t count_event_files(const std::string& dir) {
  size_t n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    n += entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  }
  return n;
}

TEST(TensorboardXWriterTest, WritesEveryValueAtItsIterationOnce) {
  testutil::TempDir tmp;
  TensorboardXWriter writer(tmp.path());
  EXPECT_EQ(count_event_files(tmp.path()), 0u);  // nothing before the first write
  EventStorage storage;
  std::map<std::pair<std::string, int64_t>, double> put;
  for (int64_t it = 0; it < 10; ++it) {
    storage.set_iter(it);
    const double loss = 3.0 / static_cast<double>(it + 1);  // smoothed on the console
    storage.put_scalar("total_loss", loss);
    storage.put_scalar("lr", 0.01 * static_cast<double>(it), /*smoothing_hint=*/false);
    put[{"total_loss", it}] = loss;
    put[{"lr", it}] = 0.01 * static_cast<double>(it);
    if (it % 4 == 3) {
      storage.put_scalar("eval/acc", 0.1 * static_cast<double>(it), false);
      put[{"eval/acc", it}] = 0.1 * static_cast<double>(it);
    }
    if (it % 3 == 2) writer.write(storage);  // LOG.PERIOD 3
  }
  writer.write(storage);
  writer.write(storage);  // nothing new: nothing written
  writer.close();
  writer.write(storage);  // after close: ignored

  const auto events = read_events(writer.path());
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events[0].file_version(), "brain.Event:2");
  // No start(): the run began at iteration 0.
  EXPECT_EQ(events[1].session_log().status(), tbp::SessionLog::START);
  EXPECT_EQ(events[1].step(), 0);
  const auto written = scalars_of(events);
  ASSERT_EQ(written.size(), put.size());
  for (const auto& [key, value] : put) {
    auto it = written.find(key);
    ASSERT_NE(it, written.end()) << key.first << " at " << key.second;
    EXPECT_EQ(it->second, static_cast<float>(value)) << key.first << " at " << key.second;
  }
  // Steps never go back within the file.
  for (size_t i = 2; i < events.size(); ++i) EXPECT_GE(events[i].step(), events[i - 1].step());
  EXPECT_EQ(count_event_files(tmp.path()), 1u);
}

TEST(TensorboardXWriterTest, StartLogsASessionStartAndSkipsOlderValues) {
  testutil::TempDir tmp;
  // A resumed run: its storage may hold values of iterations before start_iter (none in
  // practice, but they must not be written again).
  EventStorage storage(4);
  storage.put_scalar("total_loss", 9.0);
  TensorboardXWriter writer(tmp.path());
  writer.start(5);
  ASSERT_FALSE(writer.path().empty());
  for (int64_t it = 5; it < 8; ++it) {
    storage.set_iter(it);
    storage.put_scalar("total_loss", static_cast<double>(it));
  }
  writer.write(storage);
  writer.close();

  const auto events = read_events(writer.path());
  ASSERT_EQ(events.size(), 2u + 3u);
  EXPECT_EQ(events[1].session_log().status(), tbp::SessionLog::START);
  EXPECT_EQ(events[1].step(), 5);
  const auto written = scalars_of(events);
  ASSERT_EQ(written.size(), 3u);
  for (int64_t it = 5; it < 8; ++it) {
    EXPECT_EQ(written.at({"total_loss", it}), static_cast<float>(it));
  }
}

TEST(TensorboardXWriterTest, EachWriterHasItsOwnFile) {
  testutil::TempDir tmp;
  EventStorage storage;
  storage.put_scalar("x", 1.0);
  TensorboardXWriter first(tmp.path()), second(tmp.path());
  first.write(storage);
  second.start(0);
  EXPECT_NE(first.path(), second.path());
  EXPECT_LT(first.path(), second.path());  // TensorBoard reads them in this order
  EXPECT_EQ(count_event_files(tmp.path()), 2u);
}

}  // namespace
}  // namespace dtrain::engine
