// Rank agreement inside the checkpointer's collective sequences (internal): every rank
// runs a step and all throw the same error or none does, or one rank runs it and
// broadcasts the result or the error. Not a public header.
#pragma once

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "runtime/base/error.h"
#include "runtime/dist/communicator.h"

namespace dtrain::checkpoint::internal {

// An error's kind travels with its text between ranks: a ConfigError (the run and the
// checkpoint are incompatible: exit 2, never a reason to try an older checkpoint) stays
// a ConfigError on every rank; anything else becomes a CheckpointError.
inline constexpr char kConfigErrorMark = '\x01';

inline std::string error_text(const std::exception& e) {
  const bool config = dynamic_cast<const ConfigError*>(&e) != nullptr;
  return (config ? std::string(1, kConfigErrorMark) : std::string()) + e.what();
}

// Throws `message` as a ConfigError when `config`, else as a CheckpointError.
[[noreturn]] inline void throw_agreed(bool config, const std::string& message) {
  if (config) throw ConfigError(message);
  throw CheckpointError(message);
}

// Every rank runs `fn`; errors are exchanged so that every rank throws the same
// CheckpointError (listing each failing rank) or none does; a ConfigError on any rank
// is a ConfigError everywhere.
template <typename Fn>
void all_or_none(dist::Communicator& comm, const std::string& what, Fn&& fn) {
  std::string error;
  try {
    fn();
  } catch (const std::exception& e) {
    error = error_text(e);
  }
  auto errors = comm.all_gather_bytes(error);
  bool config = false;
  for (auto& e : errors) {
    if (!e.empty() && e[0] == kConfigErrorMark) {
      config = true;
      e.erase(0, 1);
    }
  }
  // Ranks with the same message are listed together ("ranks 0, 1: ..."), in rank order.
  std::vector<std::pair<std::string, std::vector<size_t>>> groups;
  for (size_t r = 0; r < errors.size(); ++r) {
    if (errors[r].empty()) continue;
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const auto& g) { return g.first == errors[r]; });
    if (it == groups.end()) {
      groups.push_back({errors[r], {r}});
    } else {
      it->second.push_back(r);
    }
  }
  if (groups.empty()) return;
  std::string combined;
  for (const auto& [message, ranks] : groups) {
    if (!combined.empty()) combined += "; ";
    if (errors.size() > 1) {
      combined +=
          fmt::format("{} {}: ", ranks.size() > 1 ? "ranks" : "rank", fmt::join(ranks, ", "));
    }
    combined += message;
  }
  throw_agreed(config, fmt::format("{} failed: {}", what, combined));
}

// Rank `root` runs `fn` and broadcasts its string result, or its error to throw everywhere.
template <typename Fn>
std::string on_rank(dist::Communicator& comm, int root, const std::string& what, Fn&& fn) {
  std::string message;
  if (comm.rank() == root) {
    try {
      message = "+" + fn();
    } catch (const std::exception& e) {
      message = "-" + error_text(e);
    }
  }
  comm.broadcast_bytes(message, root);
  if (!message.empty() && message[0] == '-') {
    const bool config = message.size() > 1 && message[1] == kConfigErrorMark;
    throw_agreed(config, fmt::format("{} failed: {}", what, message.substr(config ? 2 : 1)));
  }
  return message.substr(1);
}

// Rank 0 runs `fn` (see on_rank).
template <typename Fn>
std::string on_root(dist::Communicator& comm, const std::string& what, Fn&& fn) {
  return on_rank(comm, 0, what, std::forward<Fn>(fn));
}

}  // namespace dtrain::checkpoint::internal
