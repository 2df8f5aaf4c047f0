// dtrain_powercut_fs: a passthrough FUSE file system that can lose power (tests only).
//
//   dtrain_powercut_fs --backing B --image I [--cut-at N | --cut-on S [--cut-op OP]] [--tear]
//                      [--fail-at N | --fail-on PATTERN --fail-op OP [--fail-skip K]]
//                      [--fail-errno ENOSPC|EIO] [--log F] MOUNTPOINT
//
// Every operation is passed to the directory B (the live state, as a page cache would
// hold it). What a disk would keep after a power cut is modelled by DurableModel
// (durable_model.h): file contents as of their last fsync, directory entries as of the
// directory's last fsync. Persistence operations (write, truncate, fallocate, create,
// mkdir, symlink, link, unlink, rmdir, rename, fsync, fsyncdir) are numbered from 1:
//   --cut-at N      power goes before operation N runs: the durable state is written to
//                   I, the file I.cut is created, and every later operation fails with EIO
//                   (the processes using the mount are to be killed by the test);
//   --cut-on S      the same at the first persistence operation on a path containing S;
//   --cut-on P --cut-op OP [--cut-skip K]
//                   the same at the (K+1)-th operation OP on a path matching P (as
//                   --fail-on below; a rename's path is "FROM -> TO"), so that the cut hits
//                   the same step whatever order the ranks' operations interleave in;
//   --tear          a write that is cut reaches the disk half-way (whole 4 KiB pages);
//   --fail-at N     operation N fails with --fail-errno (a full disk, a disk error) and
//                   the file system goes on;
//   --fail-on P --fail-op OP [--fail-skip K]
//                   the same for the (K+1)-th operation OP (e.g. write, fsync) on a path
//                   matching P: substrings separated by '*' that appear in that order
//                   (".model_0000007.tmp-*/shard-00001"), so that the failure hits the
//                   same file whatever order the ranks' operations interleave in;
//   --fail-sticky   and every later OP fails as well, on any path (a disk that is full
//                   stays full; without it a failed write is simply retried by the
//                   kernel's FUSE layer and the caller, and succeeds);
//   --drop-on P --drop-op fsync|fsyncdir [--drop-skip K]
//                   the (K+1)-th OP on a path matching P runs but makes nothing durable,
//                   as if the program had not called it (a mutation: the tests must
//                   notice that fsync is missing); a P ending in '$' must match up to the
//                   end of the path;
//   --log F         one line per persistence operation: "<n> <op> <path>", and at
//                   unmount "total <n>".
// Runs single-threaded in the foreground (it adds -f -s). Unmount with fusermount3 -u.
#define FUSE_USE_VERSION 31

#include <dirent.h>
#include <fcntl.h>
#include <fuse.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/powercut/durable_model.h"

namespace {

using dtrain::powercut::DurableModel;

bool matches(const std::string& path, std::string pattern);

// "The (skip+1)-th operation `op` on a path matching `on`" (--fail-on/--fail-op/
// --fail-skip, --drop-on/--drop-op/--drop-skip); `seen` counts the matches so far.
struct Trigger {
  std::string on, op;
  long skip = 0, seen = 0;

  bool armed(const char* o) const { return !on.empty() && op == o; }
  // Whether this operation is the one (counting it when it matches).
  bool fires(const char* o, const char* path) {
    return armed(o) && matches(path, on) && seen++ == skip;
  }
  bool fired() const { return seen > skip; }
};

struct Options {
  std::string backing, image, cut_on, log;
  long cut_at = 0, fail_at = 0;
  int fail_errno = ENOSPC;
  bool tear = false;
  bool fail_sticky = false;
};

struct State {
  Options opt;
  Trigger fail, drop, cut;  // cut: --cut-on with --cut-op
  std::unique_ptr<DurableModel> model;
  long ops = 0;
  bool dead = false;
  FILE* log = nullptr;
};

State& st() {
  return *static_cast<State*>(fuse_get_context()->private_data);
}

std::string real(const char* path) { return st().opt.backing + path; }

void cut(State& s) {
  s.dead = true;
  try {
    s.model->write_image(s.opt.image);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dtrain_powercut_fs: writing the image failed: %s\n", e.what());
  }
  if (FILE* f = std::fopen((s.opt.image + ".cut").c_str(), "w")) {
    std::fprintf(f, "%ld\n", s.ops);
    std::fclose(f);
  }
  if (s.log) std::fflush(s.log);
}

// Whether `path` holds the '*'-separated parts of `pattern` in order.
bool matches(const std::string& path, std::string pattern) {
  const bool to_end = !pattern.empty() && pattern.back() == '$';
  if (to_end) pattern.pop_back();
  std::vector<std::string> parts;
  for (size_t from = 0;;) {
    const size_t star = pattern.find('*', from);
    parts.push_back(pattern.substr(from, star == std::string::npos ? std::string::npos : star - from));
    if (star == std::string::npos) break;
    from = star + 1;
  }
  size_t at = 0;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    const size_t found = path.find(parts[i], at);
    if (found == std::string::npos) return false;
    at = found + parts[i].size();
  }
  const std::string& last = parts.back();
  if (!to_end) return path.find(last, at) != std::string::npos;
  return path.size() >= at + last.size() && path.compare(path.size() - last.size(), last.size(), last) == 0;
}

// Whether this fsync/fsyncdir is the one to drop (--drop-on/--drop-op/--drop-skip).
bool dropped(const char* op, const char* path) {
  State& s = st();
  const bool drop = s.drop.fires(op, path);
  if (drop && s.log) std::fprintf(s.log, "%ld dropped %s\n", s.ops, path);
  return drop;
}

// Whether this operation is the one to fail (--fail-at, or --fail-on/--fail-op/--fail-skip).
bool fails(State& s, const char* op, const char* path) {
  if (s.opt.fail_at == s.ops) return true;
  if (s.opt.fail_sticky && s.fail.armed(op) && s.fail.fired()) return true;
  return s.fail.fires(op, path);
}

// Numbers a persistence operation; returns 0 to go on, or -errno to fail it. A cut at
// this operation happens before it (a torn write's half reaches the disk first).
int persist(const char* op, const char* path, const char* data = nullptr, size_t size = 0,
            off_t offset = 0) {
  State& s = st();
  if (s.dead) return -EIO;
  ++s.ops;
  if (s.log) std::fprintf(s.log, "%ld %s %s\n", s.ops, op, path);
  const bool at = s.opt.cut_at == s.ops || s.cut.fires(op, path) ||
                  (s.cut.op.empty() && !s.opt.cut_on.empty() &&
                   std::string(path).find(s.opt.cut_on) != std::string::npos);
  if (at) {
    if (s.opt.tear && data != nullptr && size >= 8192) {
      s.model->tear_write(path, data, (size / 2) & ~size_t{4095}, offset);
    }
    cut(s);
    return -EIO;
  }
  if (fails(s, op, path)) {
    if (s.log) std::fprintf(s.log, "%ld failed %s\n", s.ops, std::strerror(s.opt.fail_errno));
    return -s.opt.fail_errno;
  }
  return 0;
}

int check_alive() { return st().dead ? -EIO : 0; }

#define ALIVE()                      \
  do {                               \
    if (int e = check_alive()) return e; \
  } while (0)
#define PERSIST(...)                     \
  do {                                   \
    if (int e = persist(__VA_ARGS__)) return e; \
  } while (0)

int ret(int rc) { return rc < 0 ? -errno : rc; }

int fs_getattr(const char* path, struct stat* sb, fuse_file_info*) {
  ALIVE();
  return ret(::lstat(real(path).c_str(), sb));
}

int fs_readlink(const char* path, char* buf, size_t size) {
  ALIVE();
  const ssize_t n = ::readlink(real(path).c_str(), buf, size - 1);
  if (n < 0) return -errno;
  buf[n] = '\0';
  return 0;
}

int fs_mknod(const char* path, mode_t mode, dev_t dev) {
  PERSIST("mknod", path);
  return ret(::mknod(real(path).c_str(), mode, dev));
}

int fs_mkdir(const char* path, mode_t mode) {
  PERSIST("mkdir", path);
  return ret(::mkdir(real(path).c_str(), mode));
}

int fs_unlink(const char* path) {
  PERSIST("unlink", path);
  st().model->forget_if_last_link(path);
  return ret(::unlink(real(path).c_str()));
}

int fs_rmdir(const char* path) {
  PERSIST("rmdir", path);
  st().model->forget_if_last_link(path);
  return ret(::rmdir(real(path).c_str()));
}

int fs_symlink(const char* target, const char* path) {
  PERSIST("symlink", path);
  return ret(::symlink(target, real(path).c_str()));
}

int fs_rename(const char* from, const char* to, unsigned int flags) {
  PERSIST("rename", (std::string(from) + " -> " + to).c_str());
  if (!(flags & RENAME_EXCHANGE)) st().model->forget_if_last_link(to);
  return ret(::renameat2(AT_FDCWD, real(from).c_str(), AT_FDCWD, real(to).c_str(), flags));
}

int fs_link(const char* from, const char* to) {
  PERSIST("link", to);
  return ret(::link(real(from).c_str(), real(to).c_str()));
}

int fs_chmod(const char* path, mode_t mode, fuse_file_info*) {
  ALIVE();
  return ret(::chmod(real(path).c_str(), mode));
}

int fs_chown(const char* path, uid_t uid, gid_t gid, fuse_file_info*) {
  ALIVE();
  return ret(::lchown(real(path).c_str(), uid, gid));
}

int fs_truncate(const char* path, off_t size, fuse_file_info* fi) {
  PERSIST("truncate", path);
  return ret(fi ? ::ftruncate(static_cast<int>(fi->fh), size) : ::truncate(real(path).c_str(), size));
}

int fs_open(const char* path, fuse_file_info* fi) {
  ALIVE();
  if (fi->flags & O_TRUNC) PERSIST("truncate", path);
  const int fd = ::open(real(path).c_str(), fi->flags);
  if (fd < 0) return -errno;
  fi->fh = static_cast<uint64_t>(fd);
  return 0;
}

int fs_create(const char* path, mode_t mode, fuse_file_info* fi) {
  PERSIST("create", path);
  const int fd = ::open(real(path).c_str(), fi->flags | O_CREAT, mode);
  if (fd < 0) return -errno;
  fi->fh = static_cast<uint64_t>(fd);
  return 0;
}

int fs_read(const char*, char* buf, size_t size, off_t offset, fuse_file_info* fi) {
  ALIVE();
  const ssize_t n = ::pread(static_cast<int>(fi->fh), buf, size, offset);
  return n < 0 ? -errno : static_cast<int>(n);
}

int fs_write(const char* path, const char* buf, size_t size, off_t offset, fuse_file_info* fi) {
  PERSIST("write", path, buf, size, offset);
  const ssize_t n = ::pwrite(static_cast<int>(fi->fh), buf, size, offset);
  return n < 0 ? -errno : static_cast<int>(n);
}

int fs_statfs(const char* path, struct statvfs* sb) {
  ALIVE();
  return ret(::statvfs(real(path).c_str(), sb));
}

int fs_release(const char*, fuse_file_info* fi) {
  ::close(static_cast<int>(fi->fh));
  return 0;
}

int fs_fsync(const char* path, int, fuse_file_info*) {
  PERSIST("fsync", path);
  if (dropped("fsync", path)) return 0;
  try {
    st().model->file_synced(path);
  } catch (const std::exception&) {
    return -EIO;
  }
  return 0;
}

int fs_readdir(const char* path, void* buf, fuse_fill_dir_t fill, off_t, fuse_file_info*,
               fuse_readdir_flags) {
  ALIVE();
  DIR* d = ::opendir(real(path).c_str());
  if (d == nullptr) return -errno;
  while (const dirent* e = ::readdir(d)) fill(buf, e->d_name, nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  ::closedir(d);
  return 0;
}

int fs_fsyncdir(const char* path, int, fuse_file_info*) {
  PERSIST("fsyncdir", path);
  if (dropped("fsyncdir", path)) return 0;
  try {
    st().model->dir_synced(path);
  } catch (const std::exception&) {
    return -EIO;
  }
  return 0;
}

int fs_access(const char* path, int mask) {
  ALIVE();
  return ret(::access(real(path).c_str(), mask));
}

int fs_utimens(const char* path, const timespec tv[2], fuse_file_info*) {
  ALIVE();
  return ret(::utimensat(AT_FDCWD, real(path).c_str(), tv, AT_SYMLINK_NOFOLLOW));
}

int fs_fallocate(const char* path, int mode, off_t offset, off_t length, fuse_file_info* fi) {
  PERSIST("fallocate", path);
  return ret(::fallocate(static_cast<int>(fi->fh), mode, offset, length));
}

void fs_destroy(void* data) {
  auto* s = static_cast<State*>(data);
  if (s->log) {
    std::fprintf(s->log, "total %ld\n", s->ops);
    std::fclose(s->log);
    s->log = nullptr;
  }
}

fuse_operations make_operations() {
  fuse_operations ops{};
  ops.getattr = fs_getattr;
  ops.readlink = fs_readlink;
  ops.mknod = fs_mknod;
  ops.mkdir = fs_mkdir;
  ops.unlink = fs_unlink;
  ops.rmdir = fs_rmdir;
  ops.symlink = fs_symlink;
  ops.rename = fs_rename;
  ops.link = fs_link;
  ops.chmod = fs_chmod;
  ops.chown = fs_chown;
  ops.truncate = fs_truncate;
  ops.open = fs_open;
  ops.read = fs_read;
  ops.write = fs_write;
  ops.statfs = fs_statfs;
  ops.release = fs_release;
  ops.fsync = fs_fsync;
  ops.readdir = fs_readdir;
  ops.fsyncdir = fs_fsyncdir;
  ops.destroy = fs_destroy;
  ops.access = fs_access;
  ops.create = fs_create;
  ops.utimens = fs_utimens;
  ops.fallocate = fs_fallocate;
  return ops;
}

int usage(const char* why) {
  std::fprintf(stderr,
               "dtrain_powercut_fs: %s\nusage: dtrain_powercut_fs --backing DIR --image DIR "
               "[--cut-at N | --cut-on SUBSTR [--cut-op OP [--cut-skip K]]] [--tear] "
               "[--fail-at N | --fail-on P --fail-op OP [--fail-skip K] [--fail-sticky]] "
               "[--fail-errno ENOSPC|EIO] [--log FILE] MOUNTPOINT\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  auto state = std::make_unique<State>();
  Options& o = state->opt;
  std::vector<char*> fuse_args = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--backing") o.backing = value();
      else if (a == "--image") o.image = value();
      else if (a == "--cut-at") o.cut_at = std::stol(value());
      else if (a == "--cut-on") o.cut_on = value();
      else if (a == "--cut-op") state->cut.op = value();
      else if (a == "--cut-skip") state->cut.skip = std::stol(value());
      else if (a == "--tear") o.tear = true;
      else if (a == "--fail-at") o.fail_at = std::stol(value());
      else if (a == "--fail-on") state->fail.on = value();
      else if (a == "--fail-op") state->fail.op = value();
      else if (a == "--fail-skip") state->fail.skip = std::stol(value());
      else if (a == "--fail-sticky") o.fail_sticky = true;
      else if (a == "--drop-on") state->drop.on = value();
      else if (a == "--drop-op") state->drop.op = value();
      else if (a == "--drop-skip") state->drop.skip = std::stol(value());
      else if (a == "--fail-errno") {
        const std::string e = value();
        if (e == "ENOSPC") o.fail_errno = ENOSPC;
        else if (e == "EIO") o.fail_errno = EIO;
        else return usage(("unknown --fail-errno " + e).c_str());
      } else if (a == "--log") o.log = value();
      else fuse_args.push_back(argv[i]);
    } catch (const std::exception& e) {
      return usage(e.what());
    }
  }
  if (!state->cut.op.empty()) {
    if (o.cut_on.empty()) return usage("--cut-op needs --cut-on");
    state->cut.on = o.cut_on;
  }
  if (o.backing.empty() || o.image.empty() || fuse_args.size() != 2) {
    return usage("--backing, --image and one MOUNTPOINT are required");
  }
  // Absolute: the paths are used whatever the daemon's working directory.
  for (std::string* p : {&o.backing, &o.image}) {
    if (!p->empty() && (*p)[0] != '/') {
      char cwd[4096];
      if (::getcwd(cwd, sizeof cwd) == nullptr) return usage("cannot get the working directory");
      *p = std::string(cwd) + "/" + *p;
    }
  }
  try {
    state->model = std::make_unique<DurableModel>(o.backing);
  } catch (const std::exception& e) {
    return usage(e.what());
  }
  if (!o.log.empty()) {
    state->log = std::fopen(o.log.c_str(), "w");
    if (state->log == nullptr) return usage(("cannot open --log " + o.log).c_str());
    std::setvbuf(state->log, nullptr, _IOLBF, 0);
  }
  char fg[] = "-f", single[] = "-s";
  fuse_args.push_back(fg);
  fuse_args.push_back(single);
  const fuse_operations ops = make_operations();
  return fuse_main(static_cast<int>(fuse_args.size()), fuse_args.data(), &ops, state.get());
}
