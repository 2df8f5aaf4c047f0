// Filesystem helpers (POSIX): bounded whole-file reads of regular files only, fsync of
// files and directories, unpredictable temporary names. The durable writes (atomic
// replacement, mkdir -p, rename + fsync) are in env.h, over an Env.
// All functions throw dtrain::Error naming the path and errno's message. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
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

// pread(2) of `n` bytes of the open file `fd` at `offset` into `dst`, retrying short
// reads and EINTR; returns how many bytes it read, which is less than `n` only when the
// file ends first. Throws dtrain::Error naming `path` on a read error.
size_t pread_upto(int fd, uint64_t offset, void* dst, size_t n, const std::string& path);

// A hidden temporary name next to `path`: "<dir>/.<name>.tmp-<16 random hex digits>".
// Unpredictable (from std::random_device), so other users cannot pre-create it; create
// it with O_EXCL (or mkdir) all the same. The ".tmp-" infix is what checkpoint cleanup
// looks for.
std::string temp_name_for(const std::string& path);

// fsync(2) of a regular file or a directory.
void fsync_path(const std::string& path);

// Parent directory of `path` ("." when it has none).
std::string parent_dir(const std::string& path);

// --- Directories other users must not change (a tier under /dev/shm) ---
// The identity of a directory: device and inode.
struct DirId {
  uint64_t dev = 0, ino = 0;
  bool operator==(const DirId& o) const { return dev == o.dev && ino == o.ino; }
  bool operator!=(const DirId& o) const { return !(*this == o); }
};

// Checks the directory at `path` is private to the effective user: a real directory (not
// a symbolic link) owned by that user that no other user could have written to (no group
// or other write permission: what they put in it could not be told from this user's);
// group and other read permissions are removed (chmod 700) where it has any. Create it
// with Env::create_dir(path, DirAccess::kPrivate). Returns the directory's identity.
// Throws Error naming the path and what it is instead (missing, a link, a file, another
// user's directory, its mode).
DirId check_private_dir(const std::string& path);

// `path`'s identity if it is a real directory owned by the effective user that group
// and others cannot write to; else {} (also when it is missing). One lstat(2): cheap
// enough to ask before every snapshot whether a directory is still the one checked.
DirId private_dir_id(const std::string& path);

// Directory `path` resolved by trusted_dir().
struct TrustedDir {
  std::string path;     // the real path (std::filesystem::canonical): use it, not `path`
  std::string warning;  // "" or why a directory above could still let another user in
};
// Checks that no other user can change where `path` leads or what is in it, and resolves
// it. The directory itself must be owned by the effective user or root and not be
// writable by group or others unless sticky (like /tmp and /dev/shm). A symbolic link on
// the given way is refused where another user could replace it (its directory writable
// by others and not sticky, or sticky and the link not the user's or root's). Directories
// above are not refused: one writable by others and not sticky (Kubernetes' emptyDir at
// /dev/shm, a group directory under umask 002) is returned as a warning; their owners are
// not checked (a user-namespace container shows the host's root as an unmapped uid).
// Throws Error naming the directory or link, its owner and mode.
TrustedDir trusted_dir(const std::string& path);

// The effective user's name from the user database, or its uid in decimal where it has
// none (a container's arbitrary uid) or the name is not a plain file name.
std::string user_name();

// The running kernel's boot id (/proc/sys/kernel/random/boot_id, trimmed): different on
// every machine and every boot. "" where it cannot be read.
std::string boot_id();

}  // namespace dtrain::fs
