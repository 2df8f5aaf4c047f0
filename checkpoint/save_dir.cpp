// The save directory's layout and its file-system steps (see save_dir.h).
#include "checkpoint/save_dir.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <random>

#include <fmt/format.h>

#include "checkpoint/index.h"
#include "runtime/base/error.h"
#include "runtime/base/fs.h"

namespace dtrain::checkpoint::save_dir {
namespace stdfs = std::filesystem;

std::string tagged_name(const std::string& dir) {
  const std::string tag = dir + "/" + kLastCheckpoint;
  std::error_code ec;
  if (stdfs::symlink_status(tag, ec).type() == stdfs::file_type::not_found) return "";
  fs::ReadOptions options;
  options.max_bytes = 4096;
  options.no_follow = true;
  std::string name = fs::read_file(tag, options);
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  DTRAIN_CHECK_T(CheckpointError,
                 !name.empty() && name[0] != '.' && name.find('/') == std::string::npos &&
                     name.find('\0') == std::string::npos && name != kLastCheckpoint,
                 "'{}' does not name a checkpoint directory of '{}' (it must hold a plain, "
                 "non-hidden directory name, e.g. model_0004999)",
                 tag, dir);
  return name;
}

bool has_tag(const std::string& dir) {
  std::error_code ec;
  return stdfs::symlink_status(dir + "/" + kLastCheckpoint, ec).type() != stdfs::file_type::not_found;
}

void write_tag(const std::string& dir, const std::string& name) {
  validate_name(name);
  fs::write_file_atomic(dir + "/" + kLastCheckpoint, name);
}

void validate_name(const std::string& name) {
  DTRAIN_CHECK_T(CheckpointError,
                 !name.empty() && name[0] != '.' && name.find('/') == std::string::npos &&
                     name != kLastCheckpoint,
                 "invalid checkpoint name '{}': it must be a plain, non-hidden directory name",
                 name);
}

std::string random_id() {
  std::random_device rd;
  return fmt::format("{:08x}{:04x}", rd(), static_cast<unsigned>(::getpid()) & 0xffff);
}

std::vector<std::string> committed_checkpoints(const std::string& dir) {
  std::vector<std::string> found;
  if (!stdfs::is_directory(dir)) return found;
  for (const auto& e : stdfs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (!name.empty() && name[0] != '.' && stdfs::is_directory(e.path()) &&
        stdfs::exists(e.path() / kIndexFile)) {
      found.push_back(e.path().string());
    }
  }
  std::sort(found.begin(), found.end());
  return found;
}

void remove_stale_temporaries(const std::string& dir) {
  for (const auto& e : stdfs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n[0] == '.' && (n.find(".tmp-") != std::string::npos || n.find(".deleting-") != std::string::npos)) {
      std::error_code ec;
      stdfs::remove_all(e.path(), ec);
    }
  }
}

std::string create_temporary(const std::string& dir, const std::string& name) {
  std::string tmp = dir + "/." + name + ".tmp-" + random_id();
  DTRAIN_CHECK_T(CheckpointError, stdfs::create_directory(tmp), "cannot create '{}'", tmp);
  return tmp;
}

void refuse_to_replace_foreign(const std::string& final_dir) {
  std::error_code ec;
  const auto status = stdfs::symlink_status(final_dir, ec);
  if (ec || status.type() == stdfs::file_type::not_found) return;
  const bool ours = status.type() == stdfs::file_type::directory &&
                    stdfs::symlink_status(final_dir + "/" + kIndexFile, ec).type() ==
                        stdfs::file_type::regular;
  DTRAIN_CHECK_T(CheckpointError, ours,
                 "refusing to save over '{}': it exists and is not a dtrain checkpoint (it is {}); "
                 "a save replaces only a committed checkpoint of its own. Move it away or choose "
                 "another OUTPUT_DIR; nothing was written",
                 final_dir,
                 status.type() == stdfs::file_type::symlink     ? "a symbolic link"
                 : status.type() == stdfs::file_type::directory ? "a directory without " + std::string(kIndexFile)
                 : status.type() == stdfs::file_type::regular   ? "a regular file"
                                                                : "not a directory");
}

void commit_directory(const std::string& tmp, const std::string& final_dir) {
  if (stdfs::exists(final_dir)) {
#ifdef RENAME_EXCHANGE
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0) {
      fs::fsync_path(fs::parent_dir(final_dir));
      std::error_code ec;
      stdfs::remove_all(tmp, ec);  // now holds the replaced checkpoint
      return;
    }
#endif
    remove_dir_safely(final_dir);  // filesystems without RENAME_EXCHANGE (NFS)
  }
  fs::rename_durable(tmp, final_dir);
}

void remove_dir_safely(const std::string& dir) {
  const std::string hidden = fs::parent_dir(dir) + "/." + stdfs::path(dir).filename().string() +
                             ".deleting-" + random_id();
  fs::rename_durable(dir, hidden);
  std::error_code ec;
  stdfs::remove_all(hidden, ec);
}

}  // namespace dtrain::checkpoint::save_dir
