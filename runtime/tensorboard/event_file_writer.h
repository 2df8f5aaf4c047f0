// EventFileWriter: appends TensorBoard events (scalars, session starts) to one new
// events.out.tfevents.* file, in TensorBoard's record format (record.h).
//
//   tensorboard::EventFileWriter w(out_dir);          // creates the file, writes file_version
//   w.add_session_start(start_iter);                  // see docs/DESIGN.md on resuming
//   w.add_scalars(iter, {{"total_loss", 0.52}, {"lr", 0.01}});
//   w.flush();                                        // records reach the file here
//
// Errors throw dtrain::Error naming the file. Not thread-safe: one thread at a time.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace dtrain::tensorboard {

// Seconds since the Unix epoch, with sub-second precision (an event's wall_time).
double unix_time_now();

// The name of a new event file in `log_dir`: "events.out.tfevents.<seconds>.<host>.<pid>"
// (TensorBoard's naming plus the pid, so that two processes never collide). TensorBoard
// reads a directory's event files in lexicographic order and assumes that a writer never
// returns to an earlier file, so when an event file already in `log_dir` does not sort
// before the name, <seconds> is raised until it does (a clock set back, or two runs in
// one second).
std::string next_event_file_name(const std::string& log_dir, int64_t unix_seconds,
                                 const std::string& host, int64_t pid);

class EventFileWriter {
 public:
  // Creates a new event file in the existing directory `log_dir` (named by
  // next_event_file_name for now, this host and this process) and writes its first
  // event, file_version "brain.Event:2", flushed.
  explicit EventFileWriter(const std::string& log_dir);
  // Flushes and closes; errors are logged, not thrown (call close() to see them).
  ~EventFileWriter();
  EventFileWriter(const EventFileWriter&) = delete;
  EventFileWriter& operator=(const EventFileWriter&) = delete;

  // Buffers one Summary event at `step` holding a simple_value (float32) per (tag, value).
  void add_scalars(int64_t step, const std::vector<std::pair<std::string, double>>& values,
                   double wall_time = unix_time_now());
  // Buffers a SessionLog START event at `step`: TensorBoard then drops the events of
  // earlier sessions (earlier files of this directory) with step >= `step`.
  void add_session_start(int64_t step, double wall_time = unix_time_now());
  // Writes the buffered events to the file and flushes the stdio buffer (no fsync).
  void flush();
  // Flushes and closes the file; later calls do nothing. Throws on a write error.
  void close();
  // Whether the file is still open (not closed yet).
  bool is_open() const { return file_ != nullptr; }
  // Full path of the file.
  const std::string& path() const { return path_; }

 private:
  struct FileCloser {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  void append_event(const std::string& serialized);

  std::string path_;
  std::unique_ptr<std::FILE, FileCloser> file_;
  std::string pending_;  // framed records not yet written
};

}  // namespace dtrain::tensorboard
