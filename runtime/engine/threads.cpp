// Intra-op thread count resolution and its checkpoint state (see threads.h).
#include "runtime/engine/threads.h"

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include <ATen/Parallel.h>
#include <fmt/format.h>

#include "runtime/base/logging.h"

namespace dtrain::engine {
namespace {

constexpr const char* kStateKey = "intra_op_threads";

std::mutex g_mutex;
std::optional<ThreadCount> g_current;  // guarded by g_mutex

// A positive integer (OMP_NUM_THREADS's first entry: "4" of "4,2"), else nullopt.
std::optional<int> parse_omp(const std::string& text) {
  const std::string first = text.substr(0, text.find(','));
  if (first.empty() || first.size() > 6) return std::nullopt;
  int value = 0;
  for (char c : first) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  if (value <= 0) return std::nullopt;
  return value;
}

std::string read_small(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

const char* thread_source_name(ThreadSource source) {
  switch (source) {
    case ThreadSource::kConfig:
      return "SYSTEM.NUM_THREADS";
    case ThreadSource::kEnv:
      return "OMP_NUM_THREADS";
    case ThreadSource::kCheckpoint:
      return "the checkpoint";
    case ThreadSource::kCgroup:
      return "cgroup cpu.max";
    case ThreadSource::kAffinity:
      return "CPU affinity";
    case ThreadSource::kHardware:
      return "hardware threads";
  }
  return "?";
}

ThreadCount resolve_threads(const ThreadInputs& in) {
  ThreadCount t;
  if (in.config > 0) {
    t.count = static_cast<int>(in.config);
    t.source = ThreadSource::kConfig;
    t.detail = fmt::format("SYSTEM.NUM_THREADS {}", in.config);
    return t;
  }
  if (in.omp_num_threads && !in.omp_num_threads->empty()) {
    if (auto n = parse_omp(*in.omp_num_threads)) {
      t.count = *n;
      t.source = ThreadSource::kEnv;
      t.detail = fmt::format("OMP_NUM_THREADS={}", *in.omp_num_threads);
      return t;
    }
    t.warning = fmt::format("OMP_NUM_THREADS='{}' is not a positive integer; ignored",
                            in.omp_num_threads->substr(0, 32));
  }
  int cpus = in.affinity_cpus > 0 ? in.affinity_cpus : std::max(1, in.hardware_threads);
  t.source = in.affinity_cpus > 0 ? ThreadSource::kAffinity : ThreadSource::kHardware;
  if (in.cgroup_cpus > 0 && std::ceil(in.cgroup_cpus) < cpus) {
    cpus = static_cast<int>(std::ceil(in.cgroup_cpus));
    t.source = ThreadSource::kCgroup;
  }
  const int ranks = std::max(1, in.local_size);
  t.count = std::max(1, cpus / ranks);
  t.detail = fmt::format("{} CPUs ({}) / {} local rank{}", cpus, thread_source_name(t.source),
                         ranks, ranks == 1 ? "" : "s");
  return t;
}

double cgroup_cpu_limit(const std::string& proc_self_cgroup, const std::string& cgroup_root) {
  // cgroup v2: the one line "0::/some/path".
  std::istringstream lines(proc_self_cgroup);
  std::string line, path;
  while (std::getline(lines, line)) {
    if (line.rfind("0::", 0) == 0) path = line.substr(3);
  }
  if (path.empty() || path[0] != '/') return 0;
  double limit = 0;
  for (std::filesystem::path p(path);; p = p.parent_path()) {
    std::istringstream in(read_small(cgroup_root + (p == "/" ? "" : p.string()) + "/cpu.max"));
    std::string quota;
    double period = 0;
    if (in >> quota >> period && quota != "max" && period > 0) {
      const double cpus = std::atof(quota.c_str()) / period;
      if (cpus > 0 && (limit == 0 || cpus < limit)) limit = cpus;
    }
    if (p == "/" || p.empty() || p == p.parent_path()) break;
  }
  return limit;
}

ThreadInputs probe_thread_inputs(int64_t config, int local_size) {
  ThreadInputs in;
  in.config = config;
  if (const char* omp = std::getenv("OMP_NUM_THREADS")) in.omp_num_threads = omp;
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (::sched_getaffinity(0, sizeof(mask), &mask) == 0) in.affinity_cpus = CPU_COUNT(&mask);
  in.cgroup_cpus = cgroup_cpu_limit(read_small("/proc/self/cgroup"));
  in.hardware_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  in.local_size = local_size;
  return in;
}

void set_intra_op_threads(const ThreadCount& t) {
  at::set_num_threads(t.count);
  std::lock_guard<std::mutex> lock(g_mutex);
  g_current = t;
}

ThreadCount current_threads() {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (g_current) return *g_current;
  }
  ThreadCount t;
  t.count = at::get_num_threads();
  t.detail = "LibTorch's default";
  return t;
}

ThreadCount keep_checkpoint_threads(std::optional<int64_t> saved) {
  const ThreadCount now = current_threads();
  if (!saved || *saved <= 0 || *saved == now.count) return now;
  if (now.chosen()) {
    DTRAIN_LOG_WARN(
        "The checkpoint was written with {} intra-op threads per rank, this run uses {} ({}): "
        "floating-point reductions split differently, so training is no longer bitwise equal "
        "to an uninterrupted run. To keep it, run with {} threads (SYSTEM.NUM_THREADS {}), or "
        "set neither SYSTEM.NUM_THREADS nor OMP_NUM_THREADS and the checkpoint's count is used",
        *saved, now.count, now.detail, *saved, *saved);
    return now;
  }
  ThreadCount t;
  t.count = static_cast<int>(*saved);
  t.source = ThreadSource::kCheckpoint;
  t.detail = fmt::format("the checkpoint's count; {} would give {}", now.detail, now.count);
  set_intra_op_threads(t);
  DTRAIN_LOG_INFO("Intra-op threads per rank: {} (from the checkpoint, so that the resumed run "
                  "stays bitwise equal; {} would give {}; SYSTEM.NUM_THREADS or "
                  "OMP_NUM_THREADS choose another)",
                  t.count, now.detail, now.count);
  return t;
}

StateDict ThreadCountState::state_dict() const {
  return {{kStateKey, static_cast<int64_t>(current_threads().count)}};
}

void ThreadCountState::load_state_dict(const StateDict& state) {
  saved_ = state_int(state, kStateKey, "threads");
}

}  // namespace dtrain::engine
