// Rank agreement: the one rule for errors in collective sequences. Either every rank
// runs a step and all throw the same error or none does (all_or_none), or one rank runs
// it and broadcasts its result or its error (on_rank/on_root). Every rank must make the
// same calls in the same order (check_collective verifies that for public collective
// APIs). Typed messages go through all_gather<T>/broadcast<T>, serialized by the type's
// own encode()/decode() in one place.
//
//   dist::all_or_none<CheckpointError>(comm, "loading 'x'", [&] { plan = make_plan(); });
//   std::string dir = dist::on_root<CheckpointError>(comm, "saving", [&] { return mkdir(); });
//
// An error's kind travels with its text: a ConfigError on any rank is a ConfigError on
// every rank (the run and its input are incompatible: exit 2), an Interrupted stays an
// Interrupted (with its signal), anything else becomes `Err`. Messages list the failing
// ranks ("ranks 0, 1: ...") in rank order. Users: the Checkpointer, foreign_load and
// fetch_remote (checkpoint/), default_setup and resolve_seed (engine/). Not thread-safe:
// call from the training thread, like the Communicator itself (communicator.h).
#pragma once

#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/dist/communicator.h"

namespace dtrain::dist {

namespace agree_detail {

// An error as it travels between ranks: "" for none, else a kind letter and the text.
std::string encode_error(const std::exception& e);
// Throws the agreed error for `what` from every rank's encoded error (all empty: returns).
// `fallback` throws a message as the caller's error type.
void throw_agreed(const std::vector<std::string>& errors, const std::string& what,
                  void (*fallback)(const std::string&));

template <typename Err>
[[noreturn]] void throw_as(const std::string& message) {
  throw Agreed<Err>(message);
}

}  // namespace agree_detail

// Every rank runs `fn`; errors are exchanged (one all-gather) so that every rank throws
// the same error, "<what> failed: rank 1: <message>", or none does.
template <typename Err = Error, typename Fn>
void all_or_none(Communicator& comm, const std::string& what, Fn&& fn) {
  std::string error;
  try {
    fn();
  } catch (const std::exception& e) {
    error = agree_detail::encode_error(e);
  }
  agree_detail::throw_agreed(comm.all_gather_bytes(error), what, &agree_detail::throw_as<Err>);
}

// Rank `root` runs `fn` (returning a string) and broadcasts its result, or its error for
// every rank to throw ("<what> failed: <message>").
template <typename Err = Error, typename Fn>
std::string on_rank(Communicator& comm, int root, const std::string& what, Fn&& fn) {
  std::string message;
  if (comm.rank() == root) {
    try {
      message = "+" + fn();
    } catch (const std::exception& e) {
      message = "-" + agree_detail::encode_error(e);
    }
  }
  comm.broadcast_bytes(message, root);
  if (!message.empty() && message[0] == '-') {
    agree_detail::throw_agreed({message.substr(1)}, what, &agree_detail::throw_as<Err>);
  }
  return message.substr(1);
}

// Rank 0 runs `fn` (see on_rank).
template <typename Err = Error, typename Fn>
std::string on_root(Communicator& comm, const std::string& what, Fn&& fn) {
  return on_rank<Err>(comm, 0, what, std::forward<Fn>(fn));
}

// Throws Err on every rank unless every rank called `api`'s method `what` with the
// same argument: "<api> methods are collective, but the ranks called different ones:"
// and a line per rank.
template <typename Err = Error>
void check_collective(Communicator& comm, const std::string& api, const std::string& what,
                      const std::string& arg);

// Every rank's `mine`, indexed by rank. T has `std::string encode() const` and
// `static T decode(const std::string& bytes, int from_rank)` (which throws on bytes
// it cannot read, naming the rank). On one rank `mine` is returned as it is, without
// encoding it (a local snapshot's shard report: ~1.5 ms of JSON each commit); the
// collective still runs, so that its failure surfaces as on more ranks.
template <typename T>
std::vector<T> all_gather(Communicator& comm, const T& mine) {
  if (comm.size() == 1) {
    comm.all_gather_bytes(std::string());
    return {mine};
  }
  const auto bytes = comm.all_gather_bytes(mine.encode());
  std::vector<T> out;
  out.reserve(bytes.size());
  for (size_t r = 0; r < bytes.size(); ++r) out.push_back(T::decode(bytes[r], static_cast<int>(r)));
  return out;
}

// Rank `root`'s `value` on every rank (see all_gather for T).
template <typename T>
T broadcast(Communicator& comm, const T& value, int root) {
  std::string bytes = comm.rank() == root ? value.encode() : std::string();
  comm.broadcast_bytes(bytes, root);
  return T::decode(bytes, root);
}

namespace agree_detail {
// Throws through `fallback` unless every rank's call is the same (check_collective).
void check_same_calls(Communicator& comm, const std::string& api, const std::string& call,
                      void (*fallback)(const std::string&));
}  // namespace agree_detail

template <typename Err>
void check_collective(Communicator& comm, const std::string& api, const std::string& what,
                      const std::string& arg) {
  agree_detail::check_same_calls(comm, api, what + "(" + arg + ")", &agree_detail::throw_as<Err>);
}

}  // namespace dtrain::dist
