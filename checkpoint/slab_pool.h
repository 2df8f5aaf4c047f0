// A rank's shard files of the local tier when it writes through mappings
// (LocalWrite::kMapped, shard_slab.h): at most `capacity` (LOCAL.KEEP + 1: the kept
// snapshots' and the one being written) mapped files, reused in turn. The tier's prune
// renames the shard file of a snapshot it deletes to the rank's spare path; the next
// snapshot takes that file back. Until the rank holds `capacity` files there is no
// spare, and a snapshot would create its file in the stall (HDF5's datasets, the tier's
// pages allocated and zeroed: ~70 ms for 89 MB here, against a ~9 ms copy): so after a
// snapshot took its file, the next one's is created ahead on a background thread, while
// training runs the following step. A resumed run's prune renames the previous process's
// shard files to the spare path: they are taken over (mapped again, after checking that
// their datasets fit) rather than created anew, on the background thread too where a
// step comes between the prune and the next snapshot (prepare_takeover).
//
//   SlabPool pool(env, spare_path, ahead_path, keep + 1);
//   auto slab = pool.take(items, shard_path);  // in the stall: spare, ahead, or new
//   pool.prepare_next(background_pool, spare_coming);  // then, right after
//   pool.prepare_takeover(background_pool);  // at a step after the commit's prune
//
// Thread-safety: not thread-safe; call from one thread (the tier's). The only work on
// the background thread is the creation ahead, which touches nothing but its own file,
// or the takeover ahead, which maps the spare (or removes it and creates a file at the
// ahead path, if it does not fit). The caller must not rename anything to the spare
// path while a takeover runs: the tier calls settle() before each commit, the only
// place it prunes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/format.h"
#include "checkpoint/shard_slab.h"
#include "runtime/base/env.h"

namespace boost::asio {
class thread_pool;
}  // namespace boost::asio

namespace dtrain::checkpoint {

class SlabPool {
 public:
  // `spare_path`: where the tier's prune puts this rank's shard file of a deleted
  // snapshot; `ahead_path`: where a file is created ahead. Both are the rank's own.
  SlabPool(Env& env, std::string spare_path, std::string ahead_path, size_t capacity);
  ~SlabPool();  // waits for the work ahead; removes a file created ahead, keeps the spare
  SlabPool(const SlabPool&) = delete;
  SlabPool& operator=(const SlabPool&) = delete;

  // The mapped shard file for `items`, renamed (or created) to `path`, which must not
  // exist: the spare if it is one of this pool's files and fits; else the spare if it is
  // a shard file this pool has not mapped (an earlier process's: a resumed run's prune)
  // that ShardSlab::adopt accepts for `items` (taken over ahead if prepare_first or
  // prepare_takeover started it: it must still be the file at the spare path); else the
  // file created ahead if it fits; else a new one (throws CheckpointError naming `path`,
  // e.g. the tier is full). Waits for the work ahead still running. A spare or ahead
  // file not used is removed. The pool then holds the returned file as its newest.
  std::shared_ptr<ShardSlab> take(const std::vector<ShardItem>& items, const std::string& path);
  // When the next take() would find no spare (the pool holds fewer than `capacity`
  // files, none is at the spare path, and the caller's next commit will not prune one
  // there: `spare_coming()` false), starts creating a file like the newest one at the
  // ahead path on `pool`. So the tier never holds more than `capacity` files of this
  // rank. `spare_coming` is called only when the pool is not full (it may list a
  // directory); if it throws, nothing is created. A failure is only remembered (never
  // thrown: this is an optimisation): take() then creates in the stall, and reports
  // that error if it fails too.
  void prepare_next(boost::asio::thread_pool& pool, const std::function<bool()>& spare_coming) noexcept;
  // Before the first take(): when the pool holds no file and none is being made, starts
  // on `pool`, for `items`' layout (names, dtypes and shapes only: no tensor of theirs
  // is kept), taking over the file at the spare path (a resumed run's) if there is one,
  // else creating a file at the ahead path; so that the first take() need not do either
  // in its stall. A spare that cannot be taken over (another layout: a resharded
  // resume) is removed and a file created instead. Like prepare_next, a failure is only
  // remembered. Returns whether it started one.
  bool prepare_first(boost::asio::thread_pool& pool, const std::vector<ShardItem>& items) noexcept;
  // When the pool is not full and nothing is being made, and the file at the spare path
  // is none of the pool's (an earlier process's, put there by a resumed run's prune),
  // starts taking it over on `pool` for the newest file's layout, so that the next
  // take() need not in its stall (or, if it does not fit, replacing it as prepare_first
  // does). Costs nothing once the pool is full (then every spare is its own). Returns
  // whether it started.
  bool prepare_takeover(boost::asio::thread_pool& pool) noexcept;
  // Waits for a takeover ahead to finish (keeping its result for the next take()):
  // before anything renames a file to the spare path. A creation ahead goes on.
  void settle() noexcept;
  // Forgets `slab` (a snapshot that failed: its file goes with its directory).
  void drop(const std::shared_ptr<ShardSlab>& slab) noexcept;
  // Forgets every file, waits for the work ahead and removes the spare and ahead
  // files (this rank will not write through the pool: they would hold the tier's
  // memory). Never throws: a file it cannot remove stays.
  void release() noexcept;

  // How this pool's files came to be: created in the stall of a snapshot, or ahead.
  int64_t created_in_stall() const { return created_in_stall_; }
  int64_t created_ahead() const { return created_ahead_; }
  // Spares of an earlier process taken over (ShardSlab::adopt) instead of created, and
  // how many of those were taken over ahead (prepare_first, prepare_takeover).
  int64_t adopted() const { return adopted_; }
  int64_t adopted_ahead() const { return adopted_ahead_; }

 private:
  // The file created ahead (nullptr if none or it failed), after waiting for it.
  std::shared_ptr<ShardSlab> collect_ahead() noexcept;
  // The spare mapped with ShardSlab::adopt, or nullptr (none, or it does not fit).
  std::shared_ptr<ShardSlab> adopt_spare(const std::vector<ShardItem>& items);
  void remove_if_file(const std::string& path);
  void keep_newest(std::shared_ptr<ShardSlab> slab);
  // Posts the creation of a file of `layout` at the ahead path on `pool`, unless a file
  // is at the spare or the ahead path.
  bool create_ahead(boost::asio::thread_pool& pool, std::vector<ShardItem> layout) noexcept;
  // Posts ShardSlab::adopt of the spare for `layout` on `pool`; a file that does not fit
  // is removed there and a file of `layout` created at the ahead path instead.
  bool adopt_ahead(boost::asio::thread_pool& pool, std::vector<ShardItem> layout) noexcept;
  // Whether a regular file is at the spare path and none of slabs_ is it.
  bool foreign_spare() const;
  // Runs `make` on `pool` as ahead_ (throws if it cannot be posted).
  void post_ahead(boost::asio::thread_pool& pool, std::function<std::shared_ptr<ShardSlab>()> make, bool adopts);

  Env& env_;
  std::string spare_path_, ahead_path_;
  size_t capacity_;
  std::vector<std::shared_ptr<ShardSlab>> slabs_;  // oldest first
  std::future<std::shared_ptr<ShardSlab>> ahead_;
  bool ahead_adopts_ = false;  // ahead_ takes the spare over (else: creates at the ahead path)
  std::string ahead_error_;  // of the last creation ahead that failed
  int64_t created_in_stall_ = 0;
  int64_t created_ahead_ = 0;
  int64_t adopted_ = 0;
  int64_t adopted_ahead_ = 0;
};

}  // namespace dtrain::checkpoint
