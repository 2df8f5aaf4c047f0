// The durable writes, composed from an Env's operations (see env.h). Env::posix() is in
// fs.cpp, beside the other POSIX calls.
#include "runtime/base/env.h"

#include <filesystem>

#include <fmt/format.h>

#include "runtime/base/error.h"

namespace dtrain::fs {

void write_file_atomic(const std::string& path, const std::string& content, Env& env) {
  const std::string tmp = temp_name_for(path);
  try {
    env.write_new_file(tmp, content);
  } catch (const Error& e) {
    remove_quietly(tmp, env);
    throw Error(fmt::format("cannot create a temporary file for '{}': {}", path, e.what()));
  }
  try {
    env.sync(tmp);
    rename_durable(tmp, path, env);
  } catch (...) {
    remove_quietly(tmp, env);  // gone already if the rename happened
    throw;
  }
}

void write_file_durable(const std::string& path, const std::string& content, Env& env) {
  env.write_new_file(path, content);
  env.sync(path);
}

void rename_durable(const std::string& from, const std::string& to, Env& env) {
  env.rename(from, to);
  env.sync(parent_dir(to));
}

bool create_directories_durable(const std::string& path, Env& env, DirAccess access) {
  std::vector<std::filesystem::path> missing;
  for (std::filesystem::path p = std::filesystem::path(path).lexically_normal();
       !p.empty() && env.type_of(p.string()) == FileType::kMissing; p = p.parent_path()) {
    missing.push_back(p);
    if (p == p.parent_path()) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (it->filename().empty()) continue;  // "a/b/" normalizes to a trailing empty name
    if (!env.create_dir(it->string(), access) && access == DirAccess::kPrivate) {
      check_private_dir(it->string());  // made meanwhile: by this user, or refused
    }
    env.sync(parent_dir(it->string()));
  }
  return !missing.empty();
}

void remove_quietly(const std::string& path, Env& env) noexcept {
  try {
    env.remove_tree(path);
  } catch (...) {  // NOLINT(bugprone-empty-catch): cleanup on a path that already failed
  }
}

}  // namespace dtrain::fs
