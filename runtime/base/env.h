// Env: the file-system operations behind dtrain's durable writes (LevelDB's Env), so that
// a test can run the commit protocol, retention, last_checkpoint, `dtrain ckpt import`
// and the download cache over an Env that records what is durable and loses power at any
// operation (tests/powercut/fault_env.h), in milliseconds, at every crash point.
//
//   Env& env = Env::posix();                       // the process's real file system
//   fs::create_directories_durable(out, env);      // mkdir -p, each new entry fsynced
//   fs::write_file_atomic(out + "/last_checkpoint", "model_0000009", env);
//
// Only what decides durability goes through an Env: directories, renames, removals,
// fsyncs and small files. Bulk data (HDF5 shards, downloads) is written by its own code,
// and made durable by an Env::sync of the finished file.
//
// Every operation throws dtrain::Error naming the path and the cause. Env::posix() is
// stateless and thread-safe; an Env a test builds documents its own rules.
#pragma once

#include <string>
#include <vector>

#include "runtime/base/fs.h"

namespace dtrain {

// What a path is, without following a final symbolic link.
enum class FileType { kMissing, kRegular, kDirectory, kSymlink, kOther };

// Who may enter a directory dtrain creates: kShared is mkdir's 777 less the umask (a
// checkpoint directory others may read); kPrivate is 700 whatever the umask (the local
// tier, which no other user may read or change: fs::check_private_dir).
enum class DirAccess { kShared, kPrivate };

class Env {
 public:
  virtual ~Env() = default;

  // The real file system (POSIX calls).
  static Env& posix();

  // --- Queries (change nothing) ---
  // What `path` is (kMissing when nothing is there; lstat semantics).
  virtual FileType type_of(const std::string& path) = 0;
  // The names in directory `dir` (not "." or ".."), in no particular order.
  virtual std::vector<std::string> children(const std::string& dir) = 0;
  // fs::read_file's rules (regular files only, bounded, optionally no link).
  virtual std::string read_file(const std::string& path, const fs::ReadOptions& options) = 0;

  // --- Mutations (each one a crash point for a fault-injecting Env) ---
  // Creates `path`, which must not exist (O_EXCL | O_NOFOLLOW: never writes through a
  // planted file or link), and writes `content`; not synced.
  virtual void write_new_file(const std::string& path, const std::string& content) = 0;
  // mkdir(2) with `access`'s mode; returns false when `path` exists already (of any
  // type, unchanged).
  virtual bool create_dir(const std::string& path, DirAccess access) = 0;
  // fsync(2) of a regular file (its content) or a directory (its entries).
  virtual void sync(const std::string& path) = 0;
  // rename(2), replacing a file or an empty directory at `to`.
  virtual void rename(const std::string& from, const std::string& to) = 0;
  // Swaps two existing names atomically (renameat2 RENAME_EXCHANGE); returns false when
  // the file system cannot (NFS, old kernels), having changed nothing.
  virtual bool exchange(const std::string& a, const std::string& b) = 0;
  // unlink(2) of a file or a symbolic link.
  virtual void remove_file(const std::string& path) = 0;
  // rm -r (nothing there is fine); never follows a symbolic link.
  virtual void remove_tree(const std::string& path) = 0;
};

namespace fs {

// Writes `content` to `path` so that a crash leaves either the old or the new file:
// writes an exclusive temporary ".<name>.tmp-<random>" in the same directory (created
// with O_EXCL | O_NOFOLLOW, so an existing file or a planted link is never written
// through), syncs it, renames it over `path`, syncs the parent. The temporary is
// removed on failure.
void write_file_atomic(const std::string& path, const std::string& content, Env& env = Env::posix());

// Creates `path` (which must not exist) holding `content`, and syncs it; no rename, so
// a crash can leave it partly written: for a hidden temporary that is renamed later.
void write_file_durable(const std::string& path, const std::string& content, Env& env = Env::posix());

// rename(2), then a sync of the destination's parent directory.
void rename_durable(const std::string& from, const std::string& to, Env& env = Env::posix());

// Creates `path` and its missing parents (mkdir -p), syncing the parent of each
// directory it creates, so that a power cut cannot lose them (a new directory's entry is
// durable only once its parent is synced). Those it creates get `access`; those there
// already are left as they are. With DirAccess::kPrivate, one that was missing but that
// another process made first must pass fs::check_private_dir. Returns whether it found
// any missing.
bool create_directories_durable(const std::string& path, Env& env = Env::posix(),
                                DirAccess access = DirAccess::kShared);

// Env::remove_tree, for cleanup on a path that is already failing: errors are dropped.
void remove_quietly(const std::string& path, Env& env = Env::posix()) noexcept;

}  // namespace fs
}  // namespace dtrain
