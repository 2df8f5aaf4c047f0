// checkpoint.h5 written in two steps, as the commit protocol does: begun from the shard
// plan while the shards are written, finished from the manifests. The result reads back
// (index text, replicated and per-rank virtual datasets, bit for bit) like one written
// at once, and a finish whose manifests do not match the begun layout is refused.
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "checkpoint/format.h"
#include "checkpoint/inspect.h"
#include "runtime/base/error.h"
#include "runtime/h5/h5.h"
#include "tests/checkpoint/test_support.h"
#include "tests/test_util.h"

namespace dtrain::checkpoint {
namespace {

constexpr int kWorld = 3;

CollectedState sample_state(uint64_t rng_seed) {
  CollectedState s;
  s.replicated.emplace_back("model/w", testing::pattern_tensor({50, 7}, at::kFloat, 1));
  s.replicated.emplace_back("model/b", testing::pattern_tensor({7}, at::kDouble, 2));
  s.replicated.emplace_back("model/empty", at::zeros({0, 4}, at::kBFloat16));
  s.replicated.emplace_back("optimizer/state/w/step", at::scalar_tensor(int64_t{5}, at::kLong));
  s.per_rank.emplace_back("rng/cpu", testing::pattern_tensor({64}, at::kByte, rng_seed));
  s.scalars["scheduler/last_iter"] = int64_t{7};
  s.scalars["extra/lr"] = 0.25;
  return s;
}

// What finish_index_file left in `dir`/checkpoint.h5 reads back: the index, attributes,
// config, scalars and every tensor through its virtual dataset, bit for bit.
void ExpectReadsBack(const std::string& dir, const CheckpointIndex& planned, const CheckpointIndex& index,
                     const std::string& config_yaml, const std::vector<CollectedState>& states) {
  EXPECT_EQ(read_index_text(dir), index.to_json());
  h5::File f = h5::File::open(dir + "/" + kIndexFile);
  EXPECT_EQ(f.get_int_attr("iteration"), index.iteration);
  EXPECT_EQ(f.get_int_attr("world_size"), kWorld);
  EXPECT_EQ(f.get_string_attr("created"), planned.created);
  EXPECT_EQ(f.get_string_attr("format"), kFormatName);
  EXPECT_EQ(f.read_string("/dtrain/config_yaml"), config_yaml);
  EXPECT_EQ(f.read_tensor("/scheduler/last_iter").item<int64_t>(), 7);
  for (const auto& [name, t] : states[0].replicated) {
    EXPECT_TRUE(testing::bitwise_equal(f.read_tensor("/" + name), t)) << name;
  }
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_TRUE(testing::bitwise_equal(f.read_tensor(fmt::format("/ranks/{:05d}/rng/cpu", r)),
                                       states[r].per_rank[0].second))
        << "rank " << r;
  }
}

class IndexFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::make_temp_dir("index_file");
    for (int r = 0; r < kWorld; ++r) states_.push_back(sample_state(100 + r));
    plan_ = plan_shards(states_[0].replicated_meta(), kWorld);
    for (int r = 0; r < kWorld; ++r) {
      manifests_.push_back(
          write_shard(dir_ + "/" + shard_file_name(r, kWorld), r, states_[r], plan_));
    }
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // The planned index, stamped, and the full index built from the manifests.
  std::pair<CheckpointIndex, CheckpointIndex> indexes() const {
    CheckpointIndex planned = plan_index(states_[0], plan_, kWorld, 42);
    stamp_index(planned);
    CheckpointIndex index = build_index(states_[0], manifests_, kWorld, 42);
    index.created = planned.created;
    index.versions = planned.versions;
    return {planned, index};
  }

  void ExpectReadsBack(const std::string& dir, const CheckpointIndex& planned, const CheckpointIndex& index,
                       const std::string& config_yaml) const {
    checkpoint::ExpectReadsBack(dir, planned, index, config_yaml, states_);
  }

  std::string dir_;
  std::vector<CollectedState> states_;
  std::vector<Piece> plan_;
  std::vector<ShardManifest> manifests_;
};

TEST_F(IndexFileTest, BegunThenFinishedReadsBackBitwise) {
  auto [planned, index] = indexes();
  // The plan fixes every replicated piece but not its checksum.
  ASSERT_EQ(planned.tensors.size(), states_[0].replicated.size());
  for (size_t t = 0; t < planned.tensors.size(); ++t) {
    ASSERT_EQ(planned.tensors[t].pieces.size(), index.tensors[t].pieces.size());
    for (size_t p = 0; p < planned.tensors[t].pieces.size(); ++p) {
      EXPECT_EQ(planned.tensors[t].pieces[p].shape, index.tensors[t].pieces[p].shape);
      EXPECT_EQ(planned.tensors[t].pieces[p].bytes, index.tensors[t].pieces[p].bytes);
    }
  }
  begin_index_file(dir_, planned, "MODEL:\n  NAME: mlp\n");
  finish_index_file(dir_, planned, index);
  ExpectReadsBack(dir_, planned, index, "MODEL:\n  NAME: mlp\n");
}

// The local tier makes the virtual datasets once per layout and starts each snapshot's
// checkpoint.h5 from a copy of them.
TEST_F(IndexFileTest, BegunFromAMappingsImageReadsBackTheSame) {
  auto [planned, index] = indexes();
  const std::string scratch = dir_ + "/.layout.tmp";
  const std::string image = index_mappings_image(scratch, planned);
  EXPECT_FALSE(std::filesystem::exists(scratch));
  EXPECT_EQ(image.substr(0, 8), std::string("\x89HDF\r\n\x1a\n", 8));
  for (int64_t iteration : {42, 43}) {
    SCOPED_TRACE(iteration);
    const std::string dir = dir_ + "/snap-" + std::to_string(iteration);
    std::filesystem::create_directory(dir);
    for (int r = 0; r < kWorld; ++r) {
      std::filesystem::copy_file(dir_ + "/" + shard_file_name(r, kWorld), dir + "/" + shard_file_name(r, kWorld));
    }
    CheckpointIndex p = planned, i = index;
    p.iteration = i.iteration = iteration;
    ASSERT_EQ(mapping_difference(planned, p), "");  // the iteration is no part of it
    begin_index_file(dir, p, "a: " + std::to_string(iteration) + "\n", &image);
    EXPECT_THROW(begin_index_file(dir, p, "", &image), CheckpointError);  // exists
    finish_index_file(dir, p, i);
    ExpectReadsBack(dir, p, i, "a: " + std::to_string(iteration) + "\n");
  }
}

TEST_F(IndexFileTest, TheMappingDiffersWithWhatTheVirtualDatasetsMap) {
  auto [planned, index] = indexes();
  auto changed = [&](const std::function<void(CheckpointIndex&)>& change) {
    CheckpointIndex p = planned;
    change(p);
    return !mapping_difference(planned, p).empty();
  };
  EXPECT_TRUE(changed([](CheckpointIndex& p) { p.world_size += 1; }));
  EXPECT_TRUE(changed([](CheckpointIndex& p) { p.tensors[0].pieces[1].row_start += 1; }));
  EXPECT_TRUE(changed([](CheckpointIndex& p) { p.tensors[0].pieces[1].shard = 0; }));
  EXPECT_TRUE(changed([](CheckpointIndex& p) { p.tensors[1].dtype = "float32"; }));
  EXPECT_TRUE(changed([](CheckpointIndex& p) { p.tensors[1].name = "model/c"; }));
  EXPECT_TRUE(changed([](CheckpointIndex& p) { p.tensors[0].shape[0] += 1; }));
  EXPECT_FALSE(changed([](CheckpointIndex& p) {
    p.iteration += 5;
    p.created = "2000-01-01T00:00:00Z";
    p.scalars["extra/lr"] = 0.5;
  }));
}

TEST_F(IndexFileTest, FinishRefusesALayoutThatDiffersFromTheBegunOne) {
  auto [planned, index] = indexes();
  begin_index_file(dir_, planned, "");
  CheckpointIndex moved = index;
  moved.tensors[0].pieces[1].row_start += 1;  // e.g. a rank planned other rows
  try {
    finish_index_file(dir_, planned, moved);
    FAIL() << "expected a CheckpointError";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("was begun for a layout that differs from what the "
                                         "shards hold (tensor 'model/w')"),
              std::string::npos)
        << e.what();
  }
  CheckpointIndex other_time = index;
  other_time.iteration = 43;
  EXPECT_THROW(finish_index_file(dir_, planned, other_time), CheckpointError);
}

TEST_F(IndexFileTest, BeginRefusesAnExistingFile) {
  auto [planned, index] = indexes();
  begin_index_file(dir_, planned, "");
  EXPECT_THROW(begin_index_file(dir_, planned, ""), CheckpointError);
  finish_index_file(dir_, planned, index);  // the first one is intact
  EXPECT_EQ(read_index_text(dir_), index.to_json());
}

// What the HDF5 layer reports (h5::H5Error) leaves the format as a CheckpointError, the
// type resume_or_load skips as damage, naming the damaged file.
TEST_F(IndexFileTest, DamagedFilesAreCheckpointErrorsNamingTheFile) {
  auto [planned, index] = indexes();
  write_index_file(dir_, index, "MODEL:\n  NAME: mlp\n");
  const TensorRecord& w = index.tensors[0];
  ASSERT_EQ(w.name, "model/w");
  const std::string shard = dir_ + "/" + shard_file_name(w.pieces[0].shard, kWorld);
  testing::remove_dataset(shard, "/model/w");
  ShardReader reader(dir_, kWorld);
  at::Tensor dst = at::empty(w.pieces[0].shape, at::kFloat);
  try {
    reader.read_piece(w, w.pieces[0], dst);
    FAIL() << "expected a CheckpointError";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find(shard), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("model/w"), std::string::npos) << e.what();
  }

  const std::string index_path = dir_ + "/" + kIndexFile;
  testutil::write_file(index_path, std::string(4096, 'x'));  // not HDF5 any more
  for (const auto& read : std::vector<std::function<void()>>{
           [&] { read_index_text(dir_); }, [&] { read_config_yaml(dir_); }}) {
    try {
      read();
      FAIL() << "expected a CheckpointError";
    } catch (const CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find(index_path), std::string::npos) << e.what();
    }
  }
}

TEST_F(IndexFileTest, WriteIndexFileIsBothSteps) {
  auto [planned, index] = indexes();
  write_index_file(dir_, index, "");
  h5::File f = h5::File::open(dir_ + "/" + kIndexFile);
  EXPECT_TRUE(testing::bitwise_equal(f.read_tensor("/model/w"), states_[0].replicated[0].second));
  EXPECT_TRUE(testing::bitwise_equal(f.read_tensor("/ranks/00002/rng/cpu"),
                                     states_[2].per_rank[0].second));
  EXPECT_EQ(read_index_text(dir_), index.to_json());
}

}  // namespace
}  // namespace dtrain::checkpoint
