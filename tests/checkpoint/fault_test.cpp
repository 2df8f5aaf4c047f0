// Faults and bad input, single process: a fault (thrown, and a real SIGKILL of a
// checkpoint_tool child) at every point of the commit protocol; damaged checkpoints
// (flipped byte, truncated/missing/foreign shard, missing or foreign checkpoint.h5,
// wrong format version); a checkpoint of another model with CHECKPOINT.STRICT on and
// off. Each must give a clear error naming the file and tensor, leave every saved file
// unchanged, and let resume_or_load fall back to the newest valid checkpoint.
#include <sys/stat.h>

#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "checkpoint/checkpointer.h"
#include "checkpoint/format.h"
#include "checkpoint/inspect.h"
#include "runtime/base/error.h"
#include "runtime/base/env.h"
#include "runtime/base/fs.h"
#include "runtime/dist/local_communicator.h"
#include "runtime/h5/h5.h"
#include "tests/checkpoint/expect.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint {
namespace {

using namespace testing;  // NOLINT: test helpers
namespace stdfs = std::filesystem;

const std::vector<std::string> kPoints = {"ckpt.before_shard", "ckpt.during_shard",
                                          "ckpt.after_shards", "ckpt.before_rename",
                                          "ckpt.before_last_checkpoint"};

OptKind KindOf(uint64_t seed) { return seed % 2 ? OptKind::kAdamW : OptKind::kSGD; }

std::vector<std::string> HiddenEntries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : stdfs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n[0] == '.') out.push_back(n);
  }
  return out;
}

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = make_temp_dir("fault");
    out_ = root_ + "/out";
  }
  void TearDown() override {
    if (!HasFailure()) stdfs::remove_all(root_);
  }

  // Saves the state of `seed` (3 steps, per-rank RNG, extras) as out_/name.
  void Save(const std::string& name, uint64_t seed, int64_t hidden = 8) {
    TrainingState s(KindOf(seed), seed, 0, 1, hidden);
    s.train(3);
    Checkpointer c(s.model, out_, comm_, s.checkpointables());
    set_rank_rng(seed, 0);
    c.save(name, sample_extras(seed, 2));
  }

  // Loads with `load` into a fresh state and expects exactly `seed`'s state and extras.
  void ExpectLoads(uint64_t seed, const std::function<StateDict(Checkpointer&)>& load) {
    const at::Tensor rng = set_rank_rng(seed, 0);
    TrainingState expected(KindOf(seed), seed, 0, 1);
    expected.train(3);
    TrainingState fresh(KindOf(seed), seed + 1000, 0, 1);
    set_rank_rng(seed + 555, 0);
    Checkpointer c(fresh.model, out_, comm_, fresh.checkpointables());
    const StateDict extra = load(c);
    auto diff = state_diff(expected.snapshot(), fresh.snapshot());
    EXPECT_TRUE(diff.empty()) << ::testing::PrintToString(diff);
    diff = state_diff(sample_extras(seed, 2), extra);
    EXPECT_TRUE(diff.empty()) << ::testing::PrintToString(diff);
    EXPECT_TRUE(bitwise_equal(current_rng_state(), rng)) << "rng not restored";
  }

  // resume_or_load(resume) must load out_/name holding `seed`'s state.
  void ExpectResumesTo(const std::string& name, uint64_t seed) {
    ExpectLoads(seed, [&](Checkpointer& c) {
      StateDict extra = c.resume_or_load("", /*resume=*/true);
      EXPECT_EQ(c.loaded_from(), out_ + "/" + name);
      return extra;
    });
  }

  // Runs checkpoint_tool (a world of one) with `args` and `env`; returns the wait status
  // and its output in *log.
  int Tool(const std::vector<std::string>& args, const std::map<std::string, std::string>& env,
           std::string* log) {
    std::vector<std::string> argv = {DTRAIN_CHECKPOINT_TOOL};
    argv.insert(argv.end(), args.begin(), args.end());
    const std::string log_file = root_ + "/tool.log";
    const int status = run_process(argv, env, log_file);
    *log = fs::read_file(log_file);
    return status;
  }

  std::string root_, out_;
  dist::LocalCommunicator comm_;
};

// Expects that after a failed save of model_b (at `point`) everything saved before is
// unchanged and nothing half-written is visible.
void ExpectPreviousIntact(const std::string& out, const std::string& point,
                          const std::map<std::string, uint64_t>& before) {
  EXPECT_EQ(last_checkpoint_name(out), "model_a");
  const auto after = tree_checksums(out);
  for (const auto& [file, sum] : before) {
    auto it = after.find(file);
    EXPECT_TRUE(it != after.end() && it->second == sum) << file << " changed or vanished";
  }
  const auto visible = visible_dirs(out);
  if (point == "ckpt.before_last_checkpoint") {
    // Committed (renamed) but not tagged: complete, and last_checkpoint still model_a.
    EXPECT_EQ(visible, (std::vector<std::string>{"model_a", "model_b"}));
    const auto problems = verify_checkpoint(out + "/model_b");
    EXPECT_TRUE(problems.empty()) << fmt::format("{}", fmt::join(problems, "\n"));
  } else {
    EXPECT_EQ(visible, std::vector<std::string>{"model_a"});
  }
  for (const auto& d : visible) {
    EXPECT_TRUE(stdfs::exists(out + "/" + d + "/" + kIndexFile)) << d << " looks committed";
  }
}

TEST_F(FaultTest, ThrownFaultAtEveryProtocolPoint) {
  for (const std::string& point : kPoints) {
    SCOPED_TRACE(point);
    out_ = root_ + "/" + point;
    Save("model_a", 1);
    const auto before = tree_checksums(out_);
    std::string msg;
    {
      ScopedFault fault(point, /*fault_rank=*/-1, /*my_rank=*/0);
      msg = ThrownMessage([&] { Save("model_b", 2); });
    }
    EXPECT_CONTAINS(msg, "injected fault at " + point);
    EXPECT_CONTAINS(msg, "saving checkpoint '" + out_ + "/model_b'");
    ExpectPreviousIntact(out_, point, before);
    EXPECT_TRUE(HiddenEntries(out_).empty())
        << "a thrown fault cleans up: " << ::testing::PrintToString(HiddenEntries(out_));
    ExpectResumesTo("model_a", 1);
    // The protocol is not wedged: the next save commits (replacing model_b if there).
    Save("model_b", 2);
    ExpectResumesTo("model_b", 2);
    EXPECT_TRUE(HiddenEntries(out_).empty());
  }
}

TEST_F(FaultTest, SigkillAtEveryProtocolPoint) {
  for (const std::string& point : kPoints) {
    SCOPED_TRACE(point);
    out_ = root_ + "/" + point;
    Save("model_a", 21);
    const auto before = tree_checksums(out_);
    // checkpoint_tool saves the same kind of state in a child process, which the fault
    // kills with SIGKILL.
    std::string log;
    const int st = Tool({"save", out_, "model_b", "22"}, {{"DTRAIN_FAULT", point}}, &log);
    EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << "status " << st << "\n" << log;
    EXPECT_CONTAINS(log, "injected crash at " + point);
    ExpectPreviousIntact(out_, point, before);
    ExpectResumesTo("model_a", 21);
    // The next save removes the crashed save's hidden leftovers.
    Save("model_c", 23);
    EXPECT_TRUE(HiddenEntries(out_).empty()) << ::testing::PrintToString(HiddenEntries(out_));
    ExpectResumesTo("model_c", 23);
  }
}

TEST_F(FaultTest, FailedResaveOfTheSameNameKeepsTheOldOne) {
  Save("model_final", 1);
  const auto before = tree_checksums(out_);
  for (const std::string& point :
       {std::string("ckpt.during_shard"), std::string("ckpt.before_rename")}) {
    ScopedFault fault(point, -1, 0);
    EXPECT_CONTAINS(ThrownMessage([&] { Save("model_final", 2); }), "injected fault at " + point);
  }
  EXPECT_EQ(tree_checksums(out_), before);
  ExpectResumesTo("model_final", 1);
  // A successful re-save replaces it atomically and leaves nothing behind.
  Save("model_final", 2);
  ExpectResumesTo("model_final", 2);
  EXPECT_TRUE(HiddenEntries(out_).empty());
  EXPECT_EQ(visible_dirs(out_), std::vector<std::string>{"model_final"});
}

TEST_F(FaultTest, InvalidNamesAreRejectedBeforeWriting) {
  for (const std::string name : {"", ".hidden", "a/b", "last_checkpoint"}) {
    const std::string msg = ThrownMessage([&] { Save(name, 1); });
    EXPECT_CONTAINS(msg, "invalid checkpoint name '" + name + "'");
  }
  EXPECT_TRUE(!stdfs::exists(out_) || stdfs::is_empty(out_));
}

// ---- damaged checkpoints ------------------------------------------------------------

struct Damage {
  std::string what;
  std::function<void(const std::string& ckpt)> apply;
  // Substrings the load error must contain ("{ckpt}" and "{shard}" are replaced).
  std::vector<std::string> expected;
  std::string why;  // what the fallback warning must say about the damaged checkpoint
};

std::string Expand(std::string s, const std::string& ckpt) {
  auto replace = [&s](const std::string& from, const std::string& to) {
    for (size_t i = s.find(from); i != std::string::npos; i = s.find(from, i + to.size())) {
      s.replace(i, from.size(), to);
    }
  };
  replace("{shard}", ckpt + "/" + shard_file_name(0, 1));
  replace("{ckpt}", ckpt);
  return s;
}

std::vector<Damage> AllDamages() {
  const std::string shard = shard_file_name(0, 1);
  return {
      {"flipped byte in a weight",
       [shard](const std::string& c) {
         flip_byte(c + "/" + shard, dataset_offset(c + "/" + shard, "/model/fc1.weight") + 5);
       },
       {"'{shard}'", "tensor 'model/fc1.weight'", "checksum mismatch"},
       "checksum mismatch"},
      {"flipped byte in optimizer state",
       [shard](const std::string& c) {
         const std::string ds = "/optimizer/state/fc2.weight/momentum_buffer";
         flip_byte(c + "/" + shard, dataset_offset(c + "/" + shard, ds) + 2);
       },
       {"'{shard}'", "tensor 'optimizer/state/fc2.weight/momentum_buffer'", "checksum mismatch"},
       "checksum mismatch"},
      {"truncated shard",
       [shard](const std::string& c) {
         const std::string p = c + "/" + shard;
         stdfs::resize_file(p, stdfs::file_size(p) / 2);
       },
       {"'{shard}'", "tensor 'model/"},
       "{shard}"},
      {"dataset placed past the end of the shard",
       [shard](const std::string& c) {
         // The layout message's 8-byte address of the data, rewritten to point 1 GiB out.
         const std::string p = c + "/" + shard;
         const int64_t offset = dataset_offset(p, "/model/fc1.weight");
         std::string bytes = fs::read_file(p);
         const std::string from(reinterpret_cast<const char*>(&offset), 8);
         const int64_t far = offset + (int64_t{1} << 30);
         const size_t at = bytes.find(from);
         ASSERT_NE(at, std::string::npos);
         bytes.replace(at, 8, std::string(reinterpret_cast<const char*>(&far), 8));
         std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
       },
       {"'{shard}'", "tensor 'model/fc1.weight'", "past the end of the file"},
       "past the end of the file"},
      {"index splitting one dataset into two pieces of the same shard",
       [](const std::string& c) {
         // Rows [0, 1) and [1, n) of model/fc1.weight, both claimed by shard 0, whose
         // dataset holds all n rows: the second piece must not be read from the first's
         // offset with its own length.
         h5::File f = h5::File::open(c + "/checkpoint.h5", h5::OpenMode::kReadWrite);
         nlohmann::json j = nlohmann::json::parse(f.read_string(kIndexDataset));
         for (auto& t : j["tensors"]) {
           if (t["name"] != "model/fc1.weight") continue;
           nlohmann::json first = t["pieces"][0], second = first;
           const int64_t rows = first["row_count"].get<int64_t>();
           const int64_t row_bytes = first["bytes"].get<int64_t>() / rows;
           first["row_count"] = 1;
           first["bytes"] = row_bytes;
           first["shape"][0] = 1;
           second["row_start"] = 1;
           second["row_count"] = rows - 1;
           second["bytes"] = row_bytes * (rows - 1);
           second["shape"][0] = rows - 1;
           t["pieces"] = nlohmann::json::array({first, second});
         }
         f.remove(kIndexDataset);
         f.write_string(kIndexDataset, j.dump());
         f.close();
       },
       {"'{shard}'", "tensor 'model/fc1.weight' has shape"},
       "has shape"},
      {"missing shard",
       [shard](const std::string& c) { stdfs::remove(c + "/" + shard); },
       {"shard '{shard}' is missing", "tensor 'model/"},
       "is missing"},
      {"shard of another checkpoint",
       [shard](const std::string& c) {
         stdfs::copy_file(fs::parent_dir(c) + "/model_0000004/" + shard, c + "/" + shard,
                          stdfs::copy_options::overwrite_existing);
       },
       {"'{shard}'", "checksum mismatch"},
       "checksum mismatch"},
      {"missing checkpoint.h5",
       [](const std::string& c) { stdfs::remove(c + "/checkpoint.h5"); },
       {"'{ckpt}' is not a checkpoint: 'checkpoint.h5' is missing"},
       "is missing"},
      {"checkpoint.h5 not HDF5",
       [](const std::string& c) { std::ofstream(c + "/checkpoint.h5") << "garbage\n"; },
       {"'{ckpt}/checkpoint.h5'", "signature"},
       "signature"},
      {"wrong format version",
       [](const std::string& c) {
         h5::File f = h5::File::open(c + "/checkpoint.h5", h5::OpenMode::kReadWrite);
         nlohmann::json j = nlohmann::json::parse(f.read_string(kIndexDataset));
         j["format_version"] = 2;
         f.remove(kIndexDataset);
         f.write_string(kIndexDataset, j.dump());
         f.close();
       },
       {"{ckpt}/checkpoint.h5", "format version 2 is not supported"},
       "format version 2"},
  };
}

TEST_F(FaultTest, DamagedCheckpointsFailClearlyAndResumeFallsBack) {
  for (const Damage& d : AllDamages()) {
    SCOPED_TRACE(d.what);
    out_ = root_ + "/" + std::to_string(std::hash<std::string>()(d.what));
    Save("model_0000004", 1);
    Save("model_0000009", 2);
    const std::string newest = out_ + "/model_0000009";
    d.apply(newest);
    const auto sums = tree_checksums(out_);

    TrainingState fresh(KindOf(2), 99, 0, 1);
    Checkpointer c(fresh.model, out_, comm_, fresh.checkpointables());
    const std::string msg = ThrownMessage([&] { c.load(newest); });
    for (const auto& part : d.expected) EXPECT_CONTAINS(msg, Expand(part, newest));
    EXPECT_FALSE(verify_checkpoint(newest).empty()) << "verify_checkpoint missed it";

    LogCapture log;
    ExpectResumesTo("model_0000004", 1);
    EXPECT_CONTAINS(log.text(), "Cannot resume from " + newest);
    EXPECT_CONTAINS(log.text(), Expand(d.why, newest));
    EXPECT_EQ(tree_checksums(out_), sums) << "a failed load or resume modified files";
  }
}

TEST_F(FaultTest, NoValidCheckpointToResumeFrom) {
  Save("model_0000004", 1);
  Save("model_0000009", 2);
  stdfs::remove(out_ + "/model_0000004/" + shard_file_name(0, 1));
  stdfs::remove(out_ + "/model_0000009/" + shard_file_name(0, 1));
  TrainingState fresh(KindOf(2), 99, 0, 1);
  Checkpointer c(fresh.model, out_, comm_, fresh.checkpointables());
  const std::string msg = ThrownMessage([&] { c.resume_or_load("", true); });
  EXPECT_CONTAINS(msg, "no valid checkpoint to resume from in '" + out_ + "'");
  EXPECT_CONTAINS(msg, out_ + "/model_0000009: ");
  EXPECT_CONTAINS(msg, out_ + "/model_0000004: ");
}

TEST_F(FaultTest, ResumeFallsBackToTheNewestIterationNotTheNewestName) {
  TrainingState s(OptKind::kSGD, 1, 0, 1);
  Checkpointer c(s.model, out_, comm_, s.checkpointables());
  c.save("model_0000004", {{"iteration", int64_t{4}}});
  c.save("backup", {{"iteration", int64_t{6}}});
  c.save("model_0000002", {{"iteration", int64_t{2}}});
  c.save("model_0000009", {{"iteration", int64_t{9}}});
  stdfs::remove(out_ + "/model_0000009/" + shard_file_name(0, 1));
  TrainingState fresh(OptKind::kSGD, 2, 0, 1);
  Checkpointer r(fresh.model, out_, comm_, fresh.checkpointables());
  EXPECT_EQ(std::get<int64_t>(r.resume_or_load("", true).at("iteration")), 6);
  EXPECT_EQ(r.loaded_from(), out_ + "/backup");
  // Unreadable ones go last; then the newest readable one is taken.
  stdfs::remove(out_ + "/backup/" + shard_file_name(0, 1));
  EXPECT_EQ(std::get<int64_t>(r.resume_or_load("", true).at("iteration")), 4);
}

TEST_F(FaultTest, LoadAcceptsTheDirectoryOrItsIndexFile) {
  Save("model_a", 1);
  for (const std::string& path :
       {out_ + "/model_a", out_ + "/model_a/", out_ + "/model_a/checkpoint.h5"}) {
    SCOPED_TRACE(path);
    ExpectLoads(1, [&](Checkpointer& c) { return c.load(path); });
  }
}

TEST_F(FaultTest, ResumeFalseLoadsTheWeightsOnly) {
  Save("model_a", 1);
  TrainingState saved(KindOf(1), 1, 0, 1);
  saved.train(3);
  TrainingState fresh(KindOf(1), 77, 0, 1);
  const StateDict before = fresh.snapshot();
  Checkpointer c(fresh.model, out_, comm_, fresh.checkpointables());
  EXPECT_TRUE(c.resume_or_load(out_ + "/model_a", /*resume=*/false).empty());
  const StateDict after = fresh.snapshot();
  for (const auto& [k, v] : after) {
    const bool is_model = k.rfind("model/", 0) == 0;
    const StateDict& want = is_model ? saved.snapshot() : before;
    EXPECT_TRUE(state_diff({{k, want.at(k)}}, {{k, v}}).empty()) << k;
  }
}

// ---- a checkpoint of another model --------------------------------------------------

// fc1 as in the tiny net, plus a "head" the checkpoint does not have.
struct OtherNet : torch::nn::Module {
  OtherNet()
      : fc1(register_module("fc1", torch::nn::Linear(6, 8))),
        head(register_module("head", torch::nn::Linear(8, 2))) {}
  torch::nn::Linear fc1, head;
};

TEST_F(FaultTest, MismatchedShapesStrictAndNot) {
  Save("model_a", 1, /*hidden=*/8);
  const std::string ckpt = out_ + "/model_a";
  const auto sums = tree_checksums(out_);
  TrainingState saved(KindOf(1), 1, 0, 1, 8);
  saved.train(3);

  // STRICT: the load fails naming the checkpoint and every mismatch, and leaves the
  // model untouched.
  TrainingState other(KindOf(1), 5, 0, 1, /*hidden=*/5);
  const StateDict before = other.snapshot();
  CheckpointerOptions strict;
  strict.strict = true;
  Checkpointer cs(other.model, out_, comm_, other.checkpointables(), strict);
  std::string msg = ThrownMessage<ConfigError>([&] { cs.load(ckpt); });
  EXPECT_CONTAINS(msg,
                  "checkpoint '" + ckpt + "' does not match the model (CHECKPOINT.STRICT is on)");
  EXPECT_CONTAINS(msg, "shape      | fc1.weight | checkpoint [8, 6] vs model [5, 6]");
  EXPECT_CONTAINS(msg, "shape      | bn.running_mean | checkpoint [8] vs model [5]");
  EXPECT_TRUE(state_diff(before, other.snapshot()).empty())
      << "a failed strict load changed the model";

  // Not strict, model only: matching tensors load, mismatched ones stay, a table is logged.
  Checkpointer cn(other.model, out_, comm_, other.checkpointables());
  {
    LogCapture log;
    EXPECT_TRUE(cn.load(ckpt, std::vector<std::string>{}).count("iteration"));
    EXPECT_CONTAINS(log.text(), "were not loaded from '" + ckpt + "'");
    EXPECT_CONTAINS(log.text(), "fc2.weight | checkpoint [3, 8] vs model [3, 5]");
  }
  const StateDict now = other.snapshot(), want = saved.snapshot();
  EXPECT_TRUE(bitwise_equal(std::get<at::Tensor>(now.at("model/fc2.bias")),
                            std::get<at::Tensor>(want.at("model/fc2.bias"))));
  EXPECT_TRUE(bitwise_equal(std::get<at::Tensor>(now.at("model/fc1.weight")),
                            std::get<at::Tensor>(before.at("model/fc1.weight"))));

  // Not strict, everything: the optimizer state cannot fit; the error names it.
  msg = ThrownMessage([&] { cn.load(ckpt); });
  EXPECT_CONTAINS(msg, "loading 'optimizer' state from '" + ckpt + "'");
  EXPECT_CONTAINS(msg, "state/fc1.weight/");
  EXPECT_CONTAINS(msg, "checkpoint shape [8, 6] but the parameter has shape [5, 6]");
  EXPECT_EQ(tree_checksums(out_), sums);
}

TEST_F(FaultTest, MissingAndUnexpectedKeysStrictAndNot) {
  Save("model_a", 1);
  const std::string ckpt = out_ + "/model_a";
  TrainingState saved(KindOf(1), 1, 0, 1);
  saved.train(3);
  auto other = std::make_shared<OtherNet>();
  fill_deterministic(*other, 3);
  const StateDict before = ModuleState(other).state_dict();

  CheckpointerOptions strict;
  strict.strict = true;
  std::string msg =
      ThrownMessage<ConfigError>([&] { Checkpointer(other, out_, comm_, {}, strict).load(ckpt); });
  EXPECT_CONTAINS(msg, ckpt);
  EXPECT_CONTAINS(msg, "missing    | head.weight");
  EXPECT_CONTAINS(msg, "missing    | head.bias");
  EXPECT_CONTAINS(msg, "unexpected | fc2.weight");
  EXPECT_CONTAINS(msg, "unexpected | bn.num_batches_tracked");
  EXPECT_TRUE(bitwise_equal(other->fc1->weight, std::get<at::Tensor>(before.at("fc1.weight"))));

  LogCapture log;
  Checkpointer(other, out_, comm_).load(ckpt);  // no checkpointables: model only
  EXPECT_CONTAINS(log.text(), "missing    | head.weight");
  EXPECT_TRUE(bitwise_equal(other->fc1->weight,
                            std::get<at::Tensor>(saved.snapshot().at("model/fc1.weight"))));
  EXPECT_TRUE(bitwise_equal(other->head->weight, std::get<at::Tensor>(before.at("head.weight"))));
}

// last_checkpoint is ours: a tag naming a directory outside OUTPUT_DIR, a symbolic link
// or a FIFO is damage: the resume takes the newest committed checkpoint of OUTPUT_DIR,
// never the other directory, and never hangs.
TEST_F(FaultTest, ALastCheckpointTagPointingOutsideIsNeverFollowed) {
  const std::string elsewhere = root_ + "/run";
  std::string kept_out = out_;
  out_ = elsewhere;
  Save("model_final", 3);
  out_ = kept_out;
  Save("model_0000004", 1);
  Save("model_0000009", 2);
  const std::string tag = out_ + "/last_checkpoint";
  const auto write_tag = [&](const std::string& text) {
    stdfs::remove(tag);
    fs::write_file_atomic(tag, text);
  };
  for (const std::string& text : {std::string("../run/model_final"), std::string("/tmp"),
                                  std::string(".."), std::string("model_0000004/../../run/model_final")}) {
    SCOPED_TRACE(text);
    write_tag(text);
    LogCapture log;
    ExpectResumesTo("model_0000009", 2);
    EXPECT_CONTAINS(log.text(), "'" + tag + "' does not name a checkpoint directory of '" + out_ + "'");
  }
  // A symbolic link to a file naming model_0000004 is not followed.
  fs::write_file_atomic(root_ + "/tag_elsewhere", "model_0000004");
  stdfs::remove(tag);
  stdfs::create_symlink(root_ + "/tag_elsewhere", tag);
  {
    LogCapture log;
    ExpectResumesTo("model_0000009", 2);
    EXPECT_CONTAINS(log.text(), tag);
  }
  // A FIFO does not hang the resume.
  stdfs::remove(tag);
  ASSERT_EQ(::mkfifo(tag.c_str(), 0600), 0);
  {
    LogCapture log;
    ExpectResumesTo("model_0000009", 2);
    EXPECT_CONTAINS(log.text(), "is not a regular file");
  }
}

// A power cut after a save's commit and before its tag was durable leaves committed
// checkpoints and no last_checkpoint: the resume says so and takes the newest.
TEST_F(FaultTest, WithoutALastCheckpointTheResumeTakesTheNewestCommittedCheckpoint) {
  Save("model_0000004", 1);
  Save("model_0000009", 2);
  stdfs::remove(out_ + "/last_checkpoint");
  LogCapture log;
  ExpectResumesTo("model_0000009", 2);
  EXPECT_CONTAINS(log.text(), out_ + "/last_checkpoint is missing, but " + out_ +
                                  " holds committed checkpoints");
}

// A save never deletes what is not a committed checkpoint of its own: a user's file,
// symbolic link or checkpoint-less directory under the checkpoint's name is kept, and
// the save fails naming it before writing anything.
TEST_F(FaultTest, ASaveNeverReplacesWhatIsNotACheckpoint) {
  stdfs::create_directories(out_);
  const std::string target = out_ + "/model_final";
  const auto attempt = [&](const std::string& what) {
    SCOPED_TRACE(what);
    const auto sums = tree_checksums(out_);
    TrainingState s(OptKind::kSGD, 1, 0, 1);
    Checkpointer c(s.model, out_, comm_, s.checkpointables());
    EXPECT_CONTAINS(ThrownMessage([&] { c.save("model_final"); }),
                    "refusing to save over '" + target + "': it exists and is not a dtrain "
                    "checkpoint (it is " + what + ")");
    EXPECT_EQ(tree_checksums(out_), sums) << "the failed save changed files";
    EXPECT_TRUE(HiddenEntries(out_).empty());
  };
  fs::write_file_atomic(target, "my notes\n");
  attempt("a regular file");
  stdfs::remove(target);
  stdfs::create_symlink(root_, target);
  attempt("a symbolic link");
  stdfs::remove(target);
  stdfs::create_directories(target + "/sub");
  fs::write_file_atomic(target + "/sub/data.txt", "keep me");
  attempt("a directory without checkpoint.h5");
  // A committed checkpoint of ours is replaced as before.
  stdfs::remove_all(target);
  Save("model_final", 1);
  Save("model_final", 2);
  ExpectLoads(2, [&](Checkpointer& c) { return c.load(target); });
}

// A run whose model does not fit the checkpoint is a ConfigError (exit 2), agreed before
// anything is loaded, and never a reason to try an older checkpoint.
TEST_F(FaultTest, ResumeWithAnotherModelShapeStopsWithoutFallingBack) {
  Save("model_0000004", 1);
  Save("model_0000009", 2);
  TrainingState other(KindOf(2), 7, 0, 1, /*hidden=*/4);
  const StateDict before = other.snapshot();
  Checkpointer c(other.model, out_, comm_, other.checkpointables());
  LogCapture log;
  const std::string msg = ThrownMessage<ConfigError>([&] { c.resume_or_load("", true); });
  EXPECT_CONTAINS(msg, "checkpoint '" + out_ + "/model_0000009' does not match the model (a "
                       "resume needs every tensor to match)");
  EXPECT_CONTAINS(msg, "shape      | fc1.weight | checkpoint [8, 6] vs model [4, 6]");
  EXPECT_EQ(log.text().find("trying an older checkpoint"), std::string::npos) << log.text();
  EXPECT_TRUE(state_diff(before, other.snapshot()).empty()) << "the model was changed";
}

}  // namespace
}  // namespace dtrain::checkpoint
