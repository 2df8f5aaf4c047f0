// Tests of `dtrain ckpt inspect|verify|diff|export|import`, run in-process (run_ckpt) on
// checkpoints saved by a real Checkpointer over the local (world-of-one) communicator and
// on multi-shard checkpoints written with the format functions; PyTorch peers via python3.
#include <hdf5.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "checkpoint/checkpointer.h"
#include "checkpoint/inspect.h"
#include "checkpoint/module_state.h"
#include "checkpoint/torch_io.h"
#include "launcher/ckpt_command.h"
#include "runtime/base/config.h"
#include "runtime/dist/communicator.h"
#include "runtime/h5/h5.h"
#include "tests/test_util.h"

namespace dtrain::launcher {
namespace {

namespace stdfs = std::filesystem;
using checkpoint::load_index;
using checkpoint::read_all_tensors;
using testutil::TempDir;

// fc1 (8 -> 16), bn (16: float buffers and an int64 counter), fc2 (16 -> 4).
struct NetImpl : torch::nn::Module {
  NetImpl()
      : fc1(register_module("fc1", torch::nn::Linear(8, 16))),
        bn(register_module("bn", torch::nn::BatchNorm1d(16))),
        fc2(register_module("fc2", torch::nn::Linear(16, 4))) {
    torch::NoGradGuard no_grad;
    // Exact binary fractions so tests can predict differences exactly.
    fc1->weight.copy_(torch::arange(128, torch::kFloat).reshape({16, 8}) / 128.0);
    bn->num_batches_tracked.fill_(7);
  }
  torch::nn::Linear fc1;
  torch::nn::BatchNorm1d bn;
  torch::nn::Linear fc2;
};
TORCH_MODULE(Net);

// The config YAML a trainer would store (MODEL.NAME mlp, SOLVER.BASE_LR 0.05, ...).
inline std::string test_config_yaml() {
  Config cfg = Config::defaults();
  cfg.merge_overrides({"MODEL.NAME", "mlp", "SOLVER.BASE_LR", "0.05", "SOLVER.IMS_PER_BATCH",
                       "64", "SOLVER.MAX_ITER", "200", "SOLVER.OPTIMIZER", "SGD"});
  return cfg.to_yaml();
}

// Saves `model` (and an RNG per rank, extras) as `out_dir`/`name` with a Checkpointer
// over the local communicator; returns the checkpoint directory.
inline std::string save_checkpoint(const std::shared_ptr<torch::nn::Module>& model,
                                   const std::string& out_dir, const std::string& name,
                                   int64_t iteration = 9) {
  auto comm = dist::make_communicator("local", "cpu");
  checkpoint::RngState rng;
  checkpoint::CheckpointerOptions options;
  options.config_yaml = test_config_yaml();
  checkpoint::Checkpointer ckpt(model, out_dir, *comm,
                                {{"rng", {&rng, checkpoint::Scope::kPerRank}}}, options);
  ckpt.save(name, {{"iteration", iteration},
                   {"note", std::string("hello")},
                   {"lr", 0.125},
                   {"ema", torch::linspace(0, 1, 6).reshape({2, 3})}});
  return out_dir + "/" + name;
}

// Runs `dtrain ckpt ARGS...` in-process.
struct CkptRun {
  int rc = -1;
  std::string out, err;
};
inline CkptRun run(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  CkptRun r;
  r.rc = run_ckpt(args, out, err);
  r.out = out.str();
  r.err = err.str();
  return r;
}

// File offset of dataset `name` in the HDF5 file `path` (contiguous layout).
inline int64_t dataset_offset(const std::string& path, const std::string& name) {
  h5::File file = h5::File::open(path);
  h5::Dataset ds = file.open_dataset(name);
  h5::ApiScope scope;
  const haddr_t offset = H5Dget_offset(ds.id());
  return offset == HADDR_UNDEF ? -1 : static_cast<int64_t>(offset);
}

// XORs the byte at `offset` of `path` with 0x5a.
inline void flip_byte(const std::string& path, int64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.good()) << path;
  f.seekg(offset);
  char c = 0;
  f.read(&c, 1);
  c ^= 0x5a;
  f.seekp(offset);
  f.write(&c, 1);
}

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

inline bool bitwise_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  if (a.numel() == 0) return true;  // (memcmp must not get the null data pointer)
  at::Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.numel() * ca.element_size()) == 0;
}

// Whether /usr/bin/python3 can import torch and h5py.
inline bool python_has_torch() {
  static const bool ok =
      std::system("/usr/bin/python3 -c 'import torch, h5py, numpy' >/dev/null 2>&1") == 0;
  return ok;
}

// Runs a Python script with arguments; returns its exit status.
inline int run_python(const std::string& dir, const std::string& script,
                      const std::vector<std::string>& args) {
  const std::string path = dir + "/check.py";
  std::ofstream(path) << script;
  std::string cmd = "/usr/bin/python3 " + path;
  for (const auto& a : args) cmd += " '" + a + "'";
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}



// Fixture: one checkpoint saved by a Checkpointer in OUTPUT_DIR "out" (model_0000009, tagged
// in last_checkpoint), with the tensors read back for reference.
class CkptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(0);
    net_ = Net();
    out_dir_ = tmp_ / "out";
    dir_ = save_checkpoint(net_.ptr(), out_dir_, "model_0000009");
  }
  // A copy of the checkpoint directory at tmp_/name.
  std::string copy_of(const std::string& src, const std::string& name) {
    const std::string dst = tmp_ / name;
    stdfs::copy(src, dst, stdfs::copy_options::recursive);
    return dst;
  }
  std::string shard0() const { return dir_ + "/shard-00000-of-00001.h5"; }

  TempDir tmp_{"dtrain_ckpt_"};
  Net net_{nullptr};
  std::string out_dir_, dir_;
};

// Re-writes every tensor of `src` as a `world`-shard checkpoint at `dst` (same scalars).
std::string rewrite_with_world(const std::string& src, const std::string& dst, int world) {
  auto all = read_all_tensors(src);
  auto index = load_index(src);
  std::vector<std::pair<std::string, at::Tensor>> replicated;
  std::vector<std::vector<std::pair<std::string, at::Tensor>>> per_rank(world);
  for (const auto& [name, t] : all) {
    if (name.rfind("ranks/", 0) == 0) {
      for (int r = 0; r < world; ++r) per_rank[r].emplace_back(name.substr(12), t);
    } else {
      replicated.emplace_back(name, t);
    }
  }
  write_checkpoint_dir(dst, world, replicated, per_rank, index.scalars, index.iteration, "");
  return dst;
}

// ---------------------------------------------------------------- usage

TEST(CkptUsage, MalformedCommandLinesExit2) {
  EXPECT_EQ(run({}).rc, kCkptUsage);
  auto u = run({"frobnicate"});
  EXPECT_EQ(u.rc, kCkptUsage);
  EXPECT_TRUE(contains(u.err, "unknown subcommand 'frobnicate'")) << u.err;
  EXPECT_EQ(run({"inspect"}).rc, kCkptUsage);
  EXPECT_EQ(run({"diff", "only_one"}).rc, kCkptUsage);
  EXPECT_EQ(run({"export", "some_dir"}).rc, kCkptUsage);  // --to is required
  EXPECT_EQ(run({"import", "w.pt"}).rc, kCkptUsage);
  EXPECT_EQ(run({"diff", "a", "b", "--atol", "-1"}).rc, kCkptUsage);
  for (const char* bad : {"nan", "inf", "-inf", "1e999", "x"}) {
    auto t = run({"diff", "a", "b", "--atol", bad});
    EXPECT_EQ(t.rc, kCkptUsage) << bad;
    EXPECT_TRUE(contains(t.err, "--atol")) << bad << ": " << t.err;
  }
  EXPECT_TRUE(contains(run({"diff", "a", "b", "--atol", "nan"}).err, "not a finite number >= 0"));
  auto r = run({"verify", "a", "--bogus"});
  EXPECT_EQ(r.rc, kCkptUsage);
  EXPECT_TRUE(contains(r.err, "--bogus")) << r.err;
}

TEST(CkptUsage, HelpExits0AndListsSubcommands) {
  auto r = run({"--help"});
  EXPECT_EQ(r.rc, kCkptOk);
  for (const char* sub : {"inspect", "verify", "diff", "export", "import"}) {
    EXPECT_TRUE(contains(r.out, sub)) << r.out;
  }
  r = run({"export", "--help"});
  EXPECT_EQ(r.rc, kCkptOk);
  EXPECT_TRUE(contains(r.out, "--all")) << r.out;
}

TEST(CkptUsage, BadPathsAreClearErrors) {
  TempDir tmp("dtrain_ckpt_");
  auto r = run({"inspect", tmp / "nope"});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.err, "does not exist")) << r.err;

  r = run({"verify", tmp.path()});  // an empty directory
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.err, "is not a checkpoint")) << r.err;

  std::ofstream(tmp / "w.pt") << "x";
  r = run({"inspect", tmp / "w.pt"});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.err, "is a PyTorch/safetensors file, not a dtrain checkpoint")) << r.err;

  stdfs::create_directory(tmp / "o");
  std::ofstream(tmp / "o/last_checkpoint") << "model_gone\n";
  r = run({"inspect", tmp / "o"});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.err, "model_gone")) << r.err;
}

// ---------------------------------------------------------------- inspect

TEST_F(CkptTest, InspectShowsHeaderConfigTensorsTotalsAndScalars) {
  auto r = run({"inspect", dir_});
  ASSERT_EQ(r.rc, kCkptOk) << r.err;
  const std::string& o = r.out;
  EXPECT_TRUE(contains(o, "dtrain-checkpoint v1")) << o;
  EXPECT_TRUE(contains(o, "iteration    9")) << o;
  EXPECT_TRUE(contains(o, "world size   1")) << o;
  EXPECT_TRUE(contains(o, "torch ")) << o;
  EXPECT_TRUE(contains(o, "MODEL.NAME            mlp")) << o;
  EXPECT_TRUE(contains(o, "SOLVER.BASE_LR        0.05")) << o;
  EXPECT_TRUE(contains(o, "SOLVER.IMS_PER_BATCH  64")) << o;
  EXPECT_TRUE(contains(o, "SOLVER.MAX_ITER       200")) << o;
  EXPECT_TRUE(contains(o, "SOLVER.OPTIMIZER      SGD")) << o;
  // model: fc1.{weight,bias} bn.{weight,bias,running_mean,running_var,num_batches_tracked}
  // fc2.{weight,bias} = 9 tensors: 512+64+64+64+64+64+8+256+16 = 1112 bytes.
  EXPECT_TRUE(contains(o, "model (9 tensors, 1.1 KiB)")) << o;
  EXPECT_TRUE(contains(o, "model/fc1.weight")) << o;
  EXPECT_TRUE(contains(o, "[16, 8]")) << o;
  EXPECT_TRUE(contains(o, "512 B")) << o;
  EXPECT_TRUE(contains(o, "model/bn.num_batches_tracked")) << o;
  EXPECT_TRUE(contains(o, "int64")) << o;
  EXPECT_TRUE(contains(o, "extra (1 tensor, 24 B)")) << o;
  EXPECT_TRUE(contains(o, "rng (1 tensor, 4.9 KiB)")) << o;
  EXPECT_TRUE(contains(o, "4.9 KiB  per rank, 1 rank\n")) << o;
  // 1112 + 24 (extra/ema) + 5056 (rng/cpu) bytes.
  EXPECT_TRUE(contains(o, "total: 11 tensors, 6.0 KiB (6192 bytes) in 1 shard file")) << o;
  EXPECT_TRUE(contains(o, "extra/iteration = 9")) << o;
  EXPECT_TRUE(contains(o, "extra/note = \"hello\"")) << o;
  EXPECT_TRUE(contains(o, "extra/lr = 0.125")) << o;
}

TEST_F(CkptTest, InspectAcceptsIndexFileAndOutputDir) {
  auto r = run({"inspect", dir_ + "/checkpoint.h5"});
  ASSERT_EQ(r.rc, kCkptOk) << r.err;
  EXPECT_TRUE(contains(r.out, "Checkpoint " + dir_)) << r.out;

  r = run({"inspect", out_dir_});
  ASSERT_EQ(r.rc, kCkptOk) << r.err;
  EXPECT_TRUE(contains(r.out, "note: '" + out_dir_ + "' is an output directory: using '" + dir_ +
                                  "' (named by last_checkpoint)"))
      << r.out;
}

TEST_F(CkptTest, InspectJsonIsMachineReadable) {
  auto r = run({"inspect", "--json", dir_});
  ASSERT_EQ(r.rc, kCkptOk) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["iteration"], 9);
  EXPECT_EQ(j["world_size"], 1);
  EXPECT_EQ(j["format_version"], 1);
  EXPECT_EQ(j["config"]["MODEL.NAME"], "mlp");
  EXPECT_EQ(j["total"]["tensors"], 11);
  EXPECT_EQ(j["total"]["bytes"], 6192);
  EXPECT_EQ(j["scalars"]["extra/note"], "hello");
  EXPECT_EQ(j["scalars"]["extra/iteration"], 9);
  bool found = false;
  for (const auto& t : j["tensors"]) {
    if (t["name"] == "model/fc1.weight") {
      found = true;
      EXPECT_EQ(t["dtype"], "float32");
      EXPECT_EQ(t["shape"], nlohmann::json({16, 8}));
      EXPECT_EQ(t["bytes"], 512);
    }
  }
  EXPECT_TRUE(found);
}

// ---------------------------------------------------------------- verify

TEST_F(CkptTest, VerifyValidCheckpoint) {
  auto r = run({"verify", dir_});
  EXPECT_EQ(r.rc, kCkptOk) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "OK: " + dir_ + " is valid (iteration 9, 11 tensors, 11 pieces"))
      << r.out;
  EXPECT_TRUE(checkpoint::verify_checkpoint(dir_).empty());
  r = run({"verify", out_dir_});  // via last_checkpoint
  EXPECT_EQ(r.rc, kCkptOk) << r.out << r.err;
}

TEST_F(CkptTest, VerifyNamesTheTensorAndShardOfAFlippedByte) {
  const int64_t offset = dataset_offset(shard0(), "/model/fc2.weight");
  ASSERT_GT(offset, 0);
  flip_byte(shard0(), offset + 17);
  auto r = run({"verify", dir_});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.out, "checksum mismatch for tensor 'model/fc2.weight'")) << r.out;
  EXPECT_TRUE(contains(r.out, "shard-00000-of-00001.h5")) << r.out;
  EXPECT_TRUE(contains(r.out, "DAMAGED: " + dir_ + " has 1 problem\n")) << r.out;
  EXPECT_FALSE(contains(r.out, "fc1.weight")) << r.out;  // only the damaged tensor
}

TEST_F(CkptTest, VerifyReportsTruncatedShard) {
  stdfs::resize_file(shard0(), stdfs::file_size(shard0()) / 2);
  auto r = run({"verify", dir_});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.out, "shard file '" + shard0() + "' cannot be opened")) << r.out;
  EXPECT_TRUE(contains(r.out, "truncated")) << r.out;
  EXPECT_TRUE(contains(r.out, "it holds pieces of model/bn.bias, model/bn.num_batches_tracked, "
                              "model/bn.running_mean, model/bn.running_var and 7 more"))
      << r.out;
  EXPECT_TRUE(contains(r.out, "DAMAGED")) << r.out;
}

TEST_F(CkptTest, VerifyReportsMissingShardOfAMultiShardCheckpoint) {
  const std::string two = rewrite_with_world(dir_, tmp_ / "two", 2);
  ASSERT_EQ(run({"verify", two}).rc, kCkptOk);
  stdfs::remove(two + "/shard-00001-of-00002.h5");
  auto r = run({"verify", two});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.out, "shard file '" + two + "/shard-00001-of-00002.h5' is missing (it "
                                  "holds pieces of "))
      << r.out;
  EXPECT_TRUE(contains(r.out, "DAMAGED: " + two + " has 1 problem\n")) << r.out;
}

TEST_F(CkptTest, VerifyReportsMissingIndexAndWrongFormatVersion) {
  const std::string no_index = copy_of(dir_, "no_index");
  stdfs::remove(no_index + "/checkpoint.h5");
  auto r = run({"verify", no_index});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.out, "the index '" + no_index + "/checkpoint.h5' is missing")) << r.out;
  EXPECT_TRUE(contains(r.out, "shard-00000-of-00001.h5")) << r.out;

  const std::string garbage = copy_of(dir_, "garbage");
  std::ofstream(garbage + "/checkpoint.h5", std::ios::trunc) << "not HDF5";
  r = run({"verify", garbage});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.out, "problem: opening HDF5 file '" + garbage + "/checkpoint.h5'")) << r.out;
  r = run({"inspect", garbage});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.err, garbage + "/checkpoint.h5")) << r.err;

  const std::string v2 = copy_of(dir_, "v2");
  {
    auto f = h5::File::open(v2 + "/checkpoint.h5", h5::OpenMode::kReadWrite);
    f.set_int_attr("format_version", 2);
    f.close();
  }
  r = run({"verify", v2});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.out, "checkpoint format version 2 is not supported (this dtrain reads "
                              "version 1)"))
      << r.out;
}

// ---------------------------------------------------------------- diff

TEST_F(CkptTest, DiffWithItselfIsIdentical) {
  auto r = run({"diff", dir_, out_dir_});
  EXPECT_EQ(r.rc, kCkptOk) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "IDENTICAL: 11 tensors identical, 0 within atol, 0 differ")) << r.out;
}

TEST_F(CkptTest, DiffAcrossWorldSizesComparesAssembledTensors) {
  const std::string three = rewrite_with_world(dir_, tmp_ / "three", 3);
  auto index = load_index(three);
  int shards_used = 0;
  for (int s = 0; s < 3; ++s) {
    for (const auto& t : index.tensors) {
      if (!t.per_rank && std::any_of(t.pieces.begin(), t.pieces.end(),
                                     [s](const auto& p) { return p.shard == s && p.bytes > 0; })) {
        ++shards_used;
        break;
      }
    }
  }
  EXPECT_EQ(shards_used, 3);  // the model really is split over the three files
  auto r = run({"diff", dir_, three});
  EXPECT_EQ(r.rc, kCkptOk) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "world size 3")) << r.out;
  EXPECT_TRUE(contains(r.out, "note: 2 per-rank tensors of ranks that only one checkpoint has"))
      << r.out;
}

TEST_F(CkptTest, DiffReportsValueShapeDtypeOnlyAndScalarDifferences) {
  auto all = read_all_tensors(dir_);
  auto index = load_index(dir_);
  std::vector<std::pair<std::string, at::Tensor>> replicated;
  for (auto& [name, t] : all) {
    if (name.rfind("ranks/", 0) == 0) continue;
    at::Tensor v = t.clone();
    if (name == "model/fc1.weight") v[3][2] += 0.25;                // values
    if (name == "model/fc2.bias") v = torch::zeros({5});            // shape
    if (name == "model/bn.running_var") v = v.to(torch::kDouble);   // dtype
    if (name == "model/bn.num_batches_tracked") v.fill_(11);        // int, exact: 4
    if (name == "extra/ema") continue;                               // only in A
    replicated.emplace_back(name, v);
  }
  replicated.emplace_back("extra/new", torch::ones({2}));            // only in B
  StateDict scalars = index.scalars;
  scalars["extra/lr"] = 0.25;
  const std::string b = tmp_ / "b";
  write_checkpoint_dir(b, 1, replicated, {{{"rng/cpu", all.at("ranks/00000/rng/cpu")}}}, scalars,
                       9, "");
  auto r = run({"diff", dir_, b});
  EXPECT_EQ(r.rc, kCkptFailed) << r.err;
  const std::string& o = r.out;
  EXPECT_TRUE(contains(o, "differs    model/fc1.weight  float32 [16, 8]: max |a-b| = 0.25 "
                          "(1 of 128 elements differ)"))
      << o;
  EXPECT_TRUE(contains(o, "shape      model/fc2.bias: float32 [4] in A, float32 [5] in B")) << o;
  EXPECT_TRUE(contains(o, "dtype      model/bn.running_var: float32 in A, float64 in B; max "
                          "|a-b| = 0 (0 of 16"))
      << o;
  EXPECT_TRUE(contains(o, "differs    model/bn.num_batches_tracked  int64 []: max |a-b| = 4 "
                          "(1 of 1 elements differ)"))
      << o;
  EXPECT_TRUE(contains(o, "only in A  extra/ema  float32 [2, 3]")) << o;
  EXPECT_TRUE(contains(o, "only in B  extra/new  float32 [2]")) << o;
  EXPECT_TRUE(contains(o, "scalar     extra/lr: 0.125 in A, 0.25 in B")) << o;
  EXPECT_TRUE(contains(o, "DIFFERENT: 6 tensors identical, 0 within atol, 4 differ, 1 only in A, "
                          "1 only in B; 2 scalars identical, 1 differ"))
      << o;

  // A tolerance covers value differences but never shape/dtype/presence differences.
  r = run({"diff", dir_, b, "--atol", "5"});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.out, "close      model/fc1.weight: max |a-b| = 0.25 <= atol")) << r.out;
  // Only within-tolerance differences: exit 0, and the verdict says so.
  const std::string c = tmp_ / "c";
  {
    auto all_c = read_all_tensors(dir_);
    std::vector<std::pair<std::string, at::Tensor>> rep;
    for (auto& [name, t] : all_c) {
      if (name.rfind("ranks/", 0) == 0) continue;
      rep.emplace_back(name, name == "model/fc1.weight" ? t + 0.125 : t);
    }
    write_checkpoint_dir(c, 1, rep, {{{"rng/cpu", all_c.at("ranks/00000/rng/cpu")}}},
                         index.scalars, 9, "");
  }
  r = run({"diff", dir_, c, "--atol", "0.125"});
  EXPECT_EQ(r.rc, kCkptOk) << r.out;
  EXPECT_TRUE(contains(r.out, "EQUAL WITHIN ATOL: 10 tensors identical, 1 within atol, 0 differ"))
      << r.out;
}

TEST_F(CkptTest, DiffTreatsNaNAtTheSamePlaceAsEqual) {
  auto write = [&](const std::string& dir, float second) {
    std::vector<std::pair<std::string, at::Tensor>> rep{
        {"model/w", torch::tensor({NAN, second, 1.0f})}};
    write_checkpoint_dir(dir, 1, rep, {}, {}, 1, "");
  };
  write(tmp_ / "n1", 2.0f);
  write(tmp_ / "n2", 2.0f);
  write(tmp_ / "n3", NAN);
  EXPECT_EQ(run({"diff", tmp_ / "n1", tmp_ / "n2"}).rc, kCkptOk);
  auto r = run({"diff", tmp_ / "n1", tmp_ / "n3", "--atol", "1e9"});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.out, "max |a-b| = inf (1 of 3 elements differ)")) << r.out;
}

// ---------------------------------------------------------------- export / import

TEST_F(CkptTest, ExportWritesTheModelStateDict) {
  const std::string pt = tmp_ / "w.pt";
  auto r = run({"export", out_dir_, "--to", pt});
  ASSERT_EQ(r.rc, kCkptOk) << r.err;
  EXPECT_TRUE(contains(r.out, "Exported 9 tensors (1.1 KiB) from " + dir_ + " to " + pt)) << r.out;
  // detectron2's layout: {"model": OrderedDict, "iteration": 9}.
  StateDict back = checkpoint::read_torch_state_dict(pt);
  StateDict model = checkpoint::ModuleState(net_.ptr()).state_dict();
  ASSERT_EQ(back.size(), model.size() + 1);
  EXPECT_EQ(std::get<int64_t>(back.at("iteration")), 9);
  for (const auto& [k, v] : model) {
    ASSERT_TRUE(back.count(k)) << k;
    EXPECT_TRUE(bitwise_equal(std::get<at::Tensor>(back.at(k)), std::get<at::Tensor>(v))) << k;
  }
  // Never overwrites without --force.
  r = run({"export", dir_, "--to", pt});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.err, "'" + pt + "' exists; pass --force to replace it")) << r.err;
  EXPECT_EQ(run({"export", dir_, "--to", pt, "--force"}).rc, kCkptOk);
  // --bare: the state dict alone.
  const std::string bare = tmp_ / "bare.pt";
  ASSERT_EQ(run({"export", dir_, "--to", bare, "--bare"}).rc, kCkptOk);
  EXPECT_EQ(checkpoint::read_torch_state_dict(bare).size(), model.size());
}

TEST_F(CkptTest, ExportIsReadByPythonTorchLoad) {
  if (!python_has_torch()) GTEST_SKIP() << "/usr/bin/python3 cannot import torch and h5py";
  const std::string pt = tmp_ / "w.pt", all = tmp_ / "all.pt", bare = tmp_ / "bare.pt";
  ASSERT_EQ(run({"export", dir_, "--to", pt}).rc, kCkptOk);
  ASSERT_EQ(run({"export", dir_, "--to", all, "--all"}).rc, kCkptOk);
  ASSERT_EQ(run({"export", dir_, "--to", bare, "--bare"}).rc, kCkptOk);
  // Compares with what h5py reads through checkpoint.h5's virtual datasets.
  const char* script = R"PY(
import collections, sys, h5py, numpy as np, torch
pt, allpt, ckpt, barept = sys.argv[1:5]
top = torch.load(pt)
# detectron2's Checkpointer.load: checkpoint["model"] is the state dict, "iteration" kept.
assert sorted(top.keys()) == ["iteration", "model"], top.keys()
assert top["iteration"] == 9, top["iteration"]
d = top["model"]
assert isinstance(d, collections.OrderedDict), type(d)
assert list(d.keys()) == sorted(d.keys())
bare = torch.load(barept)
assert isinstance(bare, collections.OrderedDict) and list(bare.keys()) == list(d.keys())
assert all(torch.equal(bare[k], d[k]) for k in d)
f = h5py.File(ckpt + "/checkpoint.h5", "r")
names = []
f["model"].visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
assert sorted(d.keys()) == sorted(names), (sorted(d.keys()), sorted(names))
for k, v in d.items():
    ref = np.asarray(f["model/" + k][()])
    assert v.numpy().shape == ref.shape, k
    assert np.array_equal(v.numpy(), ref), k
assert d["bn.num_batches_tracked"].dtype == torch.int64 and int(d["bn.num_batches_tracked"]) == 7
a = torch.load(allpt)
assert a["extra/iteration"] == 9 and a["extra/note"] == "hello" and a["extra/lr"] == 0.125, a
assert torch.equal(a["model/fc1.weight"], d["fc1.weight"])
assert a["ranks/00000/rng/cpu"].dtype == torch.uint8
print("python ok")
)PY";
  EXPECT_EQ(run_python(tmp_.path(), script, {pt, all, dir_, bare}), 0);
}

TEST_F(CkptTest, ImportRoundTripIsBitwiseAndLoadable) {
  // A .pt state dict with the dtypes PyTorch users have.
  StateDict sd = checkpoint::ModuleState(net_.ptr()).state_dict();
  sd["extra_half"] = torch::randn({3, 2}).to(torch::kHalf);
  sd["extra_f64"] = torch::randn({5}, torch::kDouble);
  sd["extra_bool"] = torch::tensor({true, false, true});
  sd["extra_i8"] = torch::tensor({-3, 4}, torch::kChar);
  sd["extra_empty"] = torch::zeros({0, 4});
  const std::string pt = tmp_ / "in.pt";
  checkpoint::write_torch_state_dict(pt, sd);

  const std::string dir = tmp_ / "imported";
  auto r = run({"import", pt, "--to", dir});
  ASSERT_EQ(r.rc, kCkptOk) << r.err;
  EXPECT_TRUE(contains(r.out, "Imported 14 tensors")) << r.out;
  EXPECT_TRUE(contains(r.out, "14 under model/")) << r.out;
  EXPECT_TRUE(contains(r.out, "load it with MODEL.WEIGHTS " + dir)) << r.out;
  EXPECT_EQ(run({"verify", dir}).rc, kCkptOk);
  EXPECT_TRUE(stdfs::exists(dir + "/shard-00000-of-00001.h5"));
  r = run({"inspect", dir});
  EXPECT_TRUE(contains(r.out, "world size   1")) << r.out;
  EXPECT_TRUE(contains(r.out, "model/extra_f64")) << r.out;

  // .pt -> checkpoint -> .pt is bitwise.
  const std::string pt2 = tmp_ / "out.pt";
  ASSERT_EQ(run({"export", dir, "--to", pt2}).rc, kCkptOk);
  StateDict back = checkpoint::read_torch_state_dict(pt2);
  ASSERT_EQ(back.size(), sd.size());
  for (const auto& [k, v] : sd) {
    ASSERT_TRUE(back.count(k)) << k;
    EXPECT_TRUE(bitwise_equal(std::get<at::Tensor>(back.at(k)), std::get<at::Tensor>(v))) << k;
  }
  // ... and so is checkpoint -> .safetensors -> checkpoint (its metadata adds scalars).
  const std::string st = tmp_ / "out.safetensors";
  ASSERT_EQ(run({"export", dir, "--to", st}).rc, kCkptOk);
  ASSERT_EQ(run({"import", st, "--to", tmp_ / "from_st"}).rc, kCkptOk);
  r = run({"diff", dir, tmp_ / "from_st"});
  EXPECT_TRUE(contains(r.out, "14 tensors identical, 0 within atol, 0 differ, 0 only in A, 0 only "
                              "in B")) << r.out;
  r = run({"export", dir, "--to", tmp_ / "all.safetensors", "--all"});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.err, "--all and --bare write torch.save files")) << r.err;

  // A Checkpointer loads it into a fresh model (strict: every key matches).
  const std::string pt_model = tmp_ / "model.pt";
  checkpoint::write_torch_state_dict(pt_model, checkpoint::ModuleState(net_.ptr()).state_dict());
  const std::string model_dir = tmp_ / "model_ckpt";
  ASSERT_EQ(run({"import", pt_model, "--to", model_dir}).rc, kCkptOk);
  torch::manual_seed(123);
  Net fresh;
  {
    torch::NoGradGuard g;
    for (auto& p : fresh->parameters()) p.uniform_(-5, 5);
  }
  auto comm = dist::make_communicator("local", "cpu");
  checkpoint::CheckpointerOptions strict;
  strict.strict = true;
  checkpoint::Checkpointer loader(fresh.ptr(), tmp_ / "unused", *comm, {}, strict);
  loader.load(model_dir);
  StateDict want = checkpoint::ModuleState(net_.ptr()).state_dict();
  StateDict got = checkpoint::ModuleState(fresh.ptr()).state_dict();
  for (const auto& [k, v] : want) {
    EXPECT_TRUE(bitwise_equal(std::get<at::Tensor>(got.at(k)), std::get<at::Tensor>(v))) << k;
  }
}

TEST_F(CkptTest, ExportAllThenImportGivesAnIdenticalCheckpoint) {
  const std::string pt = tmp_ / "all.pt";
  ASSERT_EQ(run({"export", dir_, "--to", pt, "--all"}).rc, kCkptOk);
  const std::string dir = tmp_ / "again";
  auto r = run({"import", pt, "--to", dir});
  ASSERT_EQ(r.rc, kCkptOk) << r.err;
  r = run({"diff", dir_, dir});
  EXPECT_EQ(r.rc, kCkptOk) << r.out;
  EXPECT_TRUE(contains(r.out, "IDENTICAL: 11 tensors identical")) << r.out;
  EXPECT_TRUE(contains(r.out, "3 scalars identical, 0 differ")) << r.out;
  EXPECT_EQ(load_index(dir).iteration, 9);
}

TEST_F(CkptTest, ImportRefusesToOverwriteUnlessForced) {
  const std::string pt = tmp_ / "m.pt";
  ASSERT_EQ(run({"export", dir_, "--to", pt}).rc, kCkptOk);
  const std::string dir = tmp_ / "imp";
  ASSERT_EQ(run({"import", pt, "--to", dir}).rc, kCkptOk);
  auto r = run({"import", pt, "--to", dir});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.err, "'" + dir + "' exists; pass --force to replace it")) << r.err;
  r = run({"import", pt, "--to", dir, "--force"});
  EXPECT_EQ(r.rc, kCkptOk) << r.err;
  EXPECT_EQ(run({"verify", dir}).rc, kCkptOk);
  // --force never deletes a directory that is not a checkpoint.
  const std::string other = tmp_ / "precious";
  stdfs::create_directory(other);
  std::ofstream(other + "/notes.txt") << "keep me";
  r = run({"import", pt, "--to", other, "--force"});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.err, "refusing to replace '" + other + "'")) << r.err;
  EXPECT_TRUE(stdfs::exists(other + "/notes.txt"));
  // Nothing half-written is left beside the targets.
  for (const auto& e : stdfs::directory_iterator(tmp_.path())) {
    EXPECT_NE(e.path().filename().string()[0], '.') << e.path();
  }
}

TEST_F(CkptTest, ImportRejectsFilesThatAreNotStateDicts) {
  auto r = run({"import", tmp_ / "missing.pt", "--to", tmp_ / "x"});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.err, "does not exist")) << r.err;

  std::ofstream(tmp_ / "garbage.pt") << "not a zip archive";
  r = run({"import", tmp_ / "garbage.pt", "--to", tmp_ / "x"});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.err, "'" + (tmp_ / "garbage.pt") + "': not a PyTorch file")) << r.err;

  std::ofstream(tmp_ / "list.pt", std::ios::binary) << "\x80\x02](K\x01K\x02" "e.";  // [1, 2]
  r = run({"import", tmp_ / "list.pt", "--to", tmp_ / "x"});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.err, "holds a list, not a dict of weights")) << r.err;

  // A dtype format v1 cannot store (complex).
  checkpoint::write_torch_state_dict(tmp_ / "complex.pt",
                                     {{"w", torch::zeros({2}, torch::kComplexFloat)}});
  r = run({"import", tmp_ / "complex.pt", "--to", tmp_ / "x"});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.err, "tensor 'w' has dtype ComplexFloat, which checkpoint format v1 "
                              "cannot store"))
      << r.err;

  checkpoint::write_torch_state_dict(tmp_ / "empty.pt", {});
  r = run({"import", tmp_ / "empty.pt", "--to", tmp_ / "x"});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.err, "holds no tensors")) << r.err;
  EXPECT_FALSE(stdfs::exists(tmp_ / "x"));
}

TEST_F(CkptTest, ImportWorldSizeComesFromTheOptionNotTheFile) {
  // A 1 KB file naming rank 5000 must not make 5001 shards.
  const std::string far = tmp_ / "far.pt";
  checkpoint::write_torch_state_dict(far, {{"w", torch::ones({2})},
                                           {"ranks/05000/x", torch::zeros({1})}});
  auto r = run({"import", far, "--to", tmp_ / "x"});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.err, "'" + far + "': key 'ranks/05000/x' is state of rank 5000, but "
                              "the checkpoint has --world-size 1 (ranks 0..0); pass "
                              "--world-size 5001 or more to import it"))
      << r.err;
  EXPECT_FALSE(stdfs::exists(tmp_ / "x"));
  for (const auto& e : stdfs::directory_iterator(tmp_.path())) {
    EXPECT_NE(e.path().filename().string()[0], '.') << e.path();  // no temporary left
  }
  // Out of range: a malformed command line.
  for (const char* n : {"0", "4097", "-1", "two"}) {
    r = run({"import", far, "--to", tmp_ / "x", "--world-size", n});
    EXPECT_EQ(r.rc, kCkptUsage) << n << ": " << r.err;
    EXPECT_TRUE(contains(r.err, "--world-size")) << r.err;
  }

  // Ranks 0 and 1 with --world-size 2: two shards, each rank's state in its own.
  const std::string two = tmp_ / "two.pt";
  checkpoint::write_torch_state_dict(two, {{"w", torch::arange(6, torch::kFloat)},
                                           {"ranks/00000/rng/cpu", torch::full({3}, 7)},
                                           {"ranks/00001/rng/cpu", torch::full({3}, 9)}});
  r = run({"import", two, "--to", tmp_ / "y"});
  EXPECT_EQ(r.rc, kCkptFailed);
  EXPECT_TRUE(contains(r.err, "pass --world-size 2 or more")) << r.err;
  r = run({"import", two, "--to", tmp_ / "y", "--world-size", "2"});
  ASSERT_EQ(r.rc, kCkptOk) << r.err;
  EXPECT_TRUE(contains(r.out, "(world size 2)")) << r.out;
  EXPECT_TRUE(stdfs::exists(tmp_ / "y/shard-00001-of-00002.h5"));
  EXPECT_EQ(run({"verify", tmp_ / "y"}).rc, kCkptOk);
  const auto index = checkpoint::load_index(tmp_ / "y");
  EXPECT_EQ(index.world_size, 2);
  checkpoint::ShardReader reader(tmp_ / "y", index.world_size);
  const auto* w = index.find_tensor("model/w");
  ASSERT_NE(w, nullptr);
  EXPECT_TRUE(bitwise_equal(checkpoint::read_full_tensor(reader, *w, tmp_ / "y"),
                            torch::arange(6, torch::kFloat)));
  // --world-size above the ranks named: the extra ranks simply hold no per-rank state.
  r = run({"import", two, "--to", tmp_ / "z", "--world-size", "3"});
  ASSERT_EQ(r.rc, kCkptOk) << r.err;
  EXPECT_EQ(run({"verify", tmp_ / "z"}).rc, kCkptOk);
}

TEST_F(CkptTest, ImportReadsWhatModelStateDictReturns) {
  // torch.save(model.state_dict()): an OrderedDict, which LibTorch's unpickler refuses.
  if (!python_has_torch()) GTEST_SKIP() << "/usr/bin/python3 cannot import torch";
  const std::string pt = tmp_ / "od.pt";
  const char* script = R"PY(
import sys, torch
torch.manual_seed(0)
m = torch.nn.Linear(2, 3)
torch.save(m.state_dict(), sys.argv[1])
open(sys.argv[1] + ".weight", "wb").write(m.weight.detach().numpy().tobytes())
)PY";
  ASSERT_EQ(run_python(tmp_.path(), script, {pt}), 0);
  auto r = run({"import", pt, "--to", tmp_ / "x"});
  ASSERT_EQ(r.rc, kCkptOk) << r.err;
  const auto index = checkpoint::load_index(tmp_ / "x");
  checkpoint::ShardReader reader(tmp_ / "x", index.world_size);
  const auto* w = index.find_tensor("model/weight");
  ASSERT_NE(w, nullptr);
  at::Tensor weight = checkpoint::read_full_tensor(reader, *w, tmp_ / "x");
  EXPECT_EQ(weight.sizes(), (at::IntArrayRef{3, 2}));
  EXPECT_EQ(std::string(static_cast<const char*>(weight.data_ptr()), 24),
            testutil::read_file(pt + ".weight"));
}

}  // namespace
}  // namespace dtrain::launcher
