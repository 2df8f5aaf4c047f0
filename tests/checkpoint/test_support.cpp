// Shared helpers of the checkpoint tests (see test_support.h).
#include "tests/checkpoint/test_support.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <mutex>
#include <sstream>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "checkpoint/inspect.h"
#include "runtime/base/error.h"
#include "runtime/base/fs.h"
#include "runtime/h5/h5.h"
#include "tests/test_util.h"

namespace dtrain::checkpoint::testing {
namespace stdfs = std::filesystem;

namespace {

struct TinyNetImpl : torch::nn::Module {
  TinyNetImpl(int64_t in, int64_t hidden, int64_t out)
      : fc1(register_module("fc1", torch::nn::Linear(in, hidden))),
        bn(register_module("bn", torch::nn::BatchNorm1d(hidden))),
        fc2(register_module("fc2", torch::nn::Linear(hidden, out))) {}
  at::Tensor forward(const at::Tensor& x) { return fc2(torch::relu(bn(fc1(x)))); }
  torch::nn::Linear fc1;
  torch::nn::BatchNorm1d bn;
  torch::nn::Linear fc2;
};

uint64_t name_hash(const std::string& s) { return XXH64(s.data(), s.size(), 0); }

}  // namespace

std::shared_ptr<torch::nn::Module> make_tiny_net(uint64_t seed, int64_t in, int64_t hidden,
                                                 int64_t out) {
  auto net = std::make_shared<TinyNetImpl>(in, hidden, out);
  fill_deterministic(*net, seed);
  return net;
}

void fill_deterministic(torch::nn::Module& module, uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto fill = [seed](const std::string& name, at::Tensor t) {
    const double phase = static_cast<double>(name_hash(name) % 1000) * 0.013 +
                         static_cast<double>(seed % 100000) * 1.7;
    if (at::isFloatingType(t.scalar_type())) {
      at::Tensor v = at::sin(at::arange(t.numel(), at::kDouble) * 0.731 + phase) * 0.5;
      if (name.find("running_var") != std::string::npos) v = v.abs() + 0.5;
      t.copy_(v.reshape(t.sizes()));
    } else {
      t.fill_(static_cast<int64_t>(seed % 7));
    }
  };
  for (const auto& p : module.named_parameters()) fill(p.key(), p.value());
  for (const auto& b : module.named_buffers()) fill(b.key(), b.value());
}

at::Tensor pattern_tensor(const std::vector<int64_t>& shape, at::ScalarType dtype, uint64_t seed) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  at::Tensor base = at::sin(at::arange(n, at::kDouble) * 1.37 + static_cast<double>(seed)) * 100.0;
  at::Tensor out;
  if (dtype == at::kBool) {
    out = base > 0;
  } else if (dtype == at::kByte) {
    out = base.abs().to(at::kByte);
  } else {
    out = base.to(dtype);
  }
  if (at::isFloatingType(dtype) && n >= 8) {
    at::Tensor specials = at::tensor({-0.0, std::numeric_limits<double>::infinity(),
                                      -std::numeric_limits<double>::infinity(),
                                      std::numeric_limits<double>::quiet_NaN(), 1e-30},
                                     at::kDouble)
                              .to(dtype);
    out.narrow(0, 0, 5).copy_(specials);
  }
  return out.reshape(shape).contiguous();
}

const std::vector<at::ScalarType>& all_dtypes() {
  static const std::vector<at::ScalarType> kAll = {
      at::kFloat, at::kDouble, at::kHalf, at::kBFloat16, at::kChar,
      at::kShort, at::kInt,    at::kLong, at::kByte,     at::kBool};
  return kAll;
}

StateDict sample_extras(uint64_t seed, int64_t iteration) {
  StateDict out;
  out["iteration"] = iteration;
  out["count"] = static_cast<int64_t>(seed) * -3 - 1;
  out["loss"] = 0.1 + static_cast<double>(seed) / 3.0;
  out["note"] = fmt::format("seed {} \"quoted\" \u00e9", seed);
  uint64_t k = seed * 100;
  for (at::ScalarType t : all_dtypes()) {
    const std::string name = "tensors/" + std::string(c10::toString(t));
    out[name + "/scalar"] = pattern_tensor({}, t, ++k);
    out[name + "/empty"] = pattern_tensor({0, 3}, t, ++k);
    out[name + "/vector"] = pattern_tensor({37}, t, ++k);
    out[name + "/cube"] = pattern_tensor({5, 3, 2}, t, ++k);
  }
  return out;
}

TrainingState::TrainingState(OptKind kind, uint64_t seed, int rank, int world, int64_t hidden)
    : cfg(Config::defaults()) {
  cfg.set("SOLVER.OPTIMIZER", std::string(kind == OptKind::kSGD ? "SGD" : "AdamW"));
  cfg.set("SOLVER.BASE_LR", 0.05);
  cfg.set("SOLVER.MAX_ITER", int64_t{100});
  cfg.set("SOLVER.STEPS", std::vector<int64_t>{2, 5});
  cfg.set("SOLVER.WARMUP_ITERS", int64_t{2});
  model = make_tiny_net(seed, 6, hidden, 3);
  optimizer = optim::build_optimizer(cfg, model->named_parameters());
  optimizer_state = std::make_unique<optim::OptimizerState>(*optimizer, model->named_parameters());
  scheduler = optim::build_lr_scheduler(cfg, *optimizer);
  // Fixed sampler seed: loading checks that it matches.
  sampler = std::make_unique<data::DistributedSampler>(64, 8, rank, world, /*seed=*/1234);
}

void TrainingState::train(int steps) {
  auto net = std::dynamic_pointer_cast<TinyNetImpl>(model);
  DTRAIN_CHECK(net != nullptr, "TrainingState::train: not a tiny net");
  net->train();
  for (int s = 0; s < steps; ++s) {
    sampler->next();
    // The batch follows the restored scheduler position, so that a loaded state
    // continues with the same batches as the saved one would have.
    const double k = static_cast<double>(scheduler->last_iter() + 1);
    ++steps_taken;
    at::Tensor x = at::sin(at::arange(8 * 6, at::kFloat).reshape({8, 6}) * (0.1 * k) + 0.3);
    at::Tensor y = at::cos(at::arange(8 * 3, at::kFloat).reshape({8, 3}) * (0.2 * k));
    optimizer->zero_grad();
    at::Tensor loss = torch::mse_loss(net->forward(x), y);
    loss.backward();
    optimizer->step();
    scheduler->step();
  }
}

std::map<std::string, Checkpointable> TrainingState::checkpointables() {
  return {{"optimizer", {optimizer_state.get(), Scope::kReplicated}},
          {"scheduler", {scheduler.get(), Scope::kReplicated}},
          {"sampler", {sampler.get(), Scope::kReplicated}},
          {"rng", {&rng, Scope::kPerRank}}};
}

StateDict TrainingState::snapshot() const {
  StateDict out;
  auto add = [&out](const std::string& prefix, const StateDict& s) {
    for (const auto& [k, v] : s) {
      if (auto t = std::get_if<at::Tensor>(&v)) {
        out[prefix + "/" + k] = t->detach().clone();
      } else {
        out[prefix + "/" + k] = v;
      }
    }
  };
  add("model", ModuleState(model).state_dict());
  add("optimizer", optimizer_state->state_dict());
  add("scheduler", scheduler->state_dict());
  add("sampler", sampler->state_dict());
  return out;
}

at::Tensor set_rank_rng(uint64_t seed, int rank) {
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(seed * 1000 + static_cast<uint64_t>(rank));
  }
  at::randn({rank + 1});
  return current_rng_state();
}

at::Tensor current_rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state().clone();
}

bool bitwise_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  at::Tensor ca = a.detach().cpu().contiguous(), cb = b.detach().cpu().contiguous();
  const size_t n = static_cast<size_t>(ca.numel()) * ca.element_size();
  return n == 0 || std::memcmp(ca.data_ptr(), cb.data_ptr(), n) == 0;
}

namespace {

std::string describe_value(const StateValue& v) {
  if (auto t = std::get_if<at::Tensor>(&v)) {
    return fmt::format("tensor {} [{}]", c10::toString(t->scalar_type()),
                       fmt::join(t->sizes(), ","));
  }
  if (auto i = std::get_if<int64_t>(&v)) return fmt::format("int {}", *i);
  if (auto d = std::get_if<double>(&v)) return fmt::format("float {}", *d);
  return fmt::format("string '{}'", std::get<std::string>(v));
}

}  // namespace

std::vector<std::string> state_diff(const StateDict& expected, const StateDict& actual) {
  std::vector<std::string> out;
  for (const auto& [k, v] : expected) {
    auto it = actual.find(k);
    if (it == actual.end()) {
      out.push_back(fmt::format("'{}': missing (expected {})", k, describe_value(v)));
      continue;
    }
    const StateValue& w = it->second;
    if (v.index() != w.index()) {
      out.push_back(
          fmt::format("'{}': expected {}, got {}", k, describe_value(v), describe_value(w)));
    } else if (auto t = std::get_if<at::Tensor>(&v)) {
      if (!bitwise_equal(*t, std::get<at::Tensor>(w))) {
        out.push_back(fmt::format("'{}': tensors differ (expected {}, got {})", k,
                                  describe_value(v), describe_value(w)));
      }
    } else if (auto d = std::get_if<double>(&v)) {
      const double e = *d, g = std::get<double>(w);
      if (std::memcmp(&e, &g, sizeof e) != 0) {
        out.push_back(fmt::format("'{}': expected {}, got {}", k, e, g));
      }
    } else if ((std::holds_alternative<int64_t>(v) &&
                std::get<int64_t>(v) != std::get<int64_t>(w)) ||
               (std::holds_alternative<std::string>(v) &&
                std::get<std::string>(v) != std::get<std::string>(w))) {
      out.push_back(
          fmt::format("'{}': expected {}, got {}", k, describe_value(v), describe_value(w)));
    }
  }
  for (const auto& [k, w] : actual) {
    if (!expected.count(k))
      out.push_back(fmt::format("'{}': unexpected ({})", k, describe_value(w)));
  }
  return out;
}

uint64_t state_hash(const StateDict& state) {
  XXH64_state_t* h = XXH64_createState();
  XXH64_reset(h, 0);
  for (const auto& [k, v] : state) {
    XXH64_update(h, k.data(), k.size() + 1);
    const std::string d = describe_value(v);
    XXH64_update(h, d.data(), d.size());
    if (auto t = std::get_if<at::Tensor>(&v)) {
      at::Tensor c = t->detach().cpu().contiguous();
      XXH64_update(h, c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size());
    }
  }
  const uint64_t out = XXH64_digest(h);
  XXH64_freeState(h);
  return out;
}

std::string rank_errors(const std::vector<std::exception_ptr>& errors) {
  std::string out;
  for (size_t r = 0; r < errors.size(); ++r) {
    if (!errors[r]) continue;
    try {
      std::rethrow_exception(errors[r]);
    } catch (const std::exception& e) {
      out += fmt::format("rank {}: {}\n", r, e.what());
    } catch (...) {
      out += fmt::format("rank {}: an exception that is not a std::exception\n", r);
    }
  }
  return out;
}

std::string make_temp_dir(const std::string& tag) {
  return testutil::make_temp_dir("dtrain-ckpt-" + tag + "-");
}

std::string make_shared_temp_dir(dist::Communicator& comm, const std::string& tag) {
  std::string dir = comm.rank() == 0 ? make_temp_dir(tag) : std::string();
  comm.broadcast_bytes(dir, 0);
  return dir;
}

std::map<std::string, uint64_t> tree_checksums(const std::string& dir) {
  std::map<std::string, uint64_t> out;
  for (const auto& e : stdfs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string bytes = fs::read_file(e.path().string());
    out[stdfs::relative(e.path(), dir).string()] = XXH64(bytes.data(), bytes.size(), 0);
  }
  return out;
}

std::string verify_text(const std::string& dir) {
  std::string problems;
  try {
    for (const auto& p : verify_checkpoint(dir)) problems += p + "\n";
  } catch (const std::exception& e) {
    problems = e.what();
  }
  return problems;
}

std::vector<std::string> visible_dirs(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : stdfs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && !n.empty() && n[0] != '.') out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string last_checkpoint_name(const std::string& dir) {
  const std::string path = dir + "/last_checkpoint";
  if (!stdfs::exists(path)) return "";
  std::string s = fs::read_file(path);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

int64_t dataset_offset(const std::string& file, const std::string& dataset) {
  h5::File f = h5::File::open(file);
  h5::Dataset d = f.open_dataset(dataset);
  h5::ApiScope scope;
  const haddr_t off = H5Dget_offset(d.id());
  DTRAIN_CHECK(off != HADDR_UNDEF, "dataset '{}' in '{}' has no contiguous data", dataset, file);
  return static_cast<int64_t>(off);
}

void flip_byte(const std::string& path, int64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  DTRAIN_CHECK(f.good(), "cannot open '{}'", path);
  f.seekg(offset);
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0xff);
  f.seekp(offset);
  f.write(&c, 1);
  DTRAIN_CHECK(f.good(), "cannot flip byte {} of '{}'", offset, path);
}

void remove_dataset(const std::string& file, const std::string& dataset) {
  h5::File f = h5::File::open(file, h5::OpenMode::kReadWrite);
  f.remove(dataset);
  f.close();
}

namespace {
int g_armed_hits = 0;  // hits of armed fault points in this process (see ScopedFault)
}  // namespace

ScopedFault::ScopedFault(const std::string& point, int fault_rank, int my_rank) {
  if (fault_rank < 0 || fault_rank == my_rank) ++g_armed_hits;
  ::setenv("DTRAIN_FAULT", point.c_str(), 1);
  ::setenv("DTRAIN_FAULT_MODE", "throw", 1);
  ::setenv("DTRAIN_FAULT_AFTER", std::to_string(std::max(1, g_armed_hits)).c_str(), 1);
  if (fault_rank >= 0) {
    ::setenv("DTRAIN_FAULT_RANK", std::to_string(fault_rank).c_str(), 1);
  } else {
    ::unsetenv("DTRAIN_FAULT_RANK");
  }
}

ScopedFault::~ScopedFault() {
  for (const char* v :
       {"DTRAIN_FAULT", "DTRAIN_FAULT_MODE", "DTRAIN_FAULT_AFTER", "DTRAIN_FAULT_RANK"}) {
    ::unsetenv(v);
  }
}

struct LogCapture::Impl {
  std::ostringstream stream;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink;
};

LogCapture::LogCapture() : impl_(std::make_unique<Impl>()) {
  impl_->sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(impl_->stream);
  impl_->sink->set_pattern("%l: %v");
  spdlog::default_logger()->sinks().push_back(impl_->sink);
}

LogCapture::~LogCapture() {
  auto& sinks = spdlog::default_logger()->sinks();
  sinks.erase(std::remove(sinks.begin(), sinks.end(), impl_->sink), sinks.end());
}

std::string LogCapture::text() const {
  impl_->sink->flush();
  return impl_->stream.str();
}

int run_process(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
                const std::string& log_file) {
  // Everything the child needs is built before fork(): it only calls async-signal-safe
  // functions before execve.
  std::map<std::string, std::string> all;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    const size_t eq = kv.find('=');
    if (eq != std::string::npos) all[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& [k, v] : env) all[k] = v;
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : all) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp, args;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_copy = argv;
  for (auto& s : argv_copy) args.push_back(s.data());
  args.push_back(nullptr);
  const int fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  DTRAIN_CHECK(fd >= 0, "cannot create '{}'", log_file);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execve(args[0], args.data(), envp.data());
    ::_exit(127);
  }
  ::close(fd);
  DTRAIN_CHECK(pid > 0, "fork failed");
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

}  // namespace dtrain::checkpoint::testing
