// FaultInjectionEnv: an Env (runtime/base/env.h) that loses power on command, for
// in-process crash-point sweeps (LevelDB's FaultInjectionTestEnv, over DurableModel's
// rules). Files live in a real directory `root` (the "page cache": everything lands there
// at once, so reads and HDF5 see it); a DurableModel of `root` records what a disk would
// hold: a file's content once it is synced, a directory's entries once it is synced.
//
//   FaultInjectionEnv env(root);
//   env.cut_at(17);                 // mutation 17 and every later one fail: power is off
//   ... save through a Checkpointer whose options.env is &env; it throws ...
//   env.write_image(image);         // the tree as the disk holds it after the cut
//   ... resume from image with the real file system ...
//
// Counted as mutations (crash points): write_new_file, create_dir, sync, rename,
// exchange, remove_file, remove_tree (a whole rm -r is one: none of its unlinks is durable
// before its directory is synced, which nothing does, so a cut half-way equals a cut
// before it). Bulk writes that do not go through the Env (HDF5's shard writes) are not
// crash points here; they are durable at the sync of their file. Torn writes and the
// kernel's view are the FUSE file system's job (powercut_fs.cpp).
//
// drop_sync(name, n) turns one sync into a no-op that reports success: the mutation test
// of one fsync. Syncs do not reach the real disk (the model decides what is durable), so
// a sweep costs milliseconds per point. Thread-safe (one mutex; ThreadWorld ranks and
// the save protocol's helper threads use it at once).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/base/env.h"
#include "runtime/base/error.h"
#include "tests/powercut/durable_model.h"

namespace dtrain::powercut {

// What every mutation of a FaultInjectionEnv throws once its power is cut: an I/O error
// to the code under test.
class PowerCut : public Error {
 public:
  using Error::Error;
};

class FaultInjectionEnv final : public Env {
 public:
  // `root`: an existing directory; everything in it is durable now.
  explicit FaultInjectionEnv(std::string root);

  // Mutation `n` (1-based, counted from construction) and every later one throw PowerCut
  // and change nothing. 0 (the default): never.
  void cut_at(int64_t n);
  // The `nth` (1-based) sync of the path whose stable_name() is `name` makes nothing
  // durable (and reports success). Names, not positions, pick it: threads (the tag's
  // write beside the directory's sync) order the syncs differently from run to run.
  void drop_sync(const std::string& name, int64_t nth);
  // `rel` (relative to root) with the random part of temporary names (".tmp-<id>",
  // ".deleting-<id>", ".part-<id>") replaced by '*': the same in every run.
  static std::string stable_name(const std::string& rel);
  // Mutation `n` fails with `err` (ENOSPC, EIO) instead of happening: it throws
  // dtrain::Error "cannot <op> '<path>': <strerror(err)>" and changes nothing; with
  // `sticky`, every later mutation fails too (a disk that stays full). The power stays
  // on. 0: never.
  void fail_at(int64_t n, int err, bool sticky = false);
  // The path of the first mutation that failed by fail_at ("" if none).
  std::string failed_path() const;
  // Whether the power is off (a mutation reached the cut).
  bool power_cut() const;
  // Mutations performed (not counting the one that met the cut).
  int64_t mutations() const;
  // One line per mutation performed: "<kind> <path>[ -> <path>]", paths relative to root.
  std::vector<std::string> log() const;
  // Writes the durable tree into `image` (an empty or missing directory).
  void write_image(const std::string& image) const;

  FileType type_of(const std::string& path) override;
  std::vector<std::string> children(const std::string& dir) override;
  std::string read_file(const std::string& path, const fs::ReadOptions& options) override;
  void write_new_file(const std::string& path, const std::string& content) override;
  bool create_dir(const std::string& path, DirAccess access) override;
  void sync(const std::string& path) override;
  void rename(const std::string& from, const std::string& to) override;
  bool exchange(const std::string& a, const std::string& b) override;
  void remove_file(const std::string& path) override;
  void remove_tree(const std::string& path) override;

 private:
  // `path` relative to root ("/..."); throws for a path outside root.
  std::string relative(const std::string& path) const;
  // Under mu_: counts a mutation on `path` (throws PowerCut at the cut, Error at a
  // failure) and logs it.
  void begin(const std::string& line, const std::string& path);
  // Under mu_: the model forgets every inode under `rel` (about to be removed).
  void forget_tree(const std::string& rel);

  mutable std::mutex mu_;
  std::string root_;
  DurableModel model_;
  Env& real_;
  int64_t cut_at_ = 0;
  std::string drop_name_;
  int64_t drop_nth_ = 0;
  std::map<std::string, int64_t> syncs_;  // by stable name
  bool off_ = false;
  int64_t fail_at_ = 0;
  int fail_errno_ = 0;
  bool fail_sticky_ = false;
  std::string failed_path_;
  std::vector<std::string> log_;
};

}  // namespace dtrain::powercut
