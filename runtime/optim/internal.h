// Helpers shared by the optim sources (not part of the public API): matching a config
// string against its valid spellings. Functions of their arguments only: thread-safe.
#pragma once

#include <cctype>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "runtime/base/error.h"

namespace dtrain::optim::internal {

// `s` with ASCII letters lower-cased.
inline std::string ascii_lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The entry of `choices` equal to `value` ignoring case (its canonical spelling).
// Throws ConfigError "KEY: expected one of A, B; got 'value'".
inline const std::string& canonical_choice(const std::string& value,
                                           const std::vector<std::string>& choices,
                                           const char* key) {
  const std::string lower = ascii_lower(value);
  for (const std::string& c : choices) {
    if (ascii_lower(c) == lower) return c;
  }
  throw ConfigError(
      fmt::format("{}: expected one of {}; got '{}'", key, fmt::join(choices, ", "), value));
}

}  // namespace dtrain::optim::internal
