// Benchmark helpers: flags, /proc figures, timed shell commands, JSON lines, shared
// training states (see bench_util.h).
#include "bench/bench_util.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include <fmt/format.h>
#include <torch/utils.h>

#include "models/mlp.h"
#include "models/resnet.h"
#include "runtime/base/error.h"
#include "runtime/data/in_memory.h"
#include "runtime/data/sampler.h"
#include "runtime/dist/mpi_runtime.h"

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

namespace {

// read(2) of up to `n` bytes into `p`, retried on EINTR; 0 at the end of the file.
// Throws dtrain::Error naming the path (and closes fd) on failure.
size_t read_some(int fd, char* p, size_t n, const std::string& path) {
  for (;;) {
    const ssize_t got = ::read(fd, p, n);
    if (got >= 0) return static_cast<size_t>(got);
    if (errno == EINTR) continue;
    const int err = errno;
    ::close(fd);
    throw Error(fmt::format("cannot read '{}': {}", path, std::strerror(err)));
  }
}

constexpr size_t kReadCall = size_t{16} << 20;

}  // namespace

double read_whole_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  DTRAIN_CHECK(fd >= 0, "cannot open '{}': {}", path, std::strerror(errno));
  std::vector<char> buf(kReadCall);
  Stopwatch sw;
  while (read_some(fd, buf.data(), buf.size(), path) > 0) {
  }
  const double s = sw.seconds();
  ::close(fd);
  return s;
}

double read_into(const std::string& path, const std::vector<MutableByteSpan>& buffers) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  DTRAIN_CHECK(fd >= 0, "cannot open '{}': {}", path, std::strerror(errno));
  size_t total = 0;
  for (const auto& b : buffers) total += b.second;
  Stopwatch sw;
  for (const auto& [data, size] : buffers) {
    char* p = static_cast<char*>(data);
    for (size_t done = 0; done < size;) {
      const size_t got = read_some(fd, p + done, std::min(kReadCall, size - done), path);
      if (got == 0) {
        ::close(fd);
        throw Error(fmt::format("'{}' ends before the {} bytes of its buffers", path, total));
      }
      done += got;
    }
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

double max_over_ranks(dist::Communicator& comm, double x) {
  return comm.all_reduce_double(x, dist::ReduceOp::kMax);
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

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  if (!(in >> a >> b >> c)) return "";
  return a + " " + b + " " + c;
}

models::GptOptions gpt_options_from_flags(Flags& flags) {
  models::GptOptions g;
  g.n_layer = flags.get_int("layers", 12);
  g.n_embd = flags.get_int("embd", 768);
  g.n_head = flags.get_int("heads", 12);
  g.vocab_size = flags.get_int("vocab", 2048);
  g.context_length = flags.get_int("ctx", 128);
  return g;
}

GptTrainingState make_gpt_training_state(const models::GptOptions& options) {
  GptTrainingState s;
  torch::manual_seed(0);
  s.model = models::make_gpt(options);
  s.adamw = std::make_unique<torch::optim::AdamW>(s.model->parameters(),
                                                  torch::optim::AdamWOptions(1e-4));
  for (auto& p : s.model->parameters()) p.mutable_grad() = at::randn_like(p).mul_(1e-3);
  s.adamw->step();
  for (auto& p : s.model->parameters()) {
    p.mutable_grad() = at::Tensor();
    s.params += p.numel();
  }
  s.model_state = std::make_unique<checkpoint::ModuleState>(s.model);
  s.opt_state = std::make_unique<optim::OptimizerState>(*s.adamw, s.model->named_parameters());
  return s;
}

NamedTensors replicated_tensors(const checkpoint::ModuleState& model,
                                const optim::OptimizerState& opt) {
  NamedTensors out;
  for (const auto& [k, v] : model.state_dict()) {
    if (auto t = std::get_if<at::Tensor>(&v)) out.emplace_back("model/" + k, *t);
  }
  for (const auto& [k, v] : opt.state_dict()) {
    if (auto t = std::get_if<at::Tensor>(&v)) out.emplace_back("optimizer/" + k, *t);
  }
  return out;
}

int64_t total_bytes(const NamedTensors& tensors) {
  int64_t bytes = 0;
  for (const auto& [n, t] : tensors) bytes += t.numel() * static_cast<int64_t>(t.element_size());
  return bytes;
}

std::vector<ByteSpan> byte_spans(const NamedTensors& tensors) {
  std::vector<ByteSpan> out;
  for (const auto& [n, t] : tensors) {
    DTRAIN_CHECK(t.is_contiguous(), "tensor '{}' is not contiguous", n);
    out.emplace_back(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size());
  }
  return out;
}

std::vector<MutableByteSpan> mutable_byte_spans(const NamedTensors& tensors) {
  std::vector<MutableByteSpan> out;
  for (const auto& [data, size] : byte_spans(tensors)) out.emplace_back(const_cast<void*>(data), size);
  return out;
}

namespace {

// Linear layers: forward 2*in*out per sample, backward 2*in*out for the weight gradient
// and 2*in*out for the input gradient (not needed by the first layer).
double mlp_flops_per_sample(torch::nn::Module& m) {
  double flops = 0.0;
  bool first = true;
  for (const auto& p : m.named_parameters()) {
    if (p.value().dim() != 2) continue;
    const double w = static_cast<double>(p.value().numel());
    flops += (first ? 4.0 : 6.0) * w;
    first = false;
  }
  return flops;
}

}  // namespace

BenchModel make_bench_model(const std::string& name, const std::vector<int64_t>& mlp_hidden) {
  BenchModel s;
  if (name == "mlp") {
    s.model = models::make_mlp({784, mlp_hidden, 10});
    s.sample_shape = {784};
    s.flops_per_sample = mlp_flops_per_sample(*s.model);
  } else if (name == "resnet18") {
    s.model = models::make_resnet({18, 64, 3, 10});
    s.sample_shape = {3, 32, 32};
  } else {
    throw ConfigError(fmt::format("--model: unknown model '{}' (mlp, resnet18)", name));
  }
  return s;
}

BenchTrainer make_bench_trainer(const BenchModel& m, int64_t batch, dist::Communicator& comm,
                                engine::DataParallelOptions dp) {
  const int rank = comm.rank(), world = comm.size();
  const int64_t n = batch * world * 8;
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), m.sample_shape.begin(), m.sample_shape.end());
  auto dataset = std::make_shared<data::ClassificationDataset>(
      at::randn(shape), at::randint(0, 10, {n}, at::kLong), 10, "bench");
  auto sampler = std::make_shared<data::DistributedSampler>(n, batch * world, rank, world, 0);
  auto loader = std::make_shared<engine::DataLoader>(dataset, sampler);
  BenchTrainer t;
  t.optimizer = std::make_shared<torch::optim::SGD>(m.model->parameters(),
                                                    torch::optim::SGDOptions(0.01).momentum(0.9));
  t.dp = std::make_shared<engine::DataParallel>(m.model, comm, dp);
  t.trainer = std::make_unique<engine::SimpleTrainer>(m.model, loader, t.optimizer, t.dp);
  return t;
}

int mpi_bench_main(int argc, char** argv, const char* name, int (*run)(int, char**)) {
  dist::MpiRuntime mpi(&argc, &argv);
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << name << ": " << e.what() << "\n";
    dist::MpiRuntime::abort(1);
  }
}

int bench_main(int argc, char** argv, const char* name, int (*run)(int, char**)) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << name << ": " << e.what() << "\n";
    return 1;
  }
}

}  // namespace dtrain::bench
