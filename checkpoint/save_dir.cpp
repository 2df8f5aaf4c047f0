// The save directory's layout and its file-system steps (see save_dir.h).
#include "checkpoint/save_dir.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <random>

#include <fmt/format.h>

#include "checkpoint/index.h"
#include "runtime/base/error.h"
#include "runtime/base/env.h"
#include "runtime/base/fs.h"
#include "runtime/base/logging.h"

namespace dtrain::checkpoint::save_dir {

std::string tagged_name(Env& env, const std::string& dir) {
  const std::string tag = dir + "/" + kLastCheckpoint;
  if (env.type_of(tag) == FileType::kMissing) return "";
  fs::ReadOptions options;
  options.max_bytes = 4096;
  options.no_follow = true;
  std::string name = env.read_file(tag, options);
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  DTRAIN_CHECK_T(CheckpointError,
                 !name.empty() && name[0] != '.' && name.find('/') == std::string::npos &&
                     name.find('\0') == std::string::npos && name != kLastCheckpoint,
                 "'{}' does not name a checkpoint directory of '{}' (it must hold a plain, "
                 "non-hidden directory name, e.g. model_0004999)",
                 tag, dir);
  return name;
}

bool has_tag(Env& env, const std::string& dir) {
  return env.type_of(dir + "/" + kLastCheckpoint) != FileType::kMissing;
}

void write_tag(Env& env, const std::string& dir, const std::string& name) {
  validate_name(name);
  fs::write_file_atomic(dir + "/" + kLastCheckpoint, name, env);
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

std::vector<std::string> committed_checkpoints(Env& env, const std::string& dir) {
  std::vector<std::string> found;
  // A trailing '/' follows a symbolic link (an OUTPUT_DIR linked to scratch space).
  if (env.type_of(dir + "/") != FileType::kDirectory) return found;
  for (const auto& name : env.children(dir)) {
    const std::string path = dir + "/" + name;
    if (!name.empty() && name[0] != '.' && env.type_of(path + "/") == FileType::kDirectory &&
        env.type_of(path + "/" + kIndexFile) == FileType::kRegular) {
      found.push_back(path);
    }
  }
  std::sort(found.begin(), found.end());
  return found;
}

void remove_stale_temporaries(Env& env, const std::string& dir, const std::function<bool(const std::string&)>& keep) {
  for (const auto& n : env.children(dir)) {
    if (keep && keep(n)) continue;
    if (n[0] == '.' && (n.find(".tmp-") != std::string::npos || n.find(".deleting-") != std::string::npos)) {
      fs::remove_quietly(dir + "/" + n, env);
    }
  }
}

std::string create_temporary(Env& env, const std::string& dir, const std::string& name) {
  std::string tmp = dir + "/." + name + ".tmp-" + random_id();
  DTRAIN_CHECK_T(CheckpointError, env.create_dir(tmp, DirAccess::kShared), "cannot create '{}': it exists", tmp);
  return tmp;
}

void refuse_to_replace_foreign(Env& env, const std::string& final_dir) {
  const FileType type = env.type_of(final_dir);
  if (type == FileType::kMissing) return;
  const bool ours = type == FileType::kDirectory &&
                    env.type_of(final_dir + "/" + kIndexFile) == FileType::kRegular;
  DTRAIN_CHECK_T(CheckpointError, ours,
                 "refusing to save over '{}': it exists and is not a dtrain checkpoint (it is {}); "
                 "a save replaces only a committed checkpoint of its own. Move it away or choose "
                 "another OUTPUT_DIR; nothing was written",
                 final_dir,
                 type == FileType::kSymlink     ? "a symbolic link"
                 : type == FileType::kDirectory ? "a directory without " + std::string(kIndexFile)
                 : type == FileType::kRegular   ? "a regular file"
                                                : "not a directory");
}

void commit_directory(Env& env, const std::string& tmp, const std::string& final_dir) {
  if (env.type_of(final_dir) != FileType::kMissing) {
    if (env.exchange(tmp, final_dir)) {
      env.sync(fs::parent_dir(final_dir));
      fs::remove_quietly(tmp, env);  // now holds the replaced checkpoint
      return;
    }
    remove_dir_safely(env, final_dir);  // file systems without RENAME_EXCHANGE (NFS)
  }
  fs::rename_durable(tmp, final_dir, env);
}

void remove_dir_safely(Env& env, const std::string& dir) {
  const std::string hidden = fs::parent_dir(dir) + "/." + std::filesystem::path(dir).filename().string() +
                             ".deleting-" + random_id();
  fs::rename_durable(dir, hidden, env);
  try {
    env.remove_tree(hidden);
  } catch (const Error& e) {
    // Out of sight already: what is left goes with the next run's leftovers.
    DTRAIN_LOG_WARN("{} is deleted, but not all of its files could be removed ({}); the next "
                    "run's first save removes what is left",
                    dir, e.what());
  }
}

}  // namespace dtrain::checkpoint::save_dir
