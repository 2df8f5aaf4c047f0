// Helpers of the dtrain::Config tests (config_test.cpp, config_files_test.cpp): the
// message of an expected ConfigError, and a scoped working directory.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "runtime/base/config.h"
#include "runtime/base/error.h"

namespace dtrain::testutil {

// Changes the working directory for the lifetime of the object.
class ScopedChdir {
 public:
  explicit ScopedChdir(const std::filesystem::path& dir) : old_(std::filesystem::current_path()) {
    std::filesystem::current_path(dir);
  }
  ~ScopedChdir() { std::filesystem::current_path(old_); }

 private:
  std::filesystem::path old_;
};

// The message of the ConfigError that `fn` throws ("" and a test failure if none).
template <typename Fn>
inline std::string config_error(Fn&& fn) {
  try {
    fn();
  } catch (const ConfigError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected ConfigError, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected ConfigError, nothing was thrown";
  return "";
}

inline std::string yaml_error(const std::string& yaml, const std::string& origin = "test.yaml") {
  Config cfg = Config::defaults();
  return config_error([&] { cfg.merge_yaml(yaml, origin); });
}

inline std::string override_error(const std::vector<std::string>& tokens) {
  Config cfg = Config::defaults();
  return config_error([&] { cfg.merge_overrides(tokens); });
}

}  // namespace dtrain::testutil
