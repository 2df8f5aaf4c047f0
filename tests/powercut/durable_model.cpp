// What survives a power cut (see durable_model.h).
#include "tests/powercut/durable_model.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace dtrain::powercut {
namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path) {
  throw std::runtime_error(what + " '" + path + "': " + std::strerror(errno));
}

std::string read_all(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW);
  if (fd < 0) fail("cannot open", path);
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      ::close(fd);
      fail("cannot read", path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

std::vector<std::string> list_dir(const std::string& path) {
  std::vector<std::string> names;
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) fail("cannot list", path);
  while (const dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  return names;
}

void write_all(const std::string& path, const std::string& data, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, mode & 07777);
  if (fd < 0) fail("cannot create", path);
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n <= 0) {
      ::close(fd);
      fail("cannot write", path);
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

}  // namespace

DurableModel::DurableModel(std::string backing) : backing_(std::move(backing)) {
  // Everything present is durable: capture the tree depth first.
  root_ = capture(backing_, true);
  std::vector<std::string> dirs = {"/"};
  while (!dirs.empty()) {
    const std::string d = dirs.back();
    dirs.pop_back();
    dir_synced(d);
    for (const auto& name : list_dir(backing_ + d)) {
      const std::string child = (d == "/" ? "" : d) + "/" + name;
      struct stat st {};
      if (::lstat((backing_ + child).c_str(), &st) != 0) fail("cannot stat", child);
      if (S_ISDIR(st.st_mode)) {
        dirs.push_back(child);
      } else {
        file_synced(child);
      }
    }
  }
}

uint64_t DurableModel::id_of(ino_t ino) {
  auto [it, fresh] = ids_.emplace(ino, 0);
  if (fresh) it->second = next_id_++;
  return it->second;
}

uint64_t DurableModel::capture(const std::string& full, bool with_content) {
  struct stat st {};
  if (::lstat(full.c_str(), &st) != 0) fail("cannot stat", full);
  const uint64_t id = id_of(st.st_ino);
  auto [it, fresh] = nodes_.emplace(id, Node{});
  Node& node = it->second;
  if (fresh || with_content) {
    node.mode = st.st_mode & 07777;
    if (S_ISDIR(st.st_mode)) {
      node.kind = Kind::kDir;
    } else if (S_ISLNK(st.st_mode)) {
      node.kind = Kind::kLink;  // a link's target is written with the link, atomically
      std::vector<char> target(static_cast<size_t>(st.st_size) + 1);
      const ssize_t n = ::readlink(full.c_str(), target.data(), target.size());
      if (n < 0) fail("cannot read link", full);
      node.data.assign(target.data(), static_cast<size_t>(n));
    } else {
      node.kind = Kind::kFile;
      if (with_content) node.data = read_all(full);
    }
  }
  return id;
}

void DurableModel::file_synced(const std::string& path) { capture(backing_ + path, true); }

void DurableModel::dir_synced(const std::string& path) {
  const std::string full = backing_ + (path == "/" ? "" : path);
  const uint64_t id = capture(full.empty() ? "/" : full, false);
  std::map<std::string, uint64_t> entries;
  for (const auto& name : list_dir(full)) entries[name] = capture(full + "/" + name, false);
  nodes_[id].entries = std::move(entries);
}

void DurableModel::forget_if_last_link(const std::string& path) {
  struct stat st {};
  if (::lstat((backing_ + path).c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode) || st.st_nlink <= 1) ids_.erase(st.st_ino);
}

void DurableModel::tear_write(const std::string& path, const char* data, size_t bytes, off_t offset) {
  const uint64_t id = capture(backing_ + path, false);
  std::string& d = nodes_[id].data;
  const size_t end = static_cast<size_t>(offset) + bytes;
  if (d.size() < end) d.resize(end, '\0');
  std::memcpy(&d[static_cast<size_t>(offset)], data, bytes);
}

void DurableModel::write_image(const std::string& image) const {
  if (::mkdir(image.c_str(), 0755) != 0 && errno != EEXIST) fail("cannot create", image);
  const Node& root = nodes_.at(root_);
  for (const auto& [name, child] : root.entries) write_node(child, image + "/" + name);
}

void DurableModel::write_node(uint64_t id, const std::string& path) const {
  const Node& node = nodes_.at(id);
  switch (node.kind) {
    case Kind::kDir:
      if (::mkdir(path.c_str(), node.mode) != 0) fail("cannot create", path);
      for (const auto& [name, child] : node.entries) write_node(child, path + "/" + name);
      break;
    case Kind::kLink:
      if (::symlink(node.data.c_str(), path.c_str()) != 0) fail("cannot link", path);
      break;
    case Kind::kFile:
      write_all(path, node.data, node.mode);
      break;
  }
}

}  // namespace dtrain::powercut
