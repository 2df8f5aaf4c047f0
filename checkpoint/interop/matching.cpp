// Key matching between loaded weights and a model (see matching.h).
#include "checkpoint/interop/matching.h"

#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "runtime/base/error.h"

namespace dtrain::interop {
namespace {

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// Whether `shorter` is `longer` or a '.'-aligned suffix of it.
bool suffix_at_dot(const std::string& longer, const std::string& shorter) {
  if (longer.size() < shorter.size()) return false;
  if (longer.size() == shorter.size()) return longer == shorter;
  return longer[longer.size() - shorter.size() - 1] == '.' &&
         longer.compare(longer.size() - shorter.size(), shorter.size(), shorter) == 0;
}

// The loaded key each model key takes (-1 for none): an equal name, else with the
// heuristics the longest '.'-aligned suffix match in either direction, when unique.
std::vector<int> choose(const KeyShapes& model, const std::vector<std::string>& loaded,
                        bool heuristics) {
  std::map<std::string, int> exact;
  for (size_t j = 0; j < loaded.size(); ++j) exact.emplace(loaded[j], static_cast<int>(j));
  std::vector<int> pick(model.size(), -1);
  for (size_t i = 0; i < model.size(); ++i) {
    const std::string& m = model[i].first;
    if (auto it = exact.find(m); it != exact.end()) {
      pick[i] = it->second;
      continue;
    }
    if (!heuristics) continue;
    size_t best = 0;
    int best_j = -1;
    bool tie = false;
    for (size_t j = 0; j < loaded.size(); ++j) {
      const std::string& c = loaded[j];
      if (!suffix_at_dot(m, c) && !suffix_at_dot(c, m)) continue;
      const size_t score = std::min(m.size(), c.size());
      if (score > best) {
        best = score;
        best_j = static_cast<int>(j);
        tie = false;
      } else if (score == best) {
        tie = true;
      }
    }
    if (!tie) pick[i] = best_j;
  }
  return pick;
}

}  // namespace

KeyMatch match_keys(const KeyShapes& model, const KeyShapes& loaded, bool heuristics) {
  KeyMatch out;
  out.heuristics = heuristics;
  std::vector<std::string> names;
  for (const auto& [k, s] : loaded) names.push_back(k);
  // fvcore's _strip_prefix_if_present: only when every loaded key has it.
  const std::string prefix = "module.";
  bool all_prefixed = !names.empty();
  for (const auto& n : names) all_prefixed = all_prefixed && starts_with(n, prefix);
  if (all_prefixed) {
    for (auto& n : names) n = n.substr(prefix.size());
    out.stripped_prefix = prefix;
  }
  const std::vector<int> pick = choose(model, names, heuristics);
  std::vector<int> taken_by(loaded.size(), -1);
  for (size_t i = 0; i < model.size(); ++i) {
    const int j = pick[i];
    if (j < 0) {
      out.unmatched_model.push_back(model[i].first);
      continue;
    }
    DTRAIN_CHECK_T(CheckpointError, taken_by[j] < 0,
                   "loaded key '{}' matches two model keys, '{}' and '{}'; rename the keys or turn "
                   "the matching heuristics off", loaded[j].first, model[taken_by[j]].first,
                   model[i].first);
    taken_by[j] = static_cast<int>(i);
    if (model[i].second != loaded[j].second) {
      out.shape_mismatch.push_back(
          {model[i].first, loaded[j].first, model[i].second, loaded[j].second});
    } else {
      out.matched.push_back({model[i].first, loaded[j].first});
    }
  }
  for (size_t j = 0; j < loaded.size(); ++j) {
    if (taken_by[j] < 0) out.unused_loaded.push_back(loaded[j].first);
  }
  return out;
}

std::string KeyMatch::table() const {
  std::string out;
  size_t same = 0;
  if (!stripped_prefix.empty()) {
    out += fmt::format("  prefix     | '{}' stripped from every loaded key\n", stripped_prefix);
  }
  for (const auto& p : matched) {
    if (p.loaded_key == stripped_prefix + p.model_key) {
      ++same;
      continue;
    }
    out += fmt::format("  matched    | {} <- {}\n", p.model_key, p.loaded_key);
  }
  for (const auto& m : shape_mismatch) {
    out += fmt::format("  shape      | {} <- {} | loaded {} vs model {} (not loaded)\n",
                       m.model_key, m.loaded_key, m.loaded_shape, m.model_shape);
  }
  for (const auto& k : unmatched_model) out += fmt::format("  missing    | {}\n", k);
  for (const auto& k : unused_loaded) out += fmt::format("  unused     | {}\n", k);
  out += fmt::format("  {} keys matched by name, {} by suffix{}; {} shape mismatches, {} model "
                     "keys missing, {} loaded keys unused\n",
                     same, matched.size() - same, heuristics ? " (matching heuristics on)" : "",
                     shape_mismatch.size(), unmatched_model.size(), unused_loaded.size());
  return out;
}

}  // namespace dtrain::interop
