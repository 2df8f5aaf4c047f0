// Splitting a message into MPI calls of at most `max_count` elements (internal to the
// MPI backend: mpi_communicator.cpp, mpi_exchange.cpp).
#pragma once

#include <algorithm>
#include <cstdint>

namespace dtrain::dist::detail {

// Calls fn(offset, count) for consecutive chunks of at most `max_count` of `total`.
template <typename Fn>
void for_each_chunk(int64_t total, int64_t max_count, Fn fn) {
  for (int64_t offset = 0; offset < total; offset += max_count) {
    fn(offset, static_cast<int>(std::min(max_count, total - offset)));
  }
}

}  // namespace dtrain::dist::detail
