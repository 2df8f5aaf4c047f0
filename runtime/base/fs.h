// Filesystem helpers with crash-safe semantics (POSIX): whole-file reads, atomic
// replacement (write temp, fsync, rename, fsync parent), fsync of files and directories.
// All functions throw dtrain::Error naming the path and errno's message. Thread-safe.
#pragma once

#include <cstddef>
#include <string>

namespace dtrain::fs {

// Reads a whole file. Throws if it cannot be opened or read.
std::string read_file(const std::string& path);
// Reads at most the first `limit` bytes of a file (all of a shorter one).
std::string read_file_head(const std::string& path, size_t limit);

// Writes `content` to `path` so that a crash leaves either the old or the new file:
// writes "<path>.tmp-<pid>", fsyncs it, renames it over `path`, fsyncs the parent.
void write_file_atomic(const std::string& path, const std::string& content);

// Writes `content` to `path` (created or truncated) and fsyncs it; no rename, so a
// crash can leave it partly written: for a hidden temporary that is renamed later.
void write_file_durable(const std::string& path, const std::string& content);

// fsync(2) of a regular file or a directory.
void fsync_path(const std::string& path);

// rename(2) then fsync of the destination's parent directory.
void rename_durable(const std::string& from, const std::string& to);

// Parent directory of `path` ("." when it has none).
std::string parent_dir(const std::string& path);

}  // namespace dtrain::fs
