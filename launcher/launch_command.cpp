// `dtrain launch`: mpirun command construction, signal forwarding, restart loop.
#include "launcher/launch_command.h"

#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "runtime/base/error.h"

extern char** environ;

namespace dtrain::launcher {
namespace {

constexpr int kExitPreempted = 75;

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789_-+=/.,:@%") == std::string::npos) {
    return s;
  }
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

bool forwarded(const std::string& name) {
  static const char* kPrefixes[] = {"DTRAIN_", "NCCL_", "CUDA_", "HDF5_", "OMP_", "MKL_"};
  for (const char* p : kPrefixes) {
    if (name.rfind(p, 0) == 0) return name != "OMP_NUM_THREADS";
  }
  return name == "PATH" || name == "LD_LIBRARY_PATH";
}

// PID of the running mpirun and whether the user interrupted us (for the handlers).
std::atomic<pid_t> g_child{0};
std::atomic<int> g_signals{0};

void forward_signal(int sig) {
  const int n = ++g_signals;
  const pid_t child = g_child.load();
  if (child <= 0) return;
  // mpirun forwards SIGUSR1 to every rank, while SIGTERM makes it kill the job: turn the
  // first SIGTERM into SIGUSR1 so the ranks save a preemption checkpoint; a second
  // signal goes through as it is (the ranks then exit at once).
  ::kill(child, (sig == SIGTERM && n == 1) ? SIGUSR1 : sig);
}

}  // namespace

std::string MpirunCommand::to_string() const {
  std::string out;
  for (const auto& [k, v] : env) out += k + "=" + shell_quote(v) + " ";
  for (size_t i = 0; i < argv.size(); ++i) out += (i ? " " : "") + shell_quote(argv[i]);
  return out;
}

std::vector<std::string> with_resume(const std::vector<std::string>& train_args) {
  std::vector<std::string> out = train_args;
  if (std::find(out.begin(), out.end(), "--resume") != out.end()) return out;
  auto it = std::find(out.begin(), out.end(), "train");
  out.insert(it == out.end() ? out.begin() : it + 1, "--resume");
  return out;
}

MpirunCommand build_mpirun_command(const LaunchOptions& o, const LaunchContext& ctx) {
  DTRAIN_CHECK_T(ConfigError, o.nproc_per_node >= 1, "--nproc-per-node must be >= 1, got {}",
                 o.nproc_per_node);
  DTRAIN_CHECK_T(ConfigError, o.nnodes >= 1, "--nnodes must be >= 1, got {}", o.nnodes);
  DTRAIN_CHECK_T(ConfigError, o.nnodes == 1 || !o.hostfile.empty() ||
                                  ctx.env.count("SLURM_JOB_ID") || ctx.env.count("PBS_NODEFILE"),
                 "--nnodes {} needs --hostfile (or a SLURM/PBS allocation that mpirun reads)",
                 o.nnodes);
  DTRAIN_CHECK_T(ConfigError, o.max_restarts >= 0, "--max-restarts must be >= 0, got {}",
                 o.max_restarts);
  DTRAIN_CHECK_T(ConfigError, o.restart_backoff_s >= 0,
                 "--restart-backoff must be >= 0 seconds, got {}", o.restart_backoff_s);
  DTRAIN_CHECK_T(ConfigError, !o.train_args.empty() && o.train_args.front() == "train",
                 "expected the command to launch after '--', starting with 'train' (e.g. "
                 "dtrain launch --nproc-per-node 2 -- train --config-file F)");
  static const char* kBinds[] = {"auto", "core", "socket", "none"};
  DTRAIN_CHECK_T(ConfigError, std::find_if(std::begin(kBinds), std::end(kBinds), [&](const char* b) {
                   return o.bind_to == b;
                 }) != std::end(kBinds),
                 "--bind-to must be auto, core, socket or none, got '{}'", o.bind_to);
  if (!o.hostfile.empty()) {
    DTRAIN_CHECK_T(ConfigError, std::filesystem::exists(o.hostfile), "--hostfile '{}' does not exist",
                   o.hostfile);
  }

  MpirunCommand cmd;
  if (ctx.is_root) {
    cmd.env["OMPI_ALLOW_RUN_AS_ROOT"] = "1";
    cmd.env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
  }
  const int cores = std::max(1, ctx.cores_per_node);
  const int per_rank = std::max(1, cores / o.nproc_per_node);
  const bool oversubscribed = o.nproc_per_node > cores;
  std::string bind = o.bind_to;
  if (bind == "auto") bind = oversubscribed ? "none" : "core";
  auto& a = cmd.argv;
  a = {o.mpirun, "-np", std::to_string(o.nproc_per_node * o.nnodes), "--map-by"};
  a.push_back(bind == "core" ? fmt::format("ppr:{}:node:PE={}", o.nproc_per_node, per_rank)
                             : fmt::format("ppr:{}:node", o.nproc_per_node));
  // mpirun refuses to bind two ranks to one core unless told that is intended.
  a.insert(a.end(),
           {"--bind-to", bind == "core" && oversubscribed ? "core:overload-allowed" : bind});
  if (!o.hostfile.empty()) a.insert(a.end(), {"--hostfile", o.hostfile});
  // More ranks than cores: waiting ranks must yield their core instead of spinning in
  // MPI's progress loop (Open MPI does not switch by itself under --oversubscribe).
  if (oversubscribed) a.insert(a.end(), {"--oversubscribe", "--mca", "mpi_yield_when_idle", "1"});
  const std::string omp = ctx.env.count("OMP_NUM_THREADS") ? ctx.env.at("OMP_NUM_THREADS")
                                                          : std::to_string(per_rank);
  a.insert(a.end(), {"-x", "OMP_NUM_THREADS=" + omp});
  for (const auto& [name, value] : ctx.env) {
    if (forwarded(name)) a.insert(a.end(), {"-x", name});
  }
  a.insert(a.end(), o.mpi_args.begin(), o.mpi_args.end());
  a.push_back(ctx.dtrain_exe);
  a.insert(a.end(), o.train_args.begin(), o.train_args.end());
  return cmd;
}

int physical_core_count(const std::vector<int>& cpus, const std::string& sys_cpu_dir) {
  std::set<std::pair<std::string, std::string>> cores;
  int unknown = 0;
  for (int cpu : cpus) {
    const std::string topo = fmt::format("{}/cpu{}/topology/", sys_cpu_dir, cpu);
    std::ifstream package(topo + "physical_package_id"), core(topo + "core_id");
    std::string p, c;
    if (package >> p && core >> c) {
      cores.emplace(p, c);
    } else {
      ++unknown;
    }
  }
  return std::max(1, static_cast<int>(cores.size()) + unknown);
}

namespace {

// Physical cores this process may run on (its affinity mask, e.g. a SLURM/cgroup
// cpuset), falling back to the hardware thread count.
int usable_cores() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (::sched_getaffinity(0, sizeof(mask), &mask) == 0) {
    std::vector<int> cpus;
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      if (CPU_ISSET(c, &mask)) cpus.push_back(c);
    }
    if (!cpus.empty()) return physical_core_count(cpus);
  }
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

LaunchContext current_context() {
  LaunchContext ctx;
  ctx.is_root = ::geteuid() == 0;
  ctx.cores_per_node = usable_cores();
  std::error_code ec;
  ctx.dtrain_exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec) ctx.dtrain_exe = "dtrain";
  for (char** e = environ; *e; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (eq) ctx.env[std::string(*e, static_cast<size_t>(eq - *e))] = eq + 1;
  }
  return ctx;
}

// The signals run_launch() forwards to mpirun.
constexpr int kForwardedSignals[] = {SIGINT, SIGTERM, SIGUSR1};

// Spawns the command and waits for it; returns its exit status (128+signal if killed).
int run_once(const MpirunCommand& cmd) {
  // cmd.env first: getenv() returns the first match, so these override the inherited ones.
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : cmd.env) env_strings.push_back(k + "=" + v);
  for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
  std::vector<char*> envp, argv;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = cmd.argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);

  // Block the forwarded signals until g_child is set, so that one arriving while mpirun
  // starts is forwarded rather than lost; the child gets the original mask back.
  sigset_t forwarded_set, old_mask;
  sigemptyset(&forwarded_set);
  for (int s : kForwardedSignals) sigaddset(&forwarded_set, s);
  ::pthread_sigmask(SIG_BLOCK, &forwarded_set, &old_mask);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setsigmask(&attr, &old_mask);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = 0;
  const int rc = ::posix_spawnp(&pid, argv[0], nullptr, &attr, argv.data(), envp.data());
  posix_spawnattr_destroy(&attr);
  if (rc == 0) g_child = pid;
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  DTRAIN_CHECK(rc == 0, "cannot start '{}': {}", cmd.argv[0], std::strerror(rc));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  g_child = 0;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

int run_launch(const LaunchOptions& options) {
  LaunchOptions o = options;
  if (const char* m = std::getenv("DTRAIN_MPIRUN")) o.mpirun = m;
  const LaunchContext ctx = current_context();
  MpirunCommand cmd = build_mpirun_command(o, ctx);
  if (o.dry_run) {
    std::printf("%s\n", cmd.to_string().c_str());
    return 0;
  }
  struct sigaction sa {};
  sa.sa_handler = forward_signal;
  sigemptyset(&sa.sa_mask);
  for (int s : kForwardedSignals) ::sigaction(s, &sa, nullptr);

  double backoff = o.restart_backoff_s;
  for (int attempt = 0;; ++attempt) {
    std::fprintf(stderr, "[dtrain launch] attempt %d/%d: %s\n", attempt + 1, o.max_restarts + 1,
                 cmd.to_string().c_str());
    std::fflush(stderr);
    const int status = run_once(cmd);
    if (status == 0) {
      std::fprintf(stderr, "[dtrain launch] finished\n");
      return 0;
    }
    const char* why = status == kExitPreempted ? "preempted (checkpoint saved)" : "failed";
    std::fprintf(stderr, "[dtrain launch] run %s with exit status %d\n", why, status);
    if (g_signals.load() > 0) {
      std::fprintf(stderr, "[dtrain launch] not restarting: the launcher itself was signalled\n");
      return status;
    }
    if (attempt >= o.max_restarts) {
      if (o.max_restarts > 0) std::fprintf(stderr, "[dtrain launch] no restarts left\n");
      return status;
    }
    std::fprintf(stderr, "[dtrain launch] restarting with --resume in %.1f s (%d restarts left)\n",
                 backoff, o.max_restarts - attempt);
    std::this_thread::sleep_for(std::chrono::duration<double>(backoff));
    if (g_signals.load() > 0) {
      // Signalled while no run was active: nothing to forward, and no restart wanted.
      std::fprintf(stderr, "[dtrain launch] not restarting: the launcher itself was signalled\n");
      return status;
    }
    backoff = std::min(60.0, backoff * 2);
    LaunchOptions next = o;
    next.train_args = with_resume(o.train_args);
    cmd = build_mpirun_command(next, ctx);
  }
}

}  // namespace dtrain::launcher
