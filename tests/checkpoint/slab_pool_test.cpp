// A rank's mapped shard files of the local tier (checkpoint/slab_pool.h): the file of
// the next snapshot is created ahead on a background thread until the pool holds
// LOCAL.KEEP + 1 files, then the spares the prune leaves are reused; a file created
// ahead that does not fit, or a creation ahead that failed, falls back to creating in
// the stall, whose error then says both; an earlier process's spare that fits is taken
// over, on the background thread where a step comes first.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <fmt/format.h>

#include "checkpoint/shard_slab.h"
#include "checkpoint/slab_pool.h"
#include "runtime/base/error.h"
#include "runtime/h5/h5.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint {
namespace {

namespace stdfs = std::filesystem;
using namespace testing;  // NOLINT: test helpers

std::vector<ShardItem> model_items(float value, int64_t rows = 300) {
  return {{"model/w", at::full({rows, 257}, value), std::nullopt},  // > 64 KiB
          {"model/b", at::full({7}, double(value)), std::nullopt},
          {"optimizer/step", at::scalar_tensor(int64_t{42}), std::nullopt}};
}

std::pair<uint64_t, uint64_t> file_id(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return {st.st_dev, st.st_ino};
}

// Waits until the (one-thread) pool ran everything posted before.
void drain(boost::asio::thread_pool& pool) {
  std::packaged_task<void()> task([] {});
  auto done = task.get_future();
  boost::asio::post(pool, std::move(task));
  done.wait();
}

// Each test: a pool of KEEP 2 + 1 files in a fresh directory, with the tier's one
// background thread.
class SlabPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = make_temp_dir("slabpool");
    pool_ = std::make_unique<SlabPool>(Env::posix(), at(".spare"), at(".ahead"), 3);
  }
  void TearDown() override {
    pool_.reset();
    stdfs::remove_all(dir_);
  }
  std::string at(const std::string& name) const { return dir_ + "/" + name; }
  // prepare_next, then waits until the background thread ran it.
  void PrepareNext(bool spare_coming = false) {
    pool_->prepare_next(background_, [=] { return spare_coming; });
    drain(background_);
  }

  std::string dir_;
  boost::asio::thread_pool background_{1};
  std::unique_ptr<SlabPool> pool_;  // declared after background_: destroyed first
};

TEST_F(SlabPoolTest, TheNextFilesAreCreatedAheadUntilKeepPlusOneThenSparesAreReused) {
  const auto items = model_items(1.0F);
  auto s0 = pool_->take(items, at("s0.h5"));
  EXPECT_EQ(pool_->created_in_stall(), 1);
  std::vector<std::pair<uint64_t, uint64_t>> files{file_id(at("s0.h5"))};
  for (int i = 1; i <= 2; ++i) {
    PrepareNext();
    ASSERT_TRUE(stdfs::is_regular_file(at(".ahead"))) << i;
    const auto ahead = file_id(at(".ahead"));
    const std::string path = at("s" + std::to_string(i) + ".h5");
    auto slab = pool_->take(items, path);
    EXPECT_EQ(file_id(path), ahead) << "snapshot " << i << " did not take the file created ahead";
    EXPECT_FALSE(stdfs::exists(at(".ahead")));
    files.push_back(ahead);
    // A file created ahead is a shard like any other once filled.
    const auto values = model_items(float(i) + 0.5F);
    slab->fill(values);
    h5::File f = h5::File::open(path);
    EXPECT_TRUE(at::equal(f.read_tensor("model/w"), values[0].data));
    EXPECT_TRUE(at::equal(f.read_tensor("model/b"), values[1].data));
  }
  EXPECT_EQ(pool_->created_in_stall(), 1);
  EXPECT_EQ(pool_->created_ahead(), 2);
  // Three files held (KEEP 2 + 1): nothing more is created; the prune's spare serves.
  PrepareNext();
  EXPECT_FALSE(stdfs::exists(at(".ahead")));
  stdfs::rename(at("s0.h5"), at(".spare"));
  pool_->take(items, at("s3.h5"));
  EXPECT_EQ(file_id(at("s3.h5")), files[0]);
  EXPECT_EQ(pool_->created_in_stall(), 1);
  EXPECT_EQ(pool_->created_ahead(), 2);
  // With a spare there, nothing is created ahead either.
  stdfs::rename(at("s1.h5"), at(".spare"));
  pool_->drop(s0);  // s3's file now: as if that snapshot had failed

  PrepareNext();
  EXPECT_FALSE(stdfs::exists(at(".ahead")));
}

TEST_F(SlabPoolTest, TheFirstFileIsCreatedAheadFromTheStatesLayoutWithoutKeepingItsTensors) {
  // Between snapshots before the first one, the state's layout is known: the first take
  // finds its file made, and creates none in its stall.
  auto items = model_items(1.0F);
  const long uses = items[0].data.use_count();
  ASSERT_TRUE(pool_->prepare_first(background_, items));
  EXPECT_EQ(items[0].data.use_count(), uses) << "the creation ahead holds the live tensors";
  EXPECT_FALSE(pool_->prepare_first(background_, items)) << "one creation at a time";
  drain(background_);
  ASSERT_TRUE(stdfs::is_regular_file(at(".ahead")));
  const auto ahead = file_id(at(".ahead"));
  auto slab = pool_->take(items, at("s0.h5"));
  EXPECT_EQ(file_id(at("s0.h5")), ahead);
  EXPECT_EQ(pool_->created_in_stall(), 0);
  EXPECT_EQ(pool_->created_ahead(), 1);
  slab->fill(items);
  {
    h5::File f = h5::File::open(at("s0.h5"));
    EXPECT_TRUE(at::equal(f.read_tensor("model/w"), items[0].data));
    EXPECT_TRUE(at::equal(f.read_tensor("optimizer/step"), items[2].data));
  }
  EXPECT_FALSE(pool_->prepare_first(background_, items)) << "the pool holds a file: prepare_next's turn";
  // The next files come from prepare_next, as before: KEEP + 1 in all.
  PrepareNext();
  pool_->take(items, at("s1.h5"));
  EXPECT_EQ(pool_->created_ahead(), 2);
}

TEST_F(SlabPoolTest, AFirstFileOfAnotherLayoutIsRemovedAndAnEarlierSpareIsTakenOverInstead) {
  // The state grew after the layout was offered (an optimizer's state made lazily): the
  // file ahead does not fit, the first take creates its own and removes it.
  ASSERT_TRUE(pool_->prepare_first(background_, model_items(1.0F, 100)));
  drain(background_);
  pool_->take(model_items(1.0F), at("s0.h5"));
  EXPECT_EQ(pool_->created_in_stall(), 1);
  EXPECT_EQ(pool_->created_ahead(), 0);
  EXPECT_FALSE(stdfs::exists(at(".ahead")));
  // A resumed run's spare is there: it is taken over (ahead), nothing is created.
  SlabPool resumed(Env::posix(), at(".spare"), at(".ahead"), 3);
  ShardSlab::create(at(".spare"), model_items(1.0F));
  EXPECT_TRUE(resumed.prepare_first(background_, model_items(1.0F)));
  drain(background_);
  EXPECT_FALSE(stdfs::exists(at(".ahead")));
  resumed.take(model_items(1.0F), at("r0.h5"));
  EXPECT_EQ(resumed.adopted(), 1);
  EXPECT_EQ(resumed.adopted_ahead(), 1);
  EXPECT_EQ(resumed.created_ahead() + resumed.created_in_stall(), 0);
}

// Overwrites the HDF5 signature at the start of `path` (same size, same inode): HDF5
// can no longer open it, a mapping made before sees only those bytes change.
void spoil_signature(const std::string& path, const char* with = "XXXXXXXX") {
  std::FILE* f = std::fopen(path.c_str(), "r+b");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(std::fwrite(with, 1, 8, f), 8U);
  std::fclose(f);
}

TEST_F(SlabPoolTest, AResumedRunsSparesAreTakenOverAheadAndItsTakesOnlyRenameThem) {
  // The previous process left KEEP 2 snapshots and a spare; each commit of the resumed
  // run prunes one of its snapshots, whose file becomes the spare. prepare_first and
  // then prepare_takeover map each on the background thread: the take that follows
  // opens nothing (its signature spoiled after the takeover ahead does not matter), the
  // data it is filled with reads back bitwise.
  const auto items = model_items(1.0F);
  std::vector<std::pair<uint64_t, uint64_t>> old_files;
  for (const char* name : {"old0.h5", "old1.h5", ".spare"}) {
    ShardSlab::create(at(name), items)->fill(model_items(9.0F));
    old_files.push_back(file_id(at(name)));
  }
  EXPECT_FALSE(pool_->prepare_takeover(background_)) << "no layout yet: prepare_first's turn";
  ASSERT_TRUE(pool_->prepare_first(background_, items));
  for (int i = 0; i < 3; ++i) {
    if (i > 0) {
      stdfs::rename(at(fmt::format("old{}.h5", i - 1)), at(".spare"));  // the commit's prune
      ASSERT_TRUE(pool_->prepare_takeover(background_)) << i;
      EXPECT_FALSE(pool_->prepare_takeover(background_)) << "one at a time";
    }
    drain(background_);
    spoil_signature(at(".spare"));
    const std::string path = at(fmt::format("s{}.h5", i));
    auto slab = pool_->take(items, path);
    EXPECT_EQ(file_id(path), old_files[i == 0 ? 2 : i - 1]) << i;
    EXPECT_EQ(pool_->adopted(), i + 1);
    EXPECT_EQ(pool_->adopted_ahead(), i + 1) << "snapshot " << i << " took its file over in the stall";
    spoil_signature(path, "\x89HDF\r\n\x1a\n");
    const auto values = model_items(float(i) + 0.5F);
    slab->fill(values);
    h5::File f = h5::File::open(path);
    EXPECT_TRUE(at::equal(f.read_tensor("model/w"), values[0].data)) << i;
    EXPECT_TRUE(at::equal(f.read_tensor("optimizer/step"), values[2].data)) << i;
  }
  EXPECT_EQ(pool_->created_in_stall() + pool_->created_ahead(), 0);
  // The pool holds KEEP + 1 files: every later spare is its own, nothing is looked at.
  stdfs::rename(at("s0.h5"), at(".spare"));
  EXPECT_FALSE(pool_->prepare_takeover(background_));
  pool_->take(items, at("s3.h5"));
  EXPECT_EQ(pool_->adopted(), 3);
}

TEST_F(SlabPoolTest, ASpareThatCannotBeTakenOverIsReplacedAheadByAFileOfTheLayout) {
  // A resharded resume: the previous run's spare holds another world size's rows. The
  // background removes it and creates this layout's file instead; the take finds it.
  const auto items = model_items(1.0F);
  ShardSlab::create(at(".spare"), model_items(1.0F, 150));
  ASSERT_TRUE(pool_->prepare_first(background_, items));
  drain(background_);
  EXPECT_FALSE(stdfs::exists(at(".spare")));
  ASSERT_TRUE(stdfs::is_regular_file(at(".ahead")));
  const auto ahead = file_id(at(".ahead"));
  pool_->take(items, at("s0.h5"));
  EXPECT_EQ(file_id(at("s0.h5")), ahead);
  EXPECT_EQ(pool_->created_ahead(), 1);
  EXPECT_EQ(pool_->created_in_stall() + pool_->adopted(), 0);
  // After a commit: a spare HDF5 cannot open is replaced the same way.
  EXPECT_FALSE(pool_->prepare_takeover(background_)) << "no spare";
  stdfs::copy_file(at("s0.h5"), at(".spare"));  // not the pool's own file, and it fits
  spoil_signature(at(".spare"));                // ... until HDF5 cannot open it
  ASSERT_TRUE(pool_->prepare_takeover(background_));
  drain(background_);
  EXPECT_FALSE(stdfs::exists(at(".spare")));
  pool_->take(items, at("s1.h5"));
  EXPECT_EQ(pool_->created_ahead(), 2);
  EXPECT_EQ(pool_->created_in_stall() + pool_->adopted(), 0);
}

TEST_F(SlabPoolTest, ASpareTakenOverAheadIsUsedOnlyIfItIsStillThereAndFits) {
  const auto items = model_items(1.0F);
  pool_->take(items, at("s0.h5"));
  auto foreign_spare = [&](int rows) {
    ShardSlab::create(at("old.h5"), model_items(1.0F, rows));
    stdfs::rename(at("old.h5"), at(".spare"));
    ASSERT_TRUE(pool_->prepare_takeover(background_));
    drain(background_);
  };
  // Replaced after it was taken over (another inode at the spare path): not trusted,
  // removed; the snapshot creates its own file.
  foreign_spare(300);
  stdfs::copy_file(at(".spare"), at("copy.h5"));
  stdfs::rename(at("copy.h5"), at(".spare"));
  pool_->take(items, at("s1.h5"));
  EXPECT_FALSE(stdfs::exists(at(".spare")));
  EXPECT_EQ(pool_->adopted(), 0);
  EXPECT_EQ(pool_->created_in_stall(), 2);
  // Taken over for the newest layout, but the state grew since (a resized embedding).
  pool_->drop(pool_->take(items, at("s2.h5")));  // room in the pool again
  EXPECT_EQ(pool_->created_in_stall(), 3);
  foreign_spare(300);
  pool_->take(model_items(1.0F, 301), at("s3.h5"));
  EXPECT_FALSE(stdfs::exists(at(".spare")));
  EXPECT_EQ(pool_->adopted(), 0);
  EXPECT_EQ(pool_->created_in_stall(), 4);
}

// Posts a task that blocks `pool`'s one thread until the returned promise is set.
std::promise<void> block(boost::asio::thread_pool& pool) {
  std::promise<void> gate;
  boost::asio::post(pool, [opened = gate.get_future().share()] { opened.wait(); });
  return gate;
}

TEST_F(SlabPoolTest, APoolDestroyedOrReleasedWhileATakeoverRunsKeepsOrRemovesTheSpare) {
  // Destroyed: the spare stays the spare for the next process, and a file a refused
  // takeover created goes. Released (this rank will not write through the pool):
  // the spare goes with the pool's files. Each while the takeover is still queued.
  const auto items = model_items(1.0F);
  auto destroy_during = [&](const std::vector<ShardItem>& layout) {
    std::promise<void> gate = block(background_);
    ASSERT_TRUE(pool_->prepare_first(background_, layout));
    std::thread opener([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      gate.set_value();
    });
    pool_.reset();
    opener.join();
    pool_ = std::make_unique<SlabPool>(Env::posix(), at(".spare"), at(".ahead"), 3);
  };
  ShardSlab::create(at(".spare"), items);
  destroy_during(items);
  EXPECT_TRUE(stdfs::is_regular_file(at(".spare")));
  EXPECT_FALSE(stdfs::exists(at(".ahead")));
  destroy_during(model_items(1.0F, 150));  // refused: replaced by a file of 150 rows
  EXPECT_FALSE(stdfs::exists(at(".spare")));
  EXPECT_FALSE(stdfs::exists(at(".ahead")));
  ShardSlab::create(at(".spare"), items);
  ASSERT_TRUE(pool_->prepare_first(background_, items));
  pool_->release();
  EXPECT_FALSE(stdfs::exists(at(".spare")));
  EXPECT_EQ(pool_->adopted(), 0);
}

TEST_F(SlabPoolTest, SettleWaitsForATakeoverAheadButNotForACreation) {
  // The tier settles before each commit, whose prune renames to the spare path: a
  // takeover still mapping the spare must be done; a creation at the ahead path may go
  // on into the next steps.
  const auto items = model_items(1.0F);
  pool_->take(items, at("s0.h5"));
  {
    // The thread stays blocked until settle() returns (or 2 s passed: then it waited).
    std::promise<void> gate = block(background_), returned;
    std::thread opener([&, settled = returned.get_future()] {
      settled.wait_for(std::chrono::seconds(2));
      gate.set_value();
    });
    pool_->prepare_next(background_, [] { return false; });
    const auto t0 = std::chrono::steady_clock::now();
    pool_->settle();
    const auto took = std::chrono::steady_clock::now() - t0;
    returned.set_value();
    opener.join();
    EXPECT_LT(took, std::chrono::seconds(2)) << "settle() waited for a creation ahead";
  }
  pool_->take(items, at("s1.h5"));
  EXPECT_EQ(pool_->created_ahead(), 1);
  ShardSlab::create(at("old.h5"), items);
  stdfs::rename(at("old.h5"), at(".spare"));
  std::promise<void> gate = block(background_);
  ASSERT_TRUE(pool_->prepare_takeover(background_));
  std::atomic<bool> opened{false};
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    opened = true;
    gate.set_value();
  });
  pool_->settle();
  const bool waited = opened;
  opener.join();
  EXPECT_TRUE(waited) << "settle() returned before the takeover ran";
  spoil_signature(at(".spare"));  // taken over already: the take only renames it
  pool_->take(items, at("s2.h5"));
  EXPECT_EQ(pool_->adopted_ahead(), 1);
}

TEST_F(SlabPoolTest, ATakeWhileTheCreationAheadStillRunsWaitsForItAndTakesThatFile) {
  // The snapshot after next comes before the background thread got to the creation (a
  // step shorter than creating a file): take() waits for it rather than creating a
  // second file in the stall.
  const auto items = model_items(1.0F);
  pool_->take(items, at("s0.h5"));
  std::promise<void> gate;
  boost::asio::post(background_, [opened = gate.get_future().share()] { opened.wait(); });
  pool_->prepare_next(background_, [] { return false; });  // queued behind the gate
  std::atomic<bool> gate_opened{false};
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    gate_opened = true;
    gate.set_value();
  });
  auto slab = pool_->take(items, at("s1.h5"));
  const bool waited = gate_opened;
  opener.join();
  EXPECT_TRUE(waited) << "take() returned before the creation ahead could run";
  EXPECT_EQ(pool_->created_ahead(), 1);
  EXPECT_EQ(pool_->created_in_stall(), 1);
  EXPECT_FALSE(stdfs::exists(at(".ahead")));
  ASSERT_TRUE(slab->is_file_at(at("s1.h5")));
  const auto values = model_items(2.5F);
  slab->fill(values);
  h5::File f = h5::File::open(at("s1.h5"));
  EXPECT_TRUE(at::equal(f.read_tensor("model/w"), values[0].data));
}

TEST_F(SlabPoolTest, NothingIsCreatedAheadWhenTheNextCommitPrunesASpare) {
  // A resumed run: the tier holds KEEP snapshots of the run before, so the commit of
  // each new one prunes one, whose file becomes the spare; one more file ahead would
  // make KEEP + 2 on the tier.
  pool_->take(model_items(1.0F), at("s0.h5"));
  PrepareNext(/*spare_coming=*/true);
  EXPECT_FALSE(stdfs::exists(at(".ahead")));
}

TEST_F(SlabPoolTest, WhetherASpareIsComingIsAskedOnlyWhenThePoolIsNotFull) {
  // The tier answers by listing its directory: not at every snapshot once the pool
  // holds KEEP + 1 files. An answer it cannot give (it throws) creates nothing.
  const auto items = model_items(1.0F);
  pool_->take(items, at("s0.h5"));
  pool_->prepare_next(background_, []() -> bool { throw CheckpointError("cannot list"); });
  drain(background_);
  EXPECT_FALSE(stdfs::exists(at(".ahead")));
  for (int i = 1; i <= 2; ++i) pool_->take(items, at("s" + std::to_string(i) + ".h5"));
  bool asked = false;
  pool_->prepare_next(background_, [&] {
    asked = true;
    return false;
  });
  drain(background_);
  EXPECT_FALSE(asked);
  EXPECT_FALSE(stdfs::exists(at(".ahead")));
}

TEST_F(SlabPoolTest, AnEarlierProcesssSpareIsTakenOverAndOneThatDoesNotFitIsReplaced) {
  // A resumed run: the prune renamed the previous process's shard file to the spare
  // path. The new pool has not mapped it, but it fits: taken over, nothing created.
  const auto items = model_items(1.0F);
  ShardSlab::create(at("old.h5"), items)->fill(model_items(9.0F));
  stdfs::rename(at("old.h5"), at(".spare"));
  const auto old_file = file_id(at(".spare"));
  auto slab = pool_->take(items, at("s0.h5"));
  EXPECT_EQ(file_id(at("s0.h5")), old_file);
  EXPECT_FALSE(stdfs::exists(at(".spare")));
  EXPECT_EQ(pool_->adopted(), 1);
  EXPECT_EQ(pool_->created_in_stall(), 0);
  const auto values = model_items(2.5F);
  slab->fill(values);
  {
    h5::File f = h5::File::open(at("s0.h5"));
    EXPECT_TRUE(at::equal(f.read_tensor("model/w"), values[0].data));
    EXPECT_TRUE(at::equal(f.read_tensor("model/b"), values[1].data));
  }
  // Once the pool holds it, a prune's spare of it is this pool's again (not adopted).
  stdfs::rename(at("s0.h5"), at(".spare"));
  pool_->take(items, at("s1.h5"));
  EXPECT_EQ(file_id(at("s1.h5")), old_file);
  EXPECT_EQ(pool_->adopted(), 1);
  // An earlier process's spare of another layout (a resized embedding) is removed, and
  // the file created in the stall.
  ShardSlab::create(at("old.h5"), model_items(1.0F, 301));
  stdfs::rename(at("old.h5"), at(".spare"));
  pool_->take(items, at("s2.h5"));
  EXPECT_FALSE(stdfs::exists(at(".spare")));
  EXPECT_EQ(pool_->adopted(), 1);
  EXPECT_EQ(pool_->created_in_stall(), 1);
}

TEST_F(SlabPoolTest, AFileCreatedAheadForAnotherLayoutIsRemovedAndANewOneCreated) {
  pool_->take(model_items(1.0F), at("s0.h5"));
  PrepareNext();
  ASSERT_TRUE(stdfs::exists(at(".ahead")));
  const auto grown = model_items(1.0F, 301);  // e.g. a resized embedding
  pool_->take(grown, at("s1.h5"));
  EXPECT_FALSE(stdfs::exists(at(".ahead")));
  EXPECT_EQ(pool_->created_in_stall(), 2);
  EXPECT_EQ(pool_->created_ahead(), 0);
  // release(): this rank stops writing through the pool; its spare and ahead files go.
  pool_->prepare_next(background_, [] { return false; });  // released while it may run
  pool_->release();
  EXPECT_FALSE(stdfs::exists(at(".ahead")));
  EXPECT_TRUE(stdfs::exists(at("s1.h5")));  // a snapshot's file stays with its snapshot
}

TEST_F(SlabPoolTest, AFailedCreationAheadFallsBackToTheStallWhoseErrorSaysBoth) {
  // RLIMIT_FSIZE stands in for a tier that filled up after the first snapshot. In a
  // child process, as in ShardSlabTest: HDF5 retries a failed close at exit.
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_EXIT(
      {
        const auto items = model_items(1.0F, 1024);  // a 1 MiB dataset
        pool_->take(items, at("s0.h5"));
        struct rlimit limit {};
        ::getrlimit(RLIMIT_FSIZE, &limit);
        const rlim_t unlimited = limit.rlim_cur;
        limit.rlim_cur = 512 << 10;
        ::signal(SIGXFSZ, SIG_IGN);
        ::setrlimit(RLIMIT_FSIZE, &limit);
        PrepareNext();
        try {
          pool_->take(items, at("s1.h5"));
        } catch (const CheckpointError& e) {
          std::fprintf(stderr, "%s\n", e.what());
          limit.rlim_cur = unlimited;
          ::setrlimit(RLIMIT_FSIZE, &limit);
          pool_->take(items, at("s2.h5"));  // space again: created in the stall
          const bool ok = pool_->created_in_stall() == 2 && pool_->created_ahead() == 0 &&
                          !stdfs::exists(at(".ahead")) && stdfs::is_regular_file(at("s2.h5"));
          std::_Exit(ok ? 0 : 2);
        }
        std::_Exit(1);
      },
      ::testing::ExitedWithCode(0), "s1\\.h5.*creating it ahead had failed too.*\\.ahead");
}

}  // namespace
}  // namespace dtrain::checkpoint
