// Shared test helpers (see test_util.h).
#include "tests/test_util.h"

#include <stdlib.h>  // mkdtemp, setenv, unsetenv

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace dtrain::testutil {
namespace stdfs = std::filesystem;

std::string make_temp_dir(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string base = tmp && *tmp ? tmp : "/tmp";
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  std::string pattern = base + "/" + prefix + "XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    throw std::runtime_error("mkdtemp failed for " + pattern);
  }
  return pattern;
}

TempDir::TempDir(const std::string& prefix) : path_(make_temp_dir(prefix)) {}

TempDir::~TempDir() {
  std::error_code ec;
  stdfs::remove_all(path_, ec);
}

std::string TempDir::write(const std::string& relative, const std::string& content) const {
  const std::string file = *this / relative;
  write_file(file, content);
  return file;
}

ScopedEnv::ScopedEnv(const std::string& name, std::optional<std::string> value) : name_(name) {
  if (const char* old = std::getenv(name.c_str())) old_ = old;
  if (value) {
    ::setenv(name.c_str(), value->c_str(), 1);
  } else {
    ::unsetenv(name.c_str());
  }
}

ScopedEnv::~ScopedEnv() {
  if (old_) {
    ::setenv(name_.c_str(), old_->c_str(), 1);
  } else {
    ::unsetenv(name_.c_str());
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& data) {
  const stdfs::path parent = stdfs::path(path).parent_path();
  if (!parent.empty()) stdfs::create_directories(parent);
  std::ofstream out(path, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string source_dir(const std::string& compiled_in) {
  const char* env = std::getenv("DTRAIN_TEST_SOURCE_DIR");
  return env != nullptr && *env ? env : compiled_in;
}

}  // namespace dtrain::testutil
