// Filesystem helpers with crash-safe semantics (POSIX): bounded whole-file reads of
// regular files only, atomic replacement (exclusive temporary, fsync, rename, fsync
// parent), fsync of files and directories, unpredictable temporary names.
// All functions throw dtrain::Error naming the path and errno's message. Thread-safe.
#pragma once

#include <cstddef>
#include <string>

namespace dtrain::fs {

// The default size limit of read_file(): reads are whole-file, into memory.
inline constexpr size_t kDefaultMaxReadBytes = size_t{1} << 30;  // 1 GiB

// How read_file() opens and bounds a file.
struct ReadOptions {
  // A file larger than this is refused (checked at open and again while reading, since
  // the file may grow in between).
  size_t max_bytes = kDefaultMaxReadBytes;
  // Refuse a symbolic link as the last path component (O_NOFOLLOW): for names dtrain
  // itself creates (e.g. last_checkpoint), which are never links.
  bool no_follow = false;
};

// Reads a whole regular file. Opening never blocks (O_NONBLOCK, so a FIFO does not hang
// the caller); anything but a regular file (FIFO, device, directory, socket) is refused
// with "'<path>' is not a regular file (it is a FIFO)", and so is a file larger than
// options.max_bytes. Throws if it cannot be opened or read. Never quotes file content.
std::string read_file(const std::string& path, const ReadOptions& options = {});
// Reads at most the first `limit` bytes of a regular file (all of a shorter one); the
// same open rules as read_file().
std::string read_file_head(const std::string& path, size_t limit, bool no_follow = false);

// Writes `content` to `path` so that a crash leaves either the old or the new file:
// writes an exclusive temporary ".<name>.tmp-<random>" in the same directory (created
// with O_EXCL | O_NOFOLLOW, so an existing file or a planted link is never written
// through), fsyncs it, renames it over `path`, fsyncs the parent. The temporary is
// removed on failure.
void write_file_atomic(const std::string& path, const std::string& content);

// Writes `content` to `path` (created or truncated) and fsyncs it; no rename, so a
// crash can leave it partly written: for a hidden temporary that is renamed later.
void write_file_durable(const std::string& path, const std::string& content);

// A hidden temporary name next to `path`: "<dir>/.<name>.tmp-<16 random hex digits>".
// Unpredictable (from std::random_device), so other users cannot pre-create it; create
// it with O_EXCL (or mkdir) all the same. The ".tmp-" infix is what checkpoint cleanup
// looks for.
std::string temp_name_for(const std::string& path);

// fsync(2) of a regular file or a directory.
void fsync_path(const std::string& path);

// rename(2) then fsync of the destination's parent directory.
void rename_durable(const std::string& from, const std::string& to);

// Creates `path` and its missing parents (mkdir -p), fsyncing the parent of each
// directory it creates, so that a power cut cannot lose them (a new directory's entry is
// durable only once its parent is fsynced). Returns whether it created any.
bool create_directories_durable(const std::string& path);

// Parent directory of `path` ("." when it has none).
std::string parent_dir(const std::string& path);

}  // namespace dtrain::fs
