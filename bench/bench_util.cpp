// Benchmark helpers: flags, /proc figures, timed shell commands, JSON lines (see bench_util.h).
#include "bench/bench_util.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "runtime/base/error.h"

namespace dtrain::bench {

Flags::Flags(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    DTRAIN_CHECK_T(ConfigError, a.rfind("--", 0) == 0,
                   "{}: expected a flag (--name [value]) but got '{}'", argv[0], a);
    a = a.substr(2);
    if (auto eq = a.find('='); eq != std::string::npos) {
      values_[a.substr(0, eq)] = a.substr(eq + 1);
    } else if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
      values_[a] = argv[++i];
    } else {
      values_[a] = "1";
    }
  }
}

std::string Flags::get(const std::string& name, const std::string& fallback) {
  used_[name] = true;
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

int64_t Flags::get_int(const std::string& name, int64_t fallback) {
  const std::string v = get(name, std::to_string(fallback));
  try {
    size_t pos = 0;
    const int64_t x = std::stoll(v, &pos);
    if (pos == v.size()) return x;
  } catch (const std::exception&) {
  }
  throw ConfigError(fmt::format("--{}: expected an integer but got '{}'", name, v));
}

double Flags::get_double(const std::string& name, double fallback) {
  const std::string v = get(name, fmt::format("{}", fallback));
  try {
    size_t pos = 0;
    const double x = std::stod(v, &pos);
    if (pos == v.size()) return x;
  } catch (const std::exception&) {
  }
  throw ConfigError(fmt::format("--{}: expected a number but got '{}'", name, v));
}

void Flags::check_all_used() const {
  std::string unknown, known;
  for (const auto& [k, v] : values_) {
    if (!used_.count(k)) unknown += " --" + k;
  }
  for (const auto& [k, v] : used_) known += " --" + k;
  DTRAIN_CHECK_T(ConfigError, unknown.empty(), "unknown flag(s):{} (known:{})", unknown, known);
}

int64_t proc_status_bytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string prefix = field + ":";
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    std::istringstream s(line.substr(prefix.size()));
    int64_t kb = -1;
    s >> kb;
    return kb < 0 ? -1 : kb * 1024;
  }
  return -1;
}

bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  if (!out) return false;
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

double process_cpu_seconds() {
  struct rusage u {};
  ::getrusage(RUSAGE_SELF, &u);
  auto sec = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec * 1e-6; };
  return sec(u.ru_utime) + sec(u.ru_stime);
}

std::pair<double, double> write_and_fsync(const std::string& path,
                                          const std::vector<ByteSpan>& buffers,
                                          int64_t kick_bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  DTRAIN_CHECK(fd >= 0, "cannot create '{}': {}", path, std::strerror(errno));
  Stopwatch sw;
  int64_t pending = 0;
  for (const auto& [data, size] : buffers) {
    const char* p = static_cast<const char*>(data);
    size_t left = size;
    while (left > 0) {
      const ssize_t n = ::write(fd, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int err = errno;
        ::close(fd);
        throw Error(fmt::format("cannot write '{}': {}", path, std::strerror(err)));
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    pending += static_cast<int64_t>(size);
    if (kick_bytes > 0 && pending >= kick_bytes) {
      ::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
      pending = 0;
    }
  }
  const double write_s = sw.seconds();
  sw.reset();
  const int rc = ::fsync(fd);
  const int err = errno;
  const double fsync_s = sw.seconds();
  ::close(fd);
  DTRAIN_CHECK(rc == 0, "cannot fsync '{}': {}", path, std::strerror(err));
  return {write_s, fsync_s};
}

double read_whole_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  DTRAIN_CHECK(fd >= 0, "cannot open '{}': {}", path, std::strerror(errno));
  std::vector<char> buf(16 << 20);
  Stopwatch sw;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      throw Error(fmt::format("cannot read '{}': {}", path, std::strerror(err)));
    }
    if (n == 0) break;
  }
  const double s = sw.seconds();
  ::close(fd);
  return s;
}

double run_timed(const std::string& command) {
  Stopwatch sw;
  const int rc = std::system(command.c_str());
  const double s = sw.seconds();
  DTRAIN_CHECK(rc == 0, "benchmark command failed (status {}): {}", rc, command);
  return s;
}

bool drop_page_cache() {
  ::sync();
  std::ofstream out("/proc/sys/vm/drop_caches");
  if (!out) return false;
  out << "3";
  out.flush();
  return static_cast<bool>(out);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void append_json_line(const std::string& path, const nlohmann::json& j) {
  if (path.empty()) return;
  std::ofstream out(path, std::ios::app);
  DTRAIN_CHECK(static_cast<bool>(out), "cannot open '{}' to append results: {}", path,
               std::strerror(errno));
  out << j.dump() << "\n";
  DTRAIN_CHECK(static_cast<bool>(out), "cannot write results to '{}'", path);
}

std::string format_bytes(double bytes) {
  if (bytes >= 1e9) return fmt::format("{:.2f} GB", bytes / 1e9);
  if (bytes >= 1e6) return fmt::format("{:.1f} MB", bytes / 1e6);
  if (bytes >= 1e3) return fmt::format("{:.1f} kB", bytes / 1e3);
  return fmt::format("{:.0f} B", bytes);
}

}  // namespace dtrain::bench
