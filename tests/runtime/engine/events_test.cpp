// Unit tests of runtime/engine/events.h: HistoryBuffer statistics, EventStorage
// (iterations, smoothing hints), JsonWriter (one object per iteration, no duplicates) and
// what a resumed run keeps of metrics.json (WriteSchedule, JsonWriter::resume).
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

TEST(WriteScheduleTest, LogPeriodLastIterationEvaluationsAndTheFinalEvaluation) {
  // LOG.PERIOD 20, EVAL_PERIOD 20, resumed at 50 with MAX_ITER 60.
  const WriteSchedule extended{50, 60, 20, int64_t{20}};
  std::vector<int64_t> got;
  for (int64_t i = 0; i <= 70; ++i) {
    if (extended.writes(i)) got.push_back(i);
  }
  EXPECT_EQ(got, (std::vector<int64_t>{59, 60}));
  // LOG.PERIOD 5, evaluations every 4: evaluations between writes are records too.
  const WriteSchedule busy{10, 22, 5, int64_t{4}};
  got.clear();
  for (int64_t i = 0; i <= 30; ++i) {
    if (busy.writes(i)) got.push_back(i);
  }
  EXPECT_EQ(got, (std::vector<int64_t>{11, 14, 15, 19, 21, 22}));
  // Without evaluation there is no record at max_iter; period 0 evaluates only at the end.
  EXPECT_FALSE((WriteSchedule{10, 22, 5, std::nullopt}).writes(22));
  EXPECT_FALSE((WriteSchedule{10, 22, 5, int64_t{0}}).writes(11));
  EXPECT_TRUE((WriteSchedule{10, 22, 5, int64_t{0}}).writes(22));
}

// Writes `lines` (one JSON object each) to `path`.
void write_lines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream out(path);
  for (const auto& l : lines) out << l << "\n";
}

// The "iteration" of every record of `path`, in file order.
std::vector<int64_t> iterations(const std::string& path) {
  std::vector<int64_t> out;
  for (const auto& j : read_json_lines(path)) out.push_back(j.at("iteration").get<int64_t>());
  return out;
}

TEST(JsonWriterTest, ExtendingAFinishedRunKeepsItsFinalEvaluation) {
  // A run of MAX_ITER 50 (LOG.PERIOD 20, EVAL_PERIOD 20) resumed with MAX_ITER 60.
  TempDir dir;
  const std::string path = dir / "metrics.json";
  write_lines(path, {R"({"iteration":19,"total_loss":3.0,"eval/ds/accuracy":0.25})",
                     R"({"iteration":39,"total_loss":2.0,"eval/ds/accuracy":0.5})",
                     R"({"iteration":49,"total_loss":1.0})",
                     R"({"iteration":50,"eval/ds/accuracy":0.75})"});
  JsonWriter w(path);
  w.resume(WriteSchedule{50, 60, 20, int64_t{20}});
  EventStorage s(59);
  s.put_scalar("total_loss", 0.5);
  w.write(s);
  s.set_iter(60);
  s.put_scalar("eval/ds/accuracy", 0.875, false);
  w.write(s);
  w.close();
  EXPECT_EQ(iterations(path), (std::vector<int64_t>{19, 39, 49, 50, 59, 60}));
  EXPECT_EQ(read_json_lines(path)[3], (nlohmann::json{{"iteration", 50}, {"eval/ds/accuracy", 0.75}}));
}

TEST(JsonWriterTest, ResumeDropsWhatIsWrittenAgainAndAKilledRunsSteps) {
  // Resumed at 10 (checkpoint after 9), MAX_ITER 20, LOG.PERIOD 5, EVAL_PERIOD 4. The
  // killed run logged 11 (an evaluation) and 14; a failed step's after_train write left 12;
  // the last line is torn.
  TempDir dir;
  const std::string path = dir / "metrics.json";
  write_lines(path, {R"({"iteration":4,"total_loss":3.0})", R"({"iteration":7,"eval/ds/loss":2.5})",
                     R"({"iteration":9,"total_loss":2.0})",
                     R"({"iteration":11,"eval/ds/loss":1.5})",
                     R"({"iteration":12,"total_loss":1.9,"eval/ds/loss":1.7})",
                     R"({"iteration":14,"total_loss":1.8})", R"({"iteration":1)"});
  JsonWriter w(path);
  w.resume(WriteSchedule{10, 20, 5, int64_t{4}});
  w.close();
  auto lines = read_json_lines(path);
  EXPECT_EQ(iterations(path), (std::vector<int64_t>{4, 7, 9, 12}));
  // 12 is not written again: its training values go, its evaluation result stays.
  EXPECT_EQ(lines[3], (nlohmann::json{{"iteration", 12}, {"eval/ds/loss", 1.7}}));
}

TEST(JsonWriterTest, StartDropsEveryRecordFromStartIter) {
  TempDir dir;
  const std::string path = dir / "metrics.json";
  write_lines(path, {R"({"iteration":4,"total_loss":3.0})", R"({"iteration":5,"eval/x":1.0})",
                     R"({"iteration":6,"total_loss":2.0})"});
  JsonWriter w(path);
  w.start(5);
  EventStorage s(5);
  s.put_scalar("total_loss", 2.5);
  w.write(s);
  w.close();
  EXPECT_EQ(iterations(path), (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(read_json_lines(path)[1].at("total_loss"), 2.5);
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
