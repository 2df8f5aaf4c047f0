// Helpers every test suite needs: fresh temporary directories (plain and self-removing),
// a scoped environment variable, and small whole-file reads and writes. Plain C++ (no
// gtest, no dtrain library), linked as the static library dtrain_test_util.
//
//   testutil::TempDir tmp;                                // $TMPDIR/dtrain_test_XXXXXX
//   const std::string file = tmp.write("a/b.txt", "hello");  // creates a/
//   EXPECT_EQ(testutil::read_file(tmp / "a/b.txt"), "hello");
//   testutil::ScopedEnv cache("DTRAIN_CACHE", tmp.path());  // restored when it goes
//
// Not thread-safe: ScopedEnv calls setenv, which must not race with getenv.
#pragma once

#include <optional>
#include <string>

namespace dtrain::testutil {

// A new, empty directory $TMPDIR/<prefix>XXXXXX (mkdtemp; /tmp when TMPDIR is unset or
// empty), returned without a trailing '/'. Throws std::runtime_error when it cannot be
// created. Not removed automatically.
std::string make_temp_dir(const std::string& prefix);

// The repository's root for tests that read its files: $DTRAIN_TEST_SOURCE_DIR when set
// (a test run from another checkout), else `compiled_in` (the build's DTRAIN_SOURCE_DIR).
std::string source_dir(const std::string& compiled_in);

// make_temp_dir(prefix), removed with everything in it when the object goes away
// (errors ignored).
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "dtrain_test_");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // The path of `name` inside the directory ("<path>/<name>").
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  // Writes `content` to `relative` inside the directory (write_file: folders created);
  // returns its full path.
  std::string write(const std::string& relative, const std::string& content) const;

 private:
  std::string path_;
};

// Sets `name` to `value` (or unsets it, with nullopt) for the object's lifetime, then
// restores the previous value (or its absence).
class ScopedEnv {
 public:
  ScopedEnv(const std::string& name, std::optional<std::string> value);
  ~ScopedEnv();
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// The bytes of `path`. Throws std::runtime_error when it cannot be opened.
std::string read_file(const std::string& path);

// Writes `data` to `path` (binary, replacing it), creating missing parent directories.
// Throws std::runtime_error when it cannot be written.
void write_file(const std::string& path, const std::string& data);

}  // namespace dtrain::testutil
