// Unit tests of runtime/tensorboard/event_file_writer.h: file naming and ordering, the
// file_version record, scalar and session-start events, buffering until flush, errors.
#include "runtime/tensorboard/event_file_writer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <regex>
#include <string>

#include "runtime/base/error.h"
#include "tests/runtime/tensorboard/read_events.h"
#include "tests/test_util.h"

namespace dtrain::tensorboard {
namespace {

using testing::read_events;

TEST(EventFileWriterTest, FirstRecordIsTheFileVersionAndTheNameIsTensorBoards) {
  testutil::TempDir tmp;
  const double before = unix_time_now();
  EventFileWriter w(tmp.path());
  const std::string name = std::filesystem::path(w.path()).filename().string();
  std::smatch m;
  ASSERT_TRUE(std::regex_match(name, m, std::regex(R"(events\.out\.tfevents\.(\d+)\.(.+)\.(\d+))")))
      << name;
  EXPECT_NEAR(std::stod(m[1].str()), before, 2.0);
  EXPECT_EQ(std::stol(m[3].str()), static_cast<long>(::getpid()));
  EXPECT_EQ(std::filesystem::path(w.path()).parent_path(), std::filesystem::path(tmp.path()));

  // The file_version record is on disk at once (flushed by the constructor).
  const auto events = read_events(w.path());
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].file_version(), "brain.Event:2");
  EXPECT_GE(events[0].wall_time(), before);
  EXPECT_LE(events[0].wall_time(), unix_time_now());
}

TEST(EventFileWriterTest, ScalarsAndSessionStartRoundTrip) {
  testutil::TempDir tmp;
  std::string path;
  {
    EventFileWriter w(tmp.path());
    path = w.path();
    w.add_session_start(7, 1000.5);
    w.add_scalars(7, {{"total_loss", 2.25}, {"lr", 0.1}}, 1001.25);
    w.add_scalars(8, {{"eval/acc", 1.0 / 3.0}});
    // Buffered: nothing past the file_version record until flush().
    EXPECT_EQ(read_events(path).size(), 1u);
    w.flush();
    EXPECT_EQ(read_events(path).size(), 4u);
    w.add_scalars(9, {{"total_loss", 1e-30}});
  }  // the destructor flushes
  const auto events = read_events(path);
  ASSERT_EQ(events.size(), 5u);
  EXPECT_TRUE(events[1].has_session_log());
  EXPECT_EQ(events[1].session_log().status(), proto::SessionLog::START);
  EXPECT_EQ(events[1].step(), 7);
  EXPECT_EQ(events[1].wall_time(), 1000.5);

  ASSERT_TRUE(events[2].has_summary());
  EXPECT_EQ(events[2].step(), 7);
  EXPECT_EQ(events[2].wall_time(), 1001.25);
  ASSERT_EQ(events[2].summary().value_size(), 2);
  EXPECT_EQ(events[2].summary().value(0).tag(), "total_loss");
  EXPECT_EQ(events[2].summary().value(0).simple_value(), 2.25f);
  EXPECT_EQ(events[2].summary().value(1).tag(), "lr");
  EXPECT_EQ(events[2].summary().value(1).simple_value(), static_cast<float>(0.1));

  EXPECT_EQ(events[3].step(), 8);
  EXPECT_EQ(events[3].summary().value(0).simple_value(), static_cast<float>(1.0 / 3.0));
  EXPECT_EQ(events[4].step(), 9);
  EXPECT_EQ(events[4].summary().value(0).simple_value(), static_cast<float>(1e-30));
}

TEST(EventFileWriterTest, CloseIsFinal) {
  testutil::TempDir tmp;
  EventFileWriter w(tmp.path());
  w.add_scalars(0, {{"a", 1.0}});
  w.close();
  EXPECT_FALSE(w.is_open());
  w.close();  // no-op
  EXPECT_EQ(read_events(w.path()).size(), 2u);
  EXPECT_THROW(w.add_scalars(1, {{"a", 2.0}}), Error);
}

TEST(EventFileWriterTest, NewFilesSortAfterEveryExistingOne) {
  testutil::TempDir tmp;
  // Two writers of one process in the same second: distinct files, in creation order.
  EventFileWriter a(tmp.path());
  EventFileWriter b(tmp.path());
  EXPECT_NE(a.path(), b.path());
  EXPECT_LT(a.path(), b.path());
  // A file from a clock that ran ahead (or another host): the next name sorts after it.
  const auto now = static_cast<int64_t>(unix_time_now());
  const std::string ahead =
      "events.out.tfevents." + std::to_string(now + 100) + ".zzz-other-host.99999999";
  tmp.write(ahead, "");
  EventFileWriter c(tmp.path());
  EXPECT_GT(std::filesystem::path(c.path()).filename().string(), ahead);
  const std::string next = next_event_file_name(tmp.path(), now, "a", 1);
  for (const auto& entry : std::filesystem::directory_iterator(tmp.path())) {
    EXPECT_GT(next, entry.path().filename().string());
  }
  // Without event files the name is exactly TensorBoard's, with the given time.
  testutil::TempDir empty;
  EXPECT_EQ(next_event_file_name(empty.path(), 1700000000, "host.example", 42),
            "events.out.tfevents.1700000000.host.example.42");
}

TEST(EventFileWriterTest, ErrorsNameTheFileOrDirectory) {
  testutil::TempDir tmp;
  const std::string missing = tmp / "no/such/dir";
  try {
    EventFileWriter w(missing);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dtrain::tensorboard
