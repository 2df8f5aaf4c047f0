// An Env that loses power on command (see fault_env.h).
#include "tests/powercut/fault_env.h"

#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <regex>

#include <fmt/format.h>

namespace dtrain::powercut {
namespace {

std::string normalized(const std::string& path) {
  std::string p = std::filesystem::path(path).lexically_normal().string();
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

}  // namespace

FaultInjectionEnv::FaultInjectionEnv(std::string root)
    : root_(normalized(root)), model_(root_), real_(Env::posix()) {}

void FaultInjectionEnv::cut_at(int64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  cut_at_ = n;
}

void FaultInjectionEnv::drop_sync(const std::string& name, int64_t nth) {
  std::lock_guard<std::mutex> lock(mu_);
  drop_name_ = name;
  drop_nth_ = nth;
}

std::string FaultInjectionEnv::stable_name(const std::string& rel) {
  static const std::regex random_part(R"((\.tmp-|\.deleting-|\.part-)[^/]+)");
  return std::regex_replace(rel, random_part, "$1*");
}

bool FaultInjectionEnv::power_cut() const {
  std::lock_guard<std::mutex> lock(mu_);
  return off_;
}

int64_t FaultInjectionEnv::mutations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(log_.size());
}

std::vector<std::string> FaultInjectionEnv::log() const {
  std::lock_guard<std::mutex> lock(mu_);
  return log_;
}

void FaultInjectionEnv::write_image(const std::string& image) const {
  std::lock_guard<std::mutex> lock(mu_);
  model_.write_image(image);
}

std::string FaultInjectionEnv::relative(const std::string& path) const {
  const std::string p = normalized(path);
  if (p == root_) return "/";
  DTRAIN_CHECK(p.size() > root_.size() && p.compare(0, root_.size(), root_) == 0 && p[root_.size()] == '/',
               "FaultInjectionEnv: '{}' is outside its root '{}'", path, root_);
  return p.substr(root_.size());
}

void FaultInjectionEnv::begin(const std::string& line, const std::string& path) {
  const int64_t n = static_cast<int64_t>(log_.size()) + 1;
  if (off_ || (cut_at_ > 0 && n >= cut_at_)) {
    off_ = true;
    throw PowerCut(fmt::format("power cut (at mutation {}): {} failed", cut_at_, line));
  }
  if (fail_at_ > 0 && (n == fail_at_ || (fail_sticky_ && n > fail_at_))) {
    if (failed_path_.empty()) failed_path_ = path;
    if (!fail_sticky_) fail_at_ = -1;  // once: later mutations are numbered on
    log_.push_back(line + " (failed)");
    throw Error(fmt::format("cannot {} '{}': {}", line.substr(0, line.find(' ')), path, std::strerror(fail_errno_)));
  }
  log_.push_back(line);
}

void FaultInjectionEnv::fail_at(int64_t n, int err, bool sticky) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_at_ = n;
  fail_errno_ = err;
  fail_sticky_ = sticky;
}

std::string FaultInjectionEnv::failed_path() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failed_path_;
}

void FaultInjectionEnv::forget_tree(const std::string& rel) {
  const std::string full = root_ + (rel == "/" ? "" : rel);
  if (real_.type_of(full) == FileType::kDirectory) {
    for (const auto& name : real_.children(full)) forget_tree((rel == "/" ? "" : rel) + "/" + name);
  }
  model_.forget_if_last_link(rel);
}

FileType FaultInjectionEnv::type_of(const std::string& path) { return real_.type_of(path); }

std::vector<std::string> FaultInjectionEnv::children(const std::string& dir) {
  return real_.children(dir);
}

std::string FaultInjectionEnv::read_file(const std::string& path, const fs::ReadOptions& options) {
  return real_.read_file(path, options);
}

void FaultInjectionEnv::write_new_file(const std::string& path, const std::string& content) {
  std::lock_guard<std::mutex> lock(mu_);
  begin("write " + relative(path), path);
  real_.write_new_file(path, content);
}

bool FaultInjectionEnv::create_dir(const std::string& path, DirAccess access) {
  std::lock_guard<std::mutex> lock(mu_);
  begin("mkdir " + relative(path), path);
  return real_.create_dir(path, access);
}

void FaultInjectionEnv::sync(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string rel = relative(path);
  begin("sync " + rel, path);
  const FileType type = real_.type_of(path);
  DTRAIN_CHECK(type == FileType::kRegular || type == FileType::kDirectory,
               "cannot fsync '{}': no such file or directory", path);
  const std::string name = stable_name(rel);
  if (++syncs_[name] == drop_nth_ && name == drop_name_) return;  // reports success, makes nothing durable
  if (type == FileType::kDirectory) {
    model_.dir_synced(rel);
  } else {
    model_.file_synced(rel);
  }
}

void FaultInjectionEnv::rename(const std::string& from, const std::string& to) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string rel_to = relative(to);
  begin("rename " + relative(from) + " -> " + rel_to, from);
  if (real_.type_of(from) != FileType::kMissing) model_.forget_if_last_link(rel_to);
  real_.rename(from, to);
}

bool FaultInjectionEnv::exchange(const std::string& a, const std::string& b) {
  std::lock_guard<std::mutex> lock(mu_);
  begin("exchange " + relative(a) + " <-> " + relative(b), a);
  return real_.exchange(a, b);
}

void FaultInjectionEnv::remove_file(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string rel = relative(path);
  begin("unlink " + rel, path);
  model_.forget_if_last_link(rel);
  real_.remove_file(path);
}

void FaultInjectionEnv::remove_tree(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string rel = relative(path);
  begin("rm -r " + rel, path);
  forget_tree(rel);
  real_.remove_tree(path);
}

}  // namespace dtrain::powercut
