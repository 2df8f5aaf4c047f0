// Small helpers shared by the benchmark executables: flag parsing, wall-clock timing,
// /proc memory figures, timed shell commands (dd) and JSON result lines.
//
//   bench::Flags flags(argc, argv);                  // --name value ...
//   const int iters = flags.get_int("iters", 20);
//   bench::Stopwatch sw;  ...;  double s = sw.seconds();
//   bench::append_json_line(flags.get("json", ""), result);
//
// Not thread-safe unless a function says so.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace dtrain::bench {

// "--name value" pairs (and "--name=value"); a "--name" followed by another flag or
// nothing is "1". Unknown flags are errors reported by check_all_used().
class Flags {
 public:
  Flags(int argc, char** argv);
  // The value of --name, or `fallback` when absent.
  std::string get(const std::string& name, const std::string& fallback);
  int64_t get_int(const std::string& name, int64_t fallback);
  double get_double(const std::string& name, double fallback);
  // Throws dtrain::ConfigError naming every flag that no get*() asked for, with the
  // ones that were asked for (call after reading all flags).
  void check_all_used() const;

 private:
  std::map<std::string, std::string> values_;
  std::map<std::string, bool> used_;
};

// Monotonic wall-clock timer started at construction.
class Stopwatch {
 public:
  Stopwatch() : t0_(std::chrono::steady_clock::now()) {}
  void reset() { t0_ = std::chrono::steady_clock::now(); }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  std::chrono::steady_clock::time_point t0_;
};

// A field of /proc/self/status in bytes ("VmRSS", "VmHWM"); -1 when unavailable.
int64_t proc_status_bytes(const std::string& field);
// Resets this process's peak RSS (VmHWM) to the current RSS by writing "5" to
// /proc/self/clear_refs. Returns false when the kernel refuses.
bool reset_peak_rss();

// CPU seconds (user + system) this process has used so far, all threads.
double process_cpu_seconds();

// A buffer to write: address and size in bytes.
using ByteSpan = std::pair<const void*, size_t>;

// Writes `buffers` back to back into `path` (created or truncated) with write(2), then
// fsyncs it. With kick_bytes > 0, starts the writeback every kick_bytes written
// (sync_file_range SYNC_FILE_RANGE_WRITE, which does not wait). Returns the seconds of
// the writes and of the fsync. Throws dtrain::Error naming the path on failure.
std::pair<double, double> write_and_fsync(const std::string& path,
                                          const std::vector<ByteSpan>& buffers,
                                          int64_t kick_bytes = 0);
// Reads `path` to its end with read(2) in 16 MiB calls; returns the seconds. Throws
// dtrain::Error naming the path on failure.
double read_whole_file(const std::string& path);

// Runs `command` with /bin/sh and returns its wall-clock seconds. Throws dtrain::Error
// naming the command when it exits non-zero.
double run_timed(const std::string& command);

// `sync; echo 3 > /proc/sys/vm/drop_caches`. Returns false (and changes nothing else)
// when not permitted (not root, read-only /proc in a container).
bool drop_page_cache();

// Median of `v` (0 for an empty vector).
double median(std::vector<double> v);

// Appends `j` as one line to `path` (nothing when path is empty). Throws dtrain::Error
// naming the path when it cannot be written.
void append_json_line(const std::string& path, const nlohmann::json& j);

// Human-readable bytes ("1.07 GB", decimal units as dd prints them).
std::string format_bytes(double bytes);

}  // namespace dtrain::bench
