// Shard files written through a mapping (checkpoint/shard_slab.h): the file is an
// ordinary shard that the shard reader and HDF5 read bitwise, with the checksums
// write_shard would record; a slab knows whether other tensors fit and whether a path
// is still its file; a slab that cannot get its space is a CheckpointError naming the
// file (never a SIGBUS later).
#include <gtest/gtest.h>
#include <gmock/gmock.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "checkpoint/shard_slab.h"
#include "runtime/base/error.h"
#include "runtime/base/fs.h"
#include "runtime/h5/h5.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint {
namespace {

namespace stdfs = std::filesystem;
using namespace testing;  // NOLINT: test helpers
using ::testing::AllOf;
using ::testing::HasSubstr;

std::vector<ShardItem> some_items(int seed) {
  at::manual_seed(seed);
  at::Tensor big = at::randn({300, 257});  // > 64 KiB: aligned
  Piece piece;
  piece.tensor = 0;
  piece.shard = 0;
  piece.row_start = 100;
  piece.row_count = 150;
  piece.bytes = 150 * 257 * 4;
  return {{"model/fc.weight", big.narrow(0, 100, 150), piece},                       // a view
          {"model/fc.bias", at::arange(7, at::kDouble).t(), std::nullopt},             // small
          {"optimizer/step", at::scalar_tensor(int64_t{42}), std::nullopt},            // 0-dim
          {"extra/mask", at::rand({5, 3}) > 0.5, std::nullopt},                        // bool
          {"extra/half", at::randn({4, 6}).to(at::kBFloat16).t(), std::nullopt},       // strided
          {"extra/empty", at::empty({0, 4}), std::nullopt},
          {"extra/negated", at::_neg_view(at::randn({3, 5})), std::nullopt}};  // neg bit: not its bytes
}

TEST(ShardSlabTest, AFilledSlabIsAShardThatHdf5ReadsBitwiseWithWriteShardsChecksums) {
  const std::string dir = make_temp_dir("slab");
  const std::string path = dir + "/shard-00000-of-00001.h5";
  const auto items = some_items(1);
  auto slab = ShardSlab::create(path, items);
  slab->fill(items);
  const auto hashes = slab->hashes();
  ASSERT_EQ(hashes.size(), items.size());
  h5::File f = h5::File::open(path);
  for (size_t i = 0; i < items.size(); ++i) {
    const at::Tensor expected = items[i].data.resolve_neg().contiguous();
    const at::Tensor got = f.read_tensor(items[i].name);
    EXPECT_EQ(got.scalar_type(), expected.scalar_type()) << items[i].name;
    EXPECT_EQ(got.sizes(), expected.sizes()) << items[i].name;
    EXPECT_TRUE(got.equal(expected)) << items[i].name;
    EXPECT_EQ(hashes[i], tensor_xxh64(expected)) << items[i].name;
  }
  // Large datasets keep the shard layout's 1 MiB alignment.
  EXPECT_EQ(f.open_dataset("model/fc.weight").storage_offset() % (1 << 20), 0);
  f.close();
  // A second fill with other values of the same layout overwrites every byte.
  const auto again = some_items(2);
  ASSERT_TRUE(slab->fits(again));
  slab->fill(again);
  h5::File g = h5::File::open(path);
  EXPECT_TRUE(g.read_tensor("model/fc.weight").equal(again[0].data.contiguous()));
  EXPECT_EQ(slab->hashes()[0], tensor_xxh64(again[0].data.contiguous()));
  stdfs::remove_all(dir);
}

TEST(ShardSlabTest, FitsOnlyTheSameNamesDtypesAndShapesAndKnowsItsFile) {
  const std::string dir = make_temp_dir("slab");
  const std::string path = dir + "/s.h5";
  auto items = some_items(1);
  auto slab = ShardSlab::create(path, items);
  EXPECT_TRUE(slab->fits(items));
  EXPECT_TRUE(slab->is_file_at(path));
  auto other = items;
  other[1].data = at::arange(8, at::kDouble);
  EXPECT_FALSE(slab->fits(other));
  other = items;
  other[1].data = other[1].data.to(at::kFloat);
  EXPECT_FALSE(slab->fits(other));
  other = items;
  other[2].name = "optimizer/other";
  EXPECT_FALSE(slab->fits(other));
  other = items;
  other.pop_back();
  EXPECT_FALSE(slab->fits(other));
  EXPECT_THROW(slab->fill(other), Error);
  // Renamed: still its file under the new name; replaced by another file: not.
  stdfs::rename(path, dir + "/moved.h5");
  EXPECT_FALSE(slab->is_file_at(path));
  EXPECT_TRUE(slab->is_file_at(dir + "/moved.h5"));
  stdfs::copy_file(dir + "/moved.h5", path);
  EXPECT_FALSE(slab->is_file_at(path));
  stdfs::remove_all(dir);
}

TEST(ShardSlabTest, ASlabWithoutSpaceIsAnErrorNamingTheFile) {
  const std::string dir = make_temp_dir("slab");
  const std::string path = dir + "/s.h5";
  // RLIMIT_FSIZE stands in for a full tier: the space is refused at creation, as an
  // error naming the file. In a child process: HDF5 cannot close a file whose close
  // failed, and retries at exit (a crash in its atexit handler, not ours).
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_EXIT(
      {
        struct rlimit small {};
        ::getrlimit(RLIMIT_FSIZE, &small);
        small.rlim_cur = 512 << 10;
        ::signal(SIGXFSZ, SIG_IGN);
        ::setrlimit(RLIMIT_FSIZE, &small);
        try {
          ShardSlab::create(path, {{"w", at::zeros({1024, 1024}), std::nullopt}});
        } catch (const CheckpointError& e) {
          std::fprintf(stderr, "%s\n", e.what());
          std::_Exit(0);
        }
        std::_Exit(1);
      },
      ::testing::ExitedWithCode(0), "s\\.h5");
  // An existing file is never written over.
  stdfs::remove(path);
  { std::ofstream(path) << "precious"; }
  EXPECT_THROW(ShardSlab::create(path, some_items(1)), CheckpointError);
  EXPECT_EQ(fs::read_file(path), "precious");
  stdfs::remove_all(dir);
}

// adopt()'s error for `path` and `items`, or "" when it took the file over.
std::string AdoptError(const std::string& path, const std::vector<ShardItem>& items) {
  try {
    ShardSlab::adopt(path, items);
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "";
}

TEST(ShardSlabTest, AnEarlierProcesssShardFileIsTakenOverAndFilledBitwise) {
  // A resumed run's prune hands it the previous process's shard file: mapped again,
  // not created anew.
  const std::string dir = make_temp_dir("slab");
  const std::string path = dir + "/s.h5";
  ShardSlab::create(path, some_items(1))->fill(some_items(1));
  struct stat before {};
  ASSERT_EQ(::stat(path.c_str(), &before), 0);
  const auto items = some_items(2);
  auto slab = ShardSlab::adopt(path, items);
  EXPECT_TRUE(slab->is_file_at(path));
  EXPECT_TRUE(slab->fits(items));
  EXPECT_EQ(slab->bytes(), before.st_size);
  slab->fill(items);
  const auto hashes = slab->hashes();
  h5::File f = h5::File::open(path);
  for (size_t i = 0; i < items.size(); ++i) {
    const at::Tensor expected = items[i].data.resolve_neg().contiguous();
    EXPECT_TRUE(f.read_tensor(items[i].name).equal(expected)) << items[i].name;
    EXPECT_EQ(hashes[i], tensor_xxh64(expected)) << items[i].name;
  }
  stdfs::remove_all(dir);
}

TEST(ShardSlabTest, AShardFileIsNotTakenOverUnlessEveryDatasetFitsAndLiesInsideIt) {
  const std::string dir = make_temp_dir("slab");
  const std::string path = dir + "/s.h5";
  const auto items = some_items(1);
  ShardSlab::create(path, items)->fill(items);
  const std::string original = fs::read_file(path);
  auto other = items;
  other[1].data = at::arange(8, at::kDouble);
  EXPECT_THAT(AdoptError(path, other), HasSubstr("'" + path + "' cannot be reused: dataset 'model/fc.bias' has shape [7], not [8]"));
  other = items;
  other[3].data = other[3].data.to(at::kByte);
  EXPECT_THAT(AdoptError(path, other), HasSubstr("dataset 'extra/mask' holds bool, not Byte"));
  other = items;
  other[5].data = at::empty({0, 4}, at::kDouble);  // no bytes: the dtype is still checked
  EXPECT_THAT(AdoptError(path, other), HasSubstr("dataset 'extra/empty' holds float32, not Double"));
  other = items;
  other[2].name = "optimizer/other";
  EXPECT_THAT(AdoptError(path, other), AllOf(HasSubstr(path), HasSubstr("optimizer/other")));
  // A dataset the state no longer has (a buffer dropped from the model): every shard
  // written through the file would carry it on.
  other = items;
  other.erase(other.begin() + 3);
  EXPECT_THAT(AdoptError(path, other), HasSubstr("it holds 'extra/mask', which the state has not"));
  other.erase(other.begin() + 2);  // a whole group
  EXPECT_THAT(AdoptError(path, other), HasSubstr("it holds 'optimizer', which the state has not"));
  EXPECT_EQ(fs::read_file(path), original);  // refusing changes nothing

  // Cut short inside the large dataset (HDF5 sees that its end is gone).
  const std::string cut = dir + "/cut.h5";
  stdfs::copy_file(path, cut);
  stdfs::resize_file(cut, (1 << 20) + 100);
  EXPECT_THAT(AdoptError(cut, items), AllOf(HasSubstr("'" + cut + "' cannot be reused"), HasSubstr("truncated file")));
  // Grown (sparse): mapping it would take more of the tier than a new file.
  const std::string grown = dir + "/grown.h5";
  stdfs::copy_file(path, grown);
  stdfs::resize_file(grown, int64_t{64} << 20);
  EXPECT_THAT(AdoptError(grown, items), HasSubstr("it holds 67108864 bytes, more than a new file for its 7 datasets"));
  EXPECT_EQ(stdfs::file_size(grown), uint64_t{64} << 20);
  // Not contiguous (chunked), not HDF5.
  const std::string chunked = dir + "/chunked.h5";
  {
    h5::File f = h5::File::create(chunked);
    f.create_dataset("w", h5::datatype_for(at::kFloat), {64, 4}, {8, 4});
  }
  EXPECT_THAT(AdoptError(chunked, {{"w", at::zeros({64, 4}), std::nullopt}}),
              HasSubstr("dataset 'w' is not stored as contiguous, allocated Float data"));
  const std::string text = dir + "/text.h5";
  { std::ofstream(text) << "precious"; }
  EXPECT_THAT(AdoptError(text, items), HasSubstr("'" + text + "' cannot be reused"));
  EXPECT_EQ(fs::read_file(text), "precious");
  stdfs::remove_all(dir);
}

// Items alternating large (>= 64 KiB) and small, as a model's weights and biases do.
std::vector<ShardItem> interleaved_items() {
  std::vector<ShardItem> items;
  for (int i = 0; i < 4; ++i) {
    items.push_back({"model/l" + std::to_string(i) + ".weight", at::full({130, 130}, float(i)), std::nullopt});
    items.push_back({"model/l" + std::to_string(i) + ".bias", at::full({130}, float(i)), std::nullopt});
    items.push_back({"model/l" + std::to_string(i) + ".scale", at::full({3}, double(i)), std::nullopt});
  }
  return items;
}

// write_shard lays a shard out for a front-to-back read (shard_layout_order): every
// object header, then the small datasets together, then the large ones in item order,
// each on a 1 MiB boundary. A slab (its space allocated as each dataset is created) has
// a large dataset's header before its data, but the same order of data.
void ExpectReadingLayout(const std::string& path, const std::vector<ShardItem>& items, bool headers_first) {
  h5::File f = h5::File::open(path);
  int64_t last_header = 0, last_small_end = 0, previous_large = -1;
  for (const auto& item : items) {
    H5O_info_t info;
    ASSERT_GE(H5Oget_info_by_name2(f.id(), item.name.c_str(), &info, H5O_INFO_BASIC, H5P_DEFAULT), 0);
    last_header = std::max<int64_t>(last_header, static_cast<int64_t>(info.addr));
    const int64_t bytes = item.data.numel() * static_cast<int64_t>(item.data.element_size());
    if (bytes < (64 << 10)) {
      last_small_end = std::max(last_small_end, f.open_dataset(item.name).storage_offset() + bytes);
    }
  }
  if (headers_first) {
    EXPECT_LT(last_header, 1 << 20);
  }
  for (const auto& item : items) {
    const int64_t bytes = item.data.numel() * static_cast<int64_t>(item.data.element_size());
    if (bytes < (64 << 10)) continue;
    const int64_t offset = f.open_dataset(item.name).storage_offset();
    EXPECT_EQ(offset % (1 << 20), 0) << item.name;
    EXPECT_GT(offset, last_small_end) << item.name;
    EXPECT_GT(offset, previous_large) << item.name << " is not in item order";
    previous_large = offset;
  }
  if (headers_first) {
    EXPECT_GE(last_small_end, last_header);
  }
}

TEST(ShardLayoutTest, WriteShardAndSlabsPutHeadersThenSmallDatasetsThenLargeOnesInOrder) {
  const std::string dir = make_temp_dir("layout");
  const auto items = interleaved_items();
  CollectedState state;
  for (const auto& item : items) state.per_rank.emplace_back(item.name, item.data);
  write_shard(dir + "/written.h5", 0, state, {});
  ExpectReadingLayout(dir + "/written.h5", items, /*headers_first=*/true);
  auto slab = ShardSlab::create(dir + "/mapped.h5", items);
  slab->fill(items);
  ExpectReadingLayout(dir + "/mapped.h5", items, /*headers_first=*/false);
  stdfs::remove_all(dir);
}

}  // namespace
}  // namespace dtrain::checkpoint
