// Helpers shared by the parts of the node-local tier (local_tier.cpp: snapshots;
// local_restore.cpp: the resume). Internal to dtrain::checkpoint.
#pragma once

#include <cstdint>
#include <limits>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "runtime/base/fs.h"

namespace dtrain::checkpoint::local_detail {

inline std::string snap_name(int64_t iteration) { return fmt::format("snap-{:010d}", iteration); }

// The iteration of a committed snapshot directory's name, or -1.
inline int64_t snap_iteration(const std::string& name) {
  static const std::regex re("snap-([0-9]{10})");
  std::smatch m;
  return std::regex_match(name, m, re) ? std::stoll(m[1].str()) : -1;
}

// Whole-file reads of the tier's own shard files (no size limit beyond memory).
inline fs::ReadOptions whole_file() {
  fs::ReadOptions o;
  o.max_bytes = std::numeric_limits<size_t>::max() / 2;
  o.no_follow = true;
  return o;
}

// This rank's dest and source in one round of transfers (-1: none).
inline std::pair<int, int> my_partners(const std::vector<std::pair<int, int>>& round, int rank) {
  int dest = -1, source = -1;
  for (const auto& [from, to] : round) {
    if (from == rank) dest = to;
    if (to == rank) source = from;
  }
  return {dest, source};
}

}  // namespace dtrain::checkpoint::local_detail
