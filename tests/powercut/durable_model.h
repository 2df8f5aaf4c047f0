// What survives a power cut: the model behind the power-cut file system (powercut_fs.cpp),
// kept apart from FUSE so that its rules are unit-tested in-process.
//
// The live tree is a real directory (the "page cache": every write lands there at once,
// so reads see it). The durable state is what a disk would hold after losing power:
//   - a file's content becomes durable only when the file is fsynced (fsync/fdatasync);
//   - a directory's entries (creates, renames, unlinks in it) become durable only when
//     the directory itself is fsynced;
//   - everything present when the model is made is durable.
// A name made durable by a directory fsync before its file was ever fsynced holds an
// empty file (delayed allocation on ext4 shows exactly that). LevelDB's fault-injection
// Env and LazyFS use the same worst case.
//
//   DurableModel m(backing_dir);
//   m.file_synced("/ckpt/.m.tmp-1/shard-00000-of-00001.h5");
//   m.dir_synced("/ckpt/.m.tmp-1");
//   m.write_image(image_dir);   // the tree as it is after the cut
//
// Files are identified by the backing file system's inode numbers, which a removal can
// hand to a new file: forget() must be called when a name's last link goes. Not
// thread-safe (the file system runs single-threaded).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>

namespace dtrain::powercut {

class DurableModel {
 public:
  // Everything under `backing` (a directory) is durable as it is now.
  explicit DurableModel(std::string backing);

  // `path` is relative to the backing root and starts with '/'.
  // The file's current content (and mode) becomes durable.
  void file_synced(const std::string& path);
  // The directory's current entries become durable; entries never synced themselves
  // appear as empty files or empty directories.
  void dir_synced(const std::string& path);
  // The last link of `path` is about to go (unlink, rmdir, rename over it): its inode
  // number may be reused for a new file.
  void forget_if_last_link(const std::string& path);
  // A write that is cut half-way: the first `bytes` of `data` at `offset` reach the disk
  // (over the file's durable content) although the file was never synced.
  void tear_write(const std::string& path, const char* data, size_t bytes, off_t offset);

  // Writes the durable tree into `image` (an empty or missing directory).
  void write_image(const std::string& image) const;

 private:
  enum class Kind { kFile, kDir, kLink };
  struct Node {
    Kind kind = Kind::kFile;
    mode_t mode = 0644;
    std::string data;                          // file content, or a link's target
    std::map<std::string, uint64_t> entries;   // a directory's names -> node ids
  };
  uint64_t id_of(ino_t ino);
  // The node for the live object at `full` (created from its current state when new).
  uint64_t capture(const std::string& full, bool with_content);
  void write_node(uint64_t id, const std::string& path) const;

  std::string backing_;
  uint64_t root_ = 0;
  uint64_t next_id_ = 1;
  std::unordered_map<ino_t, uint64_t> ids_;  // live inode -> node id
  std::unordered_map<uint64_t, Node> nodes_;  // durable nodes
};

}  // namespace dtrain::powercut
