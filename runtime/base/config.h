// Typed configuration tree, detectron2 CfgNode style, with every key declared once.
//
// Keys are dotted upper-case paths ("SOLVER.BASE_LR"). The schema in config_schema.cpp
// is the single place that declares each key's type, default and one-line doc; a YAML
// file or a command-line override naming any other key is an error that suggests the
// closest valid key.
//
//   dtrain::Config cfg = dtrain::Config::defaults();
//   cfg.merge_file("configs/mlp_synthetic.yaml");     // follows _BASE_ chains
//   cfg.merge_overrides({"SOLVER.BASE_LR", "0.1", "SOLVER.STEPS", "(10, 30)"});
//   cfg.freeze();
//   double lr = cfg.get_float("SOLVER.BASE_LR");
//
// Not thread-safe for mutation; a frozen Config may be read from any thread.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace dtrain {

enum class ConfigType { kBool, kInt, kFloat, kString, kIntList, kFloatList, kStringList };

// Human-readable type name ("int", "list of float", ...), used in error messages.
const char* config_type_name(ConfigType type);

using ConfigValue = std::variant<bool, int64_t, double, std::string, std::vector<int64_t>,
                                 std::vector<double>, std::vector<std::string>>;

// The values a numeric key (or each element of a numeric list key) may take. Bounds
// are inclusive unless marked open. NaN is never allowed; infinity only with allow_inf
// (which needs an infinite max). Checked when YAML files and command-line overrides are
// merged (set() checks types only).
struct ConfigRange {
  double min = -HUGE_VAL;
  double max = HUGE_VAL;
  bool min_open = false;   // min itself is excluded ("> 0")
  bool max_open = false;   // max itself is excluded ("< 1")
  bool allow_inf = false;  // +inf is a meaningful value (e.g. the inf-norm)

  // True when `value` lies in the range.
  bool contains(double value) const;
  // The range as people write it: ">= 1", "(0, 1024]", "finite, >= 0", "> 0 or .inf";
  // `integer` leaves out "finite" and prints the bounds as integers.
  std::string text(bool integer) const;
};

// One declared key.
struct ConfigKeySpec {
  std::string key;      // dotted, e.g. "SOLVER.BASE_LR"
  ConfigType type;
  ConfigValue default_value;
  std::string doc;      // one line
  // Required for int, float and their lists (the schema is checked for it once).
  std::optional<ConfigRange> range = std::nullopt;
};

// Every key dtrain knows, in a stable order (config_schema.cpp).
const std::vector<ConfigKeySpec>& config_schema();

class Config {
 public:
  // A config holding every key's default.
  static Config defaults();
  // defaults(), then merge_file(path).
  static Config from_file(const std::string& path);

  // Merges a YAML file: first its _BASE_ (a path relative to the file, or a list of
  // them merged in order, later ones overriding earlier ones; recursively), then its own
  // keys, which override every base. Errors name the file (and line for malformed YAML),
  // the key and what was expected; a file that is not a YAML mapping is never quoted.
  // Numeric values outside their key's ConfigRange are refused. Throws ConfigError.
  void merge_file(const std::string& path);
  // Merges YAML text (what merge_file does after reading); `origin` names it in errors.
  // A `_BASE_` in the text is resolved relative to the current working directory.
  void merge_yaml(const std::string& yaml_text, const std::string& origin);
  // Merges KEY VALUE pairs; each VALUE is parsed as YAML, and "(a, b)" as a list.
  // Throws ConfigError on an odd token count, unknown key, wrong type or a value outside
  // the key's range.
  void merge_overrides(const std::vector<std::string>& tokens);
  // Sets one key, type-checked (an int is accepted for a float key); not range-checked,
  // so that code (and tests) can hand any value to the component that validates it.
  // Throws ConfigError.
  void set(const std::string& key, const ConfigValue& value);
  // All merge_* and set() calls are all-or-nothing: when one throws, the config is
  // unchanged.

  // After freeze(), set/merge_* throw ConfigError.
  void freeze() { frozen_ = true; }
  bool frozen() const { return frozen_; }
  // Makes a frozen config mutable again (detectron2's CfgNode.defrost()).
  void defrost() { frozen_ = false; }

  // True when both hold the same value for every key (the frozen flag is ignored).
  bool operator==(const Config& other) const { return values_ == other.values_; }
  bool operator!=(const Config& other) const { return !(*this == other); }

  // Typed getters; throw ConfigError for an unknown key or a type mismatch.
  bool get_bool(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  const std::vector<int64_t>& get_int_list(const std::string& key) const;
  const std::vector<double>& get_float_list(const std::string& key) const;
  const std::vector<std::string>& get_string_list(const std::string& key) const;
  const ConfigValue& get(const std::string& key) const;

  // Every key whose value differs from `other`'s: (key, this value, other's value), as
  // YAML text, in schema order.
  struct Difference {
    std::string key, value, other_value;
  };
  std::vector<Difference> diff(const Config& other) const;

  // The whole tree as nested YAML (loadable again with merge_yaml).
  std::string to_yaml() const;
  // Every key with its type, default, doc and allowed range, for `dtrain train
  // --help-config`.
  static std::string help_text();
  // The declared key closest to `key` (edit distance), for "did you mean" messages.
  // Case-insensitive; a key given without its section ("BASE_LR") matches the declared
  // key it ends with ("SOLVER.BASE_LR"). Ties go to the key declared first.
  static std::string closest_key(const std::string& key);
  // True when `key` is a declared (leaf) key, e.g. "SOLVER.BASE_LR" but not "SOLVER".
  static bool has_key(const std::string& key);

 private:
  Config() = default;
  std::vector<ConfigValue> values_;  // parallel to config_schema()
  bool frozen_ = false;
};

}  // namespace dtrain
