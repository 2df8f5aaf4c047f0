// Matching the keys of loaded weights to a model's, as fvcore and detectron2 do: a common
// "module." prefix (DistributedDataParallel's) is stripped, and with the heuristics on
// (detectron2's align_and_update_state_dicts) each model key takes the loaded key with
// the longest suffix match at a '.' boundary ("h.0.attn.w" <-> "transformer.h.0.attn.w").
//
//   KeyMatch m = match_keys(model_shapes, loaded_shapes, /*heuristics=*/true);
//   for (auto& [model_key, loaded_key] : m.matched) ...
//   DTRAIN_LOG_INFO("{}", m.table());
//
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace dtrain::interop {

using KeyShapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;

// The outcome of matching, with one report table.
struct KeyMatch {
  struct Pair {
    std::string model_key, loaded_key;
  };
  struct Mismatch {
    std::string model_key, loaded_key;
    std::vector<int64_t> model_shape, loaded_shape;
  };
  std::vector<Pair> matched;              // same shape: load loaded_key into model_key
  std::vector<Mismatch> shape_mismatch;   // matched by name, shapes differ: not loaded
  std::vector<std::string> unmatched_model;  // model keys nothing matched
  std::vector<std::string> unused_loaded;    // loaded keys no model key took
  std::string stripped_prefix;               // "module." when it was stripped, else ""
  bool heuristics = false;

  // Everything matched exactly one to one with equal shapes.
  bool clean() const {
    return shape_mismatch.empty() && unmatched_model.empty() && unused_loaded.empty();
  }
  // One table: "matched | model key <- loaded key" (only renamed pairs, and a count of the
  // pairs matched by equal names), "shape | model key <- loaded key | loaded [..] vs
  // model [..]", "missing | model key", "unused | loaded key".
  std::string table() const;
};

// Matches `loaded` onto `model` (both in their own order). Throws
// dtrain::CheckpointError when, with the heuristics, one loaded key would feed two model
// keys (detectron2 refuses that too), naming the three keys.
KeyMatch match_keys(const KeyShapes& model, const KeyShapes& loaded, bool heuristics);

}  // namespace dtrain::interop
