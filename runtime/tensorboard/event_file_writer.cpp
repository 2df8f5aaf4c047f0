// EventFileWriter: TensorBoard event files written with Debian's libprotobuf.
#include "runtime/tensorboard/event_file_writer.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "runtime/base/error.h"
#include "runtime/base/logging.h"
#include "runtime/tensorboard/event.pb.h"
#include "runtime/tensorboard/record.h"

namespace dtrain::tensorboard {
namespace {

constexpr const char* kPrefix = "events.out.tfevents.";
// TensorBoard's purge-on-restart logic needs file_version >= 2 ("brain.Event:<N>").
constexpr const char* kFileVersion = "brain.Event:2";

std::string event_file_name(int64_t unix_seconds, const std::string& host, int64_t pid) {
  return fmt::format("{}{}.{}.{}", kPrefix, unix_seconds, host, pid);
}

// The <seconds> field of an event file name, or -1 when it has none.
int64_t seconds_field(const std::string& name) {
  const size_t start = std::strlen(kPrefix);
  const size_t end = name.find('.', start);
  if (end == start || end == std::string::npos) return -1;
  int64_t value = 0;
  for (size_t i = start; i < end; ++i) {
    if (name[i] < '0' || name[i] > '9' || value > (INT64_MAX - 9) / 10) return -1;
    value = value * 10 + (name[i] - '0');
  }
  return value;
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  std::string host(buf);
  std::replace(host.begin(), host.end(), '/', '_');
  return host;
}

}  // namespace

double unix_time_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string next_event_file_name(const std::string& log_dir, int64_t unix_seconds,
                                 const std::string& host, int64_t pid) {
  std::vector<std::string> existing;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(log_dir, ec)) {
    std::string name = entry.path().filename().string();
    if (name.rfind(kPrefix, 0) == 0) existing.push_back(std::move(name));
  }
  DTRAIN_CHECK(!ec, "cannot list the TensorBoard log directory '{}': {}", log_dir, ec.message());
  // Raise the seconds until every existing file sorts first; each round only raises.
  int64_t seconds = unix_seconds;
  for (bool raised = true; raised;) {
    raised = false;
    const std::string candidate = event_file_name(seconds, host, pid);
    for (const auto& name : existing) {
      const int64_t theirs = seconds_field(name);
      if (name >= candidate && theirs >= seconds) {
        seconds = theirs + 1;
        raised = true;
      }
    }
  }
  return event_file_name(seconds, host, pid);
}

EventFileWriter::EventFileWriter(const std::string& log_dir) {
  const auto now = static_cast<int64_t>(unix_time_now());
  const std::string host = host_name();
  const auto pid = static_cast<int64_t>(::getpid());
  // "x": exclusive creation, so an existing file is never appended to or truncated.
  for (int attempt = 0; attempt < 100 && !file_; ++attempt) {
    path_ = log_dir + "/" + next_event_file_name(log_dir, now + attempt, host, pid);
    file_.reset(std::fopen(path_.c_str(), "wbx"));
    DTRAIN_CHECK(file_ || errno == EEXIST, "cannot create TensorBoard event file '{}': {}", path_,
                 std::strerror(errno));
  }
  DTRAIN_CHECK(file_ != nullptr, "cannot create a new TensorBoard event file in '{}'", log_dir);
  proto::Event event;
  event.set_wall_time(unix_time_now());
  event.set_file_version(kFileVersion);
  append_event(event.SerializeAsString());
  flush();
}

EventFileWriter::~EventFileWriter() {
  try {
    close();
  } catch (const std::exception& e) {
    DTRAIN_LOG_ERROR("{}", e.what());
  }
}

void EventFileWriter::add_scalars(int64_t step,
                                  const std::vector<std::pair<std::string, double>>& values,
                                  double wall_time) {
  proto::Event event;
  event.set_wall_time(wall_time);
  event.set_step(step);
  proto::Summary* summary = event.mutable_summary();
  for (const auto& [tag, value] : values) {
    proto::Summary::Value* v = summary->add_value();
    v->set_tag(tag);
    v->set_simple_value(static_cast<float>(value));
  }
  append_event(event.SerializeAsString());
}

void EventFileWriter::add_session_start(int64_t step, double wall_time) {
  proto::Event event;
  event.set_wall_time(wall_time);
  event.set_step(step);
  event.mutable_session_log()->set_status(proto::SessionLog::START);
  append_event(event.SerializeAsString());
}

void EventFileWriter::append_event(const std::string& serialized) {
  DTRAIN_CHECK(file_ != nullptr, "TensorBoard event file '{}' is closed", path_);
  pending_ += frame_record(serialized);
}

void EventFileWriter::flush() {
  if (!file_) return;
  if (!pending_.empty()) {
    const size_t n = std::fwrite(pending_.data(), 1, pending_.size(), file_.get());
    DTRAIN_CHECK(n == pending_.size(), "cannot write TensorBoard event file '{}': {}", path_,
                 std::strerror(errno));
    pending_.clear();
  }
  DTRAIN_CHECK(std::fflush(file_.get()) == 0, "cannot write TensorBoard event file '{}': {}", path_,
               std::strerror(errno));
}

void EventFileWriter::close() {
  if (!file_) return;
  std::string error;
  try {
    flush();
  } catch (const std::exception& e) {
    error = e.what();
  }
  const int rc = std::fclose(file_.release());
  DTRAIN_CHECK(error.empty(), "{}", error);
  DTRAIN_CHECK(rc == 0, "cannot close TensorBoard event file '{}': {}", path_,
               std::strerror(errno));
}

}  // namespace dtrain::tensorboard
