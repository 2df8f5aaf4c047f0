// `dtrain launch`: mpirun command construction, signal forwarding, restart loop.
#include "launcher/launch_command.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

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
  a.insert(a.end(), {"--bind-to", bind});
  if (!o.hostfile.empty()) a.insert(a.end(), {"--hostfile", o.hostfile});
  if (oversubscribed) a.push_back("--oversubscribe");
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

namespace {

LaunchContext current_context() {
  LaunchContext ctx;
  ctx.is_root = ::geteuid() == 0;
  ctx.cores_per_node = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::error_code ec;
  ctx.dtrain_exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec) ctx.dtrain_exe = "dtrain";
  for (char** e = environ; *e; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (eq) ctx.env[std::string(*e, static_cast<size_t>(eq - *e))] = eq + 1;
  }
  return ctx;
}

// Spawns the command and waits for it; returns its exit status (128+signal if killed).
int run_once(const MpirunCommand& cmd) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
  for (const auto& [k, v] : cmd.env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp, argv;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = cmd.argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = ::posix_spawnp(&pid, argv[0], nullptr, nullptr, argv.data(), envp.data());
  DTRAIN_CHECK(rc == 0, "cannot start '{}': {}", cmd.argv[0], std::strerror(rc));
  g_child = pid;
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
  for (int s : {SIGINT, SIGTERM, SIGUSR1}) ::sigaction(s, &sa, nullptr);

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
    backoff = std::min(60.0, backoff * 2);
    LaunchOptions next = o;
    next.train_args = with_resume(o.train_args);
    cmd = build_mpirun_command(next, ctx);
  }
}

}  // namespace dtrain::launcher
