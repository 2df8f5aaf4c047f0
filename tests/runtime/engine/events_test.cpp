// Unit tests of runtime/engine/events.h: HistoryBuffer statistics, EventStorage
// (iterations, smoothing hints) and JsonWriter (one object per iteration, no duplicates).
#include "runtime/engine/events.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/base/error.h"
#include "tests/test_util.h"

namespace dtrain::engine {
namespace {

using testutil::TempDir;

// Every line of `path`, parsed as JSON.
std::vector<nlohmann::json> read_json_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

TEST(HistoryBufferTest, MedianAvgAndGlobalAvg) {
  HistoryBuffer h;
  const std::vector<double> values = {5, 1, 4, 2, 3, 10};
  for (size_t i = 0; i < values.size(); ++i) h.update(values[i], static_cast<int64_t>(i));
  EXPECT_EQ(h.latest(), 10.0);
  // Window larger than the history: all values.
  EXPECT_EQ(h.median(100), 3.5);  // sorted 1 2 3 4 5 10 -> (3 + 4) / 2
  EXPECT_EQ(h.avg(100), 25.0 / 6.0);
  // Odd and even windows over the last values.
  EXPECT_EQ(h.median(3), 3.0);   // 2 3 10
  EXPECT_EQ(h.median(2), 6.5);   // 3 10
  EXPECT_EQ(h.avg(2), 6.5);
  EXPECT_EQ(h.median(1), 10.0);
  EXPECT_EQ(h.global_avg(), 25.0 / 6.0);
  ASSERT_EQ(h.values().size(), 6u);
  EXPECT_EQ(h.values()[2], (std::pair<double, int64_t>{4.0, 2}));
}

TEST(HistoryBufferTest, EmptyWindowIsZero) {
  HistoryBuffer h;
  EXPECT_EQ(h.median(20), 0.0);
  EXPECT_EQ(h.avg(20), 0.0);
  EXPECT_EQ(h.global_avg(), 0.0);
  h.update(7.0, 0);
  EXPECT_EQ(h.median(0), 0.0);
  EXPECT_EQ(h.avg(0), 0.0);
}

TEST(EventStorageTest, PutsAtTheCurrentIteration) {
  EventStorage s(/*start_iter=*/5);
  EXPECT_EQ(s.iter(), 5);
  s.put_scalar("total_loss", 2.0);
  s.set_iter(6);
  s.put_scalar("total_loss", 1.0);
  s.put_scalar("lr", 0.1, /*smoothing_hint=*/false);
  EXPECT_TRUE(s.has("lr"));
  EXPECT_FALSE(s.has("missing"));
  auto latest = s.latest();
  ASSERT_EQ(latest.size(), 2u);
  EXPECT_EQ(latest["total_loss"], (std::pair<double, int64_t>{1.0, 6}));
  EXPECT_EQ(latest["lr"], (std::pair<double, int64_t>{0.1, 6}));
  const auto& h = s.history("total_loss");
  ASSERT_EQ(h.values().size(), 2u);
  EXPECT_EQ(h.values()[0].second, 5);
}

TEST(EventStorageTest, HistoryOfAnUnknownNameThrowsNamingIt) {
  EventStorage s;
  try {
    s.history("no_such_scalar");
    FAIL() << "expected dtrain::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no_such_scalar"), std::string::npos) << e.what();
  }
}

TEST(EventStorageTest, SmoothingHintsChooseMedianOrLatest) {
  EventStorage s;
  const std::vector<double> losses = {9, 1, 2, 8, 3};
  for (size_t i = 0; i < losses.size(); ++i) {
    s.set_iter(static_cast<int64_t>(i));
    s.put_scalar("loss", losses[i]);                               // smoothed
    s.put_scalar("lr", 0.5 * static_cast<double>(i), /*smoothing_hint=*/false);  // not smoothed
  }
  auto smoothed = s.latest_with_smoothing_hint(/*window=*/3);
  EXPECT_EQ(smoothed["loss"].first, 3.0);  // median of 2 8 3
  EXPECT_EQ(smoothed["loss"].second, 4);
  EXPECT_EQ(smoothed["lr"].first, 2.0);    // latest
  auto whole = s.latest_with_smoothing_hint(/*window=*/100);
  EXPECT_EQ(whole["loss"].first, 3.0);     // median of 1 2 3 8 9
  // The hint of the first put sticks.
  s.put_scalar("lr", 7.0, /*smoothing_hint=*/true);
  EXPECT_EQ(s.latest_with_smoothing_hint(3)["lr"].first, 7.0);
}

TEST(JsonWriterTest, OneObjectPerIterationWithExactValues) {
  TempDir dir;
  const std::string path = dir / "metrics.json";
  EventStorage s;
  {
    JsonWriter w(path);
    for (int64_t it = 0; it < 3; ++it) {
      s.set_iter(it);
      s.put_scalar("total_loss", 1.0 / static_cast<double>(it + 3));
      s.put_scalar("lr", 0.125 * static_cast<double>(it), false);
      w.write(s);
    }
  }
  auto lines = read_json_lines(path);
  ASSERT_EQ(lines.size(), 3u);
  for (int64_t it = 0; it < 3; ++it) {
    const auto& obj = lines[static_cast<size_t>(it)];
    EXPECT_EQ(obj.size(), 3u) << obj.dump();
    EXPECT_EQ(obj.at("iteration").get<int64_t>(), it);
    // Exact: values round-trip through JSON bit for bit.
    EXPECT_EQ(obj.at("total_loss").get<double>(), 1.0 / static_cast<double>(it + 3));
    EXPECT_EQ(obj.at("lr").get<double>(), 0.125 * static_cast<double>(it));
  }
}

TEST(JsonWriterTest, RepeatedWritesAddNothing) {
  TempDir dir;
  const std::string path = dir / "metrics.json";
  EventStorage s;
  JsonWriter w(path);
  s.put_scalar("total_loss", 3.0);
  w.write(s);
  w.write(s);  // e.g. PeriodicWriter::after_train right after the last after_step
  s.set_iter(1);
  w.write(s);  // nothing new was put at iteration 1
  s.put_scalar("total_loss", 2.0);
  w.write(s);
  w.write(s);
  w.close();
  w.write(s);  // after close: a no-op
  auto lines = read_json_lines(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].at("iteration"), 0);
  EXPECT_EQ(lines[0].at("total_loss"), 3.0);
  EXPECT_EQ(lines[1].at("iteration"), 1);
  EXPECT_EQ(lines[1].at("total_loss"), 2.0);
}

TEST(JsonWriterTest, GroupsScalarsByTheIterationTheyWerePutAt) {
  TempDir dir;
  const std::string path = dir / "metrics.json";
  EventStorage s;
  JsonWriter w(path);
  s.set_iter(4);
  s.put_scalar("eval/accuracy", 0.5, false);
  s.set_iter(7);
  s.put_scalar("total_loss", 1.5);
  w.write(s);
  // Written lines are never repeated; only scalars put after them appear later.
  s.set_iter(9);
  s.put_scalar("total_loss", 1.25);
  w.write(s);
  auto lines = read_json_lines(path);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], (nlohmann::json{{"iteration", 4}, {"eval/accuracy", 0.5}}));
  EXPECT_EQ(lines[1], (nlohmann::json{{"iteration", 7}, {"total_loss", 1.5}}));
  EXPECT_EQ(lines[2], (nlohmann::json{{"iteration", 9}, {"total_loss", 1.25}}));
}

TEST(JsonWriterTest, AppendsToAnExistingFile) {
  // A resumed run keeps the metrics of the interrupted one.
  TempDir dir;
  const std::string path = dir / "metrics.json";
  {
    std::ofstream(path) << "{\"iteration\":0,\"total_loss\":4.0}\n";
  }
  EventStorage s(/*start_iter=*/1);
  JsonWriter w(path);
  s.put_scalar("total_loss", 2.0);
  w.write(s);
  auto lines = read_json_lines(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1].at("iteration"), 1);
}

TEST(JsonWriterTest, UnwritablePathThrowsNamingIt) {
  const std::string path = "/nonexistent_dir_for_dtrain_test/metrics.json";
  try {
    JsonWriter w(path);
    FAIL() << "expected dtrain::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(FormatDurationTest, HoursMinutesSeconds) {
  EXPECT_EQ(format_duration(0), "0:00:00");
  EXPECT_EQ(format_duration(59.9), "0:00:59");
  EXPECT_EQ(format_duration(3723), "1:02:03");
  EXPECT_EQ(format_duration(-5), "0:00:00");
}

}  // namespace
}  // namespace dtrain::engine
