// Checkpointer under mpirun (1, 2 and 4 ranks): save/load round trip of a model with
// SGD/AdamW state, LR scheduler, sampler, per-rank RNG and per-rank numbers, and user
// extras, bit for bit and identical on all ranks; each rank's shard holds a disjoint ~1/N
// of the replicated bytes; a fault on one rank, a damaged shard, a mismatched model and
// mismatched collective calls give every rank the same CheckpointError.

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "checkpoint/checkpointer.h"
#include "checkpoint/format.h"
#include "runtime/base/error.h"
#include "runtime/dist/communicator.h"
#include "runtime/h5/h5.h"
#include "tests/checkpoint/expect.h"
#include "tests/checkpoint/mpi_fixture.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint {
namespace {

using namespace testing;  // NOLINT: test helpers
namespace stdfs = std::filesystem;

class MpiCheckpointTest : public MpiCheckpointFixture {
 protected:
  MpiCheckpointTest() : MpiCheckpointFixture("mpi") {}

  // Saves seed's state (3 steps) with this rank's RNG seeded as `name`.
  void Save(const std::string& name, uint64_t seed, OptKind kind, int64_t hidden = 8) {
    TrainingState s(kind, seed, rank_, world_, hidden);
    s.train(3);
    Checkpointer c(s.model, dir_, *comm_, s.checkpointables());
    set_rank_rng(seed, rank_);
    c.save(name, sample_extras(seed, 2));
  }

  // Loads with `load` into a fresh state; expects seed's state, extras and RNG.
  void ExpectLoads(uint64_t seed, OptKind kind,
                   const std::function<StateDict(Checkpointer&)>& load) {
    const at::Tensor rng = set_rank_rng(seed, rank_);
    TrainingState expected(kind, seed, rank_, world_);
    expected.train(3);
    TrainingState fresh(kind, seed + 1000, rank_, world_);
    set_rank_rng(seed + 555, rank_);
    Checkpointer c(fresh.model, dir_, *comm_, fresh.checkpointables());
    const StateDict extra = load(c);
    auto diff = state_diff(expected.snapshot(), fresh.snapshot());
    EXPECT_TRUE(diff.empty()) << ::testing::PrintToString(diff);
    diff = state_diff(sample_extras(seed, 2), extra);
    EXPECT_TRUE(diff.empty()) << ::testing::PrintToString(diff);
    EXPECT_TRUE(bitwise_equal(current_rng_state(), rng)) << "rng of rank " << rank_;
    ExpectSameOnAllRanks(fmt::format("{:x}", state_hash(fresh.snapshot())));
  }
};

class RoundTripTest : public MpiCheckpointTest, public ::testing::WithParamInterface<OptKind> {};

TEST_P(RoundTripTest, EverythingBitwiseOnEveryRank) {
  const OptKind kind = GetParam();
  TrainingState a(kind, 7, rank_, world_);
  a.train(3);
  bool has_state = false;
  for (const auto& [k, v] : a.optimizer_state->state_dict()) has_state |= k.rfind("state/", 0) == 0;
  ASSERT_TRUE(has_state) << "the optimizer has no per-parameter state yet";
  const at::Tensor rng_saved = set_rank_rng(7, rank_);
  CheckpointerOptions options;
  options.config_yaml = "SEED: 7\n";
  Checkpointer ca(a.model, dir_, *comm_, a.checkpointables(), options);
  const StateDict extras = sample_extras(7, 2);
  ca.save("model_0000002", extras);
  EXPECT_TRUE(ca.has_checkpoint());
  EXPECT_EQ(ca.get_checkpoint_file(), dir_ + "/model_0000002");
  EXPECT_EQ(ca.get_all_checkpoint_files(), std::vector<std::string>{dir_ + "/model_0000002"});

  TrainingState b(kind, 99, rank_, world_);
  ASSERT_FALSE(state_diff(a.snapshot(), b.snapshot()).empty());
  set_rank_rng(555, rank_);
  Checkpointer cb(b.model, dir_, *comm_, b.checkpointables());
  const StateDict got = cb.load(dir_ + "/model_0000002");
  auto diff = state_diff(a.snapshot(), b.snapshot());
  EXPECT_TRUE(diff.empty()) << ::testing::PrintToString(diff);
  diff = state_diff(extras, got);
  EXPECT_TRUE(diff.empty()) << ::testing::PrintToString(diff);
  EXPECT_TRUE(bitwise_equal(current_rng_state(), rng_saved)) << "per-rank rng";
  EXPECT_EQ(cb.loaded_from(), dir_ + "/model_0000002");
  ExpectSameOnAllRanks(fmt::format("{:x}", state_hash(b.snapshot())));
  // The RNG states differ between ranks (each got its own back).
  const auto rngs = comm_->all_gather_bytes(fmt::format("{:x}", state_hash({{"r", rng_saved}})));
  for (size_t r = 1; r < rngs.size(); ++r) EXPECT_NE(rngs[r], rngs[0]);

  // Training continues identically: the complete state was restored.
  a.train(2);
  b.train(2);
  diff = state_diff(a.snapshot(), b.snapshot());
  EXPECT_TRUE(diff.empty()) << "after 2 more steps: " << ::testing::PrintToString(diff);

  // checkpoint.h5 records what it should.
  h5::File index = h5::File::open(dir_ + "/model_0000002/checkpoint.h5");
  EXPECT_EQ(index.get_string_attr("format"), "dtrain-checkpoint");
  EXPECT_EQ(index.get_int_attr("format_version"), 1);
  EXPECT_EQ(index.get_int_attr("world_size"), world_);
  EXPECT_EQ(index.get_int_attr("iteration"), 2);
  EXPECT_EQ(index.read_string("/dtrain/config_yaml"), "SEED: 7\n");
  EXPECT_EQ(index.read_tensor("/scheduler/last_iter").item<int64_t>(), 3);
  for (int r = 0; r < world_; ++r) {
    EXPECT_TRUE(index.exists(fmt::format("/ranks/{:05d}/rng/cpu", r))) << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Optimizers, RoundTripTest,
                         ::testing::Values(OptKind::kSGD, OptKind::kAdamW), [](const auto& info) {
                           return info.param == OptKind::kSGD ? std::string("SGD")
                                                              : std::string("AdamW");
                         });

TEST_F(MpiCheckpointTest, EachShardHoldsADisjointShare) {
  // A wider model so that there are many rows to balance.
  TrainingState s(OptKind::kAdamW, 3, rank_, world_, /*hidden=*/64);
  s.train(2);
  Checkpointer c(s.model, dir_, *comm_, s.checkpointables());
  c.save("wide", {{"big", pattern_tensor({300, 7}, at::kDouble, 1)}});
  const std::string ckpt = dir_ + "/wide";
  const CheckpointIndex idx = CheckpointIndex::from_json(read_index_text(ckpt), ckpt);
  ASSERT_EQ(idx.world_size, world_);

  std::vector<int64_t> bytes(world_, 0), per_rank_bytes(world_, 0);
  int64_t total = 0, max_row = 0;
  for (const auto& t : idx.tensors) {
    for (const auto& p : t.pieces) (t.per_rank ? per_rank_bytes : bytes)[p.shard] += p.bytes;
    if (t.per_rank) {
      EXPECT_EQ(t.pieces.size(), static_cast<size_t>(world_)) << t.name << ": one per rank";
      continue;
    }
    int64_t tb = 0;
    for (const auto& p : t.pieces) tb += p.bytes;
    total += tb;
    const int64_t rows = t.shape.empty() ? 1 : t.shape[0];
    if (rows > 0) max_row = std::max(max_row, tb / rows);
  }
  for (int r = 0; r < world_; ++r) {
    const double ideal = static_cast<double>(total) / world_;
    EXPECT_LE(std::abs(static_cast<double>(bytes[r]) - ideal), static_cast<double>(max_row))
        << "shard " << r << " holds " << bytes[r] << " of " << total << " replicated bytes";
  }

  // Rank r's shard file holds exactly its pieces (and its RNG), nothing of the others.
  const std::string shard = ckpt + "/" + shard_file_name(rank_, world_);
  h5::File f = h5::File::open(shard);
  int64_t stored = 0;
  for (const auto& t : idx.tensors) {
    const PieceRecord* mine = nullptr;
    for (const auto& p : t.pieces) {
      if (p.shard == rank_) mine = &p;
    }
    EXPECT_EQ(f.exists("/" + t.name), mine != nullptr) << t.name << " in " << shard;
    if (mine == nullptr) continue;
    h5::Dataset d = f.open_dataset("/" + t.name);
    EXPECT_EQ(d.shape(), mine->shape) << t.name;
    h5::ApiScope scope;
    stored += static_cast<int64_t>(H5Dget_storage_size(d.id()));
  }
  EXPECT_EQ(stored, bytes[rank_] + per_rank_bytes[rank_]);
  // The file is not much more than its data (HDF5 metadata, no copies of others' data).
  EXPECT_LT(static_cast<int64_t>(stdfs::file_size(shard)), stored + (1 << 20) + 64 * 1024);
}

// Numbers and tensors that differ between ranks.
class PerRankThing : public Stateful {
 public:
  explicit PerRankThing(int rank) : rank_(rank) {}
  StateDict state_dict() const override {
    return {{"count", count_}, {"temperature", temperature_}, {"vec", vec_}};
  }
  void load_state_dict(const StateDict& s) override {
    count_ = state_int(s, "count", "thing");
    temperature_ = std::get<double>(s.at("temperature"));
    vec_ = state_tensor(s, "vec", "thing").clone();
  }
  void set(uint64_t seed) {
    count_ = static_cast<int64_t>(seed) * 10 + rank_;
    temperature_ = rank_ + 0.25 + static_cast<double>(seed);
    vec_ = pattern_tensor({rank_ + 2}, at::kFloat, seed + rank_);
  }
  int64_t count_ = 0;
  double temperature_ = 0;
  at::Tensor vec_ = at::zeros({1});
  int rank_;
};

TEST_F(MpiCheckpointTest, PerRankNumbersKeepTheirType) {
  auto model = make_tiny_net(1);
  PerRankThing saved(rank_), loaded(rank_);
  saved.set(4);
  Checkpointer(model, dir_, *comm_, {{"thing", {&saved, Scope::kPerRank}}}).save("p");
  Checkpointer(model, dir_, *comm_, {{"thing", {&loaded, Scope::kPerRank}}}).load(dir_ + "/p");
  EXPECT_EQ(loaded.count_, 40 + rank_);
  EXPECT_EQ(loaded.temperature_, rank_ + 4.25);
  EXPECT_TRUE(bitwise_equal(loaded.vec_, saved.vec_));
}

class StringPerRank : public Stateful {
 public:
  StateDict state_dict() const override { return {{"name", std::string("x")}}; }
  void load_state_dict(const StateDict&) override {}
};

TEST_F(MpiCheckpointTest, PerRankStringIsTheSameErrorEverywhere) {
  auto model = make_tiny_net(1);
  StringPerRank bad;
  Checkpointer c(model, dir_, *comm_, {{"bad", {&bad, Scope::kPerRank}}});
  const std::string msg = ExpectSameOnAllRanks(ThrownMessage([&] { c.save("s"); }));
  EXPECT_CONTAINS(msg, "per-rank state 'bad/name' is a string");
  EXPECT_CONTAINS(msg, "(nothing was committed)");
  EXPECT_TRUE(visible_dirs(dir_).empty());
}

TEST_F(MpiCheckpointTest, MismatchedCollectiveCallsFailTheSameEverywhere) {
  if (world_ < 2) GTEST_SKIP() << "needs 2 ranks";
  auto model = make_tiny_net(1);
  Checkpointer c(model, dir_, *comm_);
  // Different names.
  std::string msg = ExpectSameOnAllRanks(ThrownMessage([&] { c.save(rank_ == 0 ? "a" : "b"); }));
  EXPECT_CONTAINS(msg, "Checkpointer methods are collective, but the ranks called different ones");
  EXPECT_CONTAINS(msg, "rank 0: save(a)");
  EXPECT_CONTAINS(msg, "rank 1: save(b)");
  // Different methods.
  msg = ExpectSameOnAllRanks(ThrownMessage([&] {
    if (rank_ == 0) {
      c.save("a");
    } else {
      c.load(dir_ + "/a");
    }
  }));
  EXPECT_CONTAINS(msg, "rank 0: save(a)");
  EXPECT_CONTAINS(msg, "rank 1: load(" + dir_ + "/a;*)");
  msg = ExpectSameOnAllRanks(ThrownMessage([&] {
    if (rank_ == world_ - 1) {
      c.has_checkpoint();
    } else {
      c.tag_last_checkpoint("a");
    }
  }));
  EXPECT_CONTAINS(msg, fmt::format("rank {}: has_checkpoint()", world_ - 1));
  EXPECT_TRUE(visible_dirs(dir_).empty()) << "nothing was written";
  // Nothing is left in flight: matched calls work afterwards.
  c.save("c");
  EXPECT_EQ(visible_dirs(dir_), std::vector<std::string>{"c"});
  EXPECT_EQ(last_checkpoint_name(dir_), "c");
}

TEST_F(MpiCheckpointTest, FaultOnOneRankIsTheSameErrorEverywhere) {
  const std::vector<std::pair<std::string, int>> points = {{"ckpt.before_shard", world_ - 1},
                                                           {"ckpt.during_shard", world_ - 1},
                                                           {"ckpt.after_shards", 0},
                                                           {"ckpt.before_rename", 0},
                                                           {"ckpt.before_last_checkpoint", 0}};
  const std::string root = dir_;
  for (const auto& [point, fault_rank] : points) {
    SCOPED_TRACE(point);
    dir_ = root + "/" + point;
    Save("model_a", 1, OptKind::kAdamW);
    const auto before = tree_checksums(dir_);
    std::string msg;
    {
      ScopedFault fault(point, fault_rank, rank_);
      msg = ExpectSameOnAllRanks(ThrownMessage([&] { Save("model_b", 2, OptKind::kSGD); }));
    }
    EXPECT_CONTAINS(msg, fmt::format("injected fault at {} (rank {})", point, fault_rank));
    EXPECT_CONTAINS(msg, "saving checkpoint '" + dir_ + "/model_b' failed");
    EXPECT_EQ(last_checkpoint_name(dir_), "model_a");
    const auto after = tree_checksums(dir_);
    for (const auto& [file, sum] : before) {
      EXPECT_TRUE(after.count(file) && after.at(file) == sum) << file << " changed";
    }
    const bool committed = point == "ckpt.before_last_checkpoint";
    const std::vector<std::string> want = committed ? std::vector<std::string>{"model_a", "model_b"}
                                                    : std::vector<std::string>{"model_a"};
    EXPECT_EQ(visible_dirs(dir_), want);
    ExpectLoads(1, OptKind::kAdamW, [&](Checkpointer& c) {
      StateDict extra = c.resume_or_load("", true);
      EXPECT_EQ(c.loaded_from(), dir_ + "/model_a");
      return extra;
    });
    comm_->barrier();
    Save("model_b", 2, OptKind::kSGD);
    ExpectLoads(2, OptKind::kSGD, [&](Checkpointer& c) { return c.resume_or_load("", true); });
  }
  dir_ = root;
}

TEST_F(MpiCheckpointTest, DamagedShardOfOneRank) {
  Save("model_0000004", 1, OptKind::kSGD);
  Save("model_0000009", 2, OptKind::kSGD);
  const std::string newest = dir_ + "/model_0000009";
  // Rank 0 damages a piece stored in the last rank's shard.
  const std::string shard = newest + "/" + shard_file_name(world_ - 1, world_);
  std::string damaged;
  if (rank_ == 0) {
    const CheckpointIndex idx = CheckpointIndex::from_json(read_index_text(newest), newest);
    for (const auto& t : idx.tensors) {
      for (const auto& p : t.pieces) {
        if (damaged.empty() && !t.per_rank && p.shard == world_ - 1 && p.bytes >= 8) {
          damaged = t.name;
        }
      }
    }
    flip_byte(shard, dataset_offset(shard, "/" + damaged) + 3);
  }
  comm_->broadcast_bytes(damaged, 0);
  ASSERT_FALSE(damaged.empty());
  const auto sums = tree_checksums(dir_);

  auto model = make_tiny_net(5);
  const std::string msg =
      ExpectSameOnAllRanks(ThrownMessage([&] { Checkpointer(model, dir_, *comm_).load(newest); }));
  EXPECT_CONTAINS(msg, "'" + shard + "'");
  EXPECT_CONTAINS(msg, "tensor '" + damaged + "'");
  EXPECT_CONTAINS(msg, "checksum mismatch");

  LogCapture log;
  ExpectLoads(1, OptKind::kSGD, [&](Checkpointer& c) {
    StateDict extra = c.resume_or_load("", true);
    EXPECT_EQ(c.loaded_from(), dir_ + "/model_0000004");
    return extra;
  });
  if (rank_ == 0) {
    EXPECT_CONTAINS(log.text(), "Cannot resume from " + newest);
    EXPECT_CONTAINS(log.text(), "checksum mismatch");
  }
  EXPECT_EQ(tree_checksums(dir_), sums) << "a failed load modified files";
}

TEST_F(MpiCheckpointTest, DamageInAnyShardFailsEveryRank) {
  // Every rank reads every piece, but the ranks of one machine share the verification
  // (each hashes its own range): a damaged piece must fail the load on every rank
  // wherever it lies, whoever verifies it.
  Save("model_a", 1, OptKind::kAdamW);
  const std::string ckpt = dir_ + "/model_a";
  const CheckpointIndex idx = CheckpointIndex::from_json(read_index_text(ckpt), ckpt);
  const auto pristine = tree_checksums(ckpt);
  comm_->barrier();  // every rank has its checksums before rank 0 damages anything
  for (int shard = 0; shard < world_; ++shard) {
    SCOPED_TRACE(shard);
    // The last sizeable replicated piece of `shard` (the first one is covered elsewhere).
    std::string damaged;
    for (const auto& t : idx.tensors) {
      for (const auto& p : t.pieces) {
        if (!t.per_rank && p.shard == shard && p.bytes >= 8) damaged = t.name;
      }
    }
    ASSERT_FALSE(damaged.empty());
    const std::string file = ckpt + "/" + shard_file_name(shard, world_);
    if (rank_ == 0) flip_byte(file, dataset_offset(file, "/" + damaged) + 4);
    comm_->barrier();
    TrainingState fresh(OptKind::kAdamW, 9, rank_, world_);
    Checkpointer c(fresh.model, dir_, *comm_, fresh.checkpointables());
    const std::string msg = ExpectSameOnAllRanks(ThrownMessage([&] { c.load(ckpt); }));
    EXPECT_CONTAINS(msg, "'" + file + "'");
    EXPECT_CONTAINS(msg, "checksum mismatch for tensor '" + damaged + "'");
    if (rank_ == 0) flip_byte(file, dataset_offset(file, "/" + damaged) + 4);  // repaired
    comm_->barrier();
  }
  EXPECT_EQ(tree_checksums(ckpt), pristine);
  ExpectLoads(1, OptKind::kAdamW, [&](Checkpointer& c) { return c.load(ckpt); });
}

TEST_F(MpiCheckpointTest, StrictMismatchIsTheSameErrorEverywhere) {
  Save("model_a", 1, OptKind::kSGD, /*hidden=*/8);
  TrainingState other(OptKind::kSGD, 2, rank_, world_, /*hidden=*/4);
  CheckpointerOptions strict;
  strict.strict = true;
  Checkpointer c(other.model, dir_, *comm_, other.checkpointables(), strict);
  // A ConfigError (the run does not fit the checkpoint; exit 2) on every rank.
  const std::string msg =
      ExpectSameOnAllRanks(ThrownMessage<ConfigError>([&] { c.load(dir_ + "/model_a"); }));
  EXPECT_CONTAINS(msg, "CHECKPOINT.STRICT is on");
  EXPECT_CONTAINS(msg, "shape      | fc1.weight | checkpoint [8, 6] vs model [4, 6]");
  if (world_ > 1) {
    EXPECT_CONTAINS(msg, "ranks 0, 1");
  }
}

}  // namespace
}  // namespace dtrain::checkpoint
