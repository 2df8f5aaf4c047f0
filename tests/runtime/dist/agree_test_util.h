// A typed message for the tests of dist::all_gather<T>/broadcast<T> (agree_test.cpp,
// agree_mpi_test.cpp): an iteration and a name, encoded as "<iteration> <name>".
#pragma once

#include <cstdlib>
#include <string>

#include <fmt/format.h>

#include "runtime/base/error.h"

namespace dtrain::testing {

struct TestMessage {
  int iteration = 0;
  std::string name;

  std::string encode() const { return fmt::format("{} {}", iteration, name); }
  // Throws dtrain::Error naming `from_rank` for bytes without "<number> ".
  static TestMessage decode(const std::string& bytes, int from_rank) {
    const size_t space = bytes.find(' ');
    char* end = nullptr;
    const long iteration = std::strtol(bytes.c_str(), &end, 10);
    if (space == std::string::npos || end != bytes.c_str() + space || space == 0) {
      throw Error(fmt::format("TestMessage from rank {}: cannot read {} bytes", from_rank,
                              bytes.size()));
    }
    return {static_cast<int>(iteration), bytes.substr(space + 1)};
  }
  bool operator==(const TestMessage& o) const { return iteration == o.iteration && name == o.name; }
};

}  // namespace dtrain::testing
