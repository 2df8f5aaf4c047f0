// Rank agreement (see agree.h): how an error travels between ranks and how the ranks'
// errors become the one every rank throws.
#include "runtime/dist/agree.h"

#include <algorithm>
#include <cstdlib>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "runtime/base/interrupt.h"

namespace dtrain::dist::agree_detail {
namespace {

// Kind letters: C ConfigError, I<signal> Interrupted, E anything else.
struct Decoded {
  char kind = 'E';
  int signal = 0;
  std::string message;
};

Decoded decode_error(const std::string& e) {
  Decoded d;
  if (e.empty()) return d;
  d.kind = e[0];
  if (d.kind == 'I') {
    const size_t space = e.find(' ');
    d.signal = std::atoi(e.substr(1, space == std::string::npos ? 0 : space - 1).c_str());
    d.message = space == std::string::npos ? "" : e.substr(space + 1);
  } else {
    d.message = e.substr(1);
  }
  return d;
}

}  // namespace

std::string encode_error(const std::exception& e) {
  if (auto* i = dynamic_cast<const Interrupted*>(&e)) return fmt::format("I{} {}", i->signal(), e.what());
  if (dynamic_cast<const ConfigError*>(&e) != nullptr) return std::string("C") + e.what();
  return std::string("E") + e.what();
}

void throw_agreed(const std::vector<std::string>& errors, const std::string& what,
                  void (*fallback)(const std::string&)) {
  // Ranks with the same message are listed together ("ranks 0, 1: ..."), in rank order.
  std::vector<std::pair<std::string, std::vector<size_t>>> groups;
  bool config = false;
  int signal = 0;
  for (size_t r = 0; r < errors.size(); ++r) {
    if (errors[r].empty()) continue;
    const Decoded d = decode_error(errors[r]);
    config = config || d.kind == 'C';
    if (d.kind == 'I' && signal == 0) signal = d.signal;
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const auto& g) { return g.first == d.message; });
    if (it == groups.end()) {
      groups.push_back({d.message, {r}});
    } else {
      it->second.push_back(r);
    }
  }
  if (groups.empty()) return;
  std::string combined;
  for (const auto& [message, ranks] : groups) {
    if (!combined.empty()) combined += "; ";
    if (errors.size() > 1) {
      combined += fmt::format("{} {}: ", ranks.size() > 1 ? "ranks" : "rank", fmt::join(ranks, ", "));
    }
    combined += message;
  }
  const std::string message = fmt::format("{} failed: {}", what, combined);
  // A stop request wins (nothing is damaged, every rank must stop), then an incompatible
  // input (exit 2), then the caller's kind.
  if (signal != 0) throw Agreed<Interrupted>(message, signal);
  if (config) throw Agreed<ConfigError>(message);
  fallback(message);
  throw Agreed<Error>(message);  // fallback always throws
}

void check_same_calls(Communicator& comm, const std::string& api, const std::string& call,
                      void (*fallback)(const std::string&)) {
  const auto all = comm.all_gather_bytes(call);
  if (std::all_of(all.begin(), all.end(), [&](const std::string& c) { return c == call; })) return;
  std::string calls;
  for (size_t q = 0; q < all.size(); ++q) calls += fmt::format("\n  rank {}: {}", q, all[q]);
  fallback(fmt::format("{} methods are collective, but the ranks called different ones:{}", api, calls));
  throw Error(calls);
}

}  // namespace dtrain::dist::agree_detail
