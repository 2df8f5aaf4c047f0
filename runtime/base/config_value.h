// Internal to the config module (config.cpp, config_value.cpp): YAML scalar parsing and
// formatting, decoding a YAML node into a key's typed value, range checks, YAML dump.
// Not a public header: include runtime/base/config.h instead. Stateless; thread-safe.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/base/config.h"

namespace dtrain::config_internal {

// The ConfigValue alternative that holds a value of `type` (same order as the enum).
inline size_t variant_index(ConfigType type) { return static_cast<size_t>(type); }
// The element type of a list type (and the type itself for a scalar type).
ConfigType element_type(ConfigType type);
inline bool is_list(ConfigType type) { return element_type(type) != type; }
// True for int, float and their lists: the types that carry a ConfigRange.
bool is_numeric(ConfigType type);

// YAML 1.1/1.2 scalar spellings, as yaml-cpp and PyYAML read them.
std::optional<int64_t> parse_int(const std::string& text);
std::optional<double> parse_float(const std::string& text);
std::optional<bool> parse_bool(const std::string& text);
// Shortest YAML text that reads back as the same double (".nan", "1.0e-08").
std::string format_float(double value);
// A string as a YAML scalar, quoted and escaped when a plain one would read otherwise.
std::string format_string(const std::string& text);
// A value as YAML text (flow style for lists), as written by Config::to_yaml().
std::string format_value(const ConfigValue& value);
// `text` cut to the longest value echoed back in an error message.
std::string shorten(std::string text);

// "file:line" (1-based) for a node's mark, or just the origin when it has no mark.
std::string where(const std::string& origin, const YAML::Mark& mark);
// What a node holds, for error messages: "'1.5'", "a list [1, 2]", "null (an empty value)".
std::string describe(const YAML::Node& node);
// Only the kind of a node ("a scalar", "a list", ...), never its content: for text that
// may not be a config at all (a _BASE_ pointing at an arbitrary file).
std::string describe_kind(const YAML::Node& node);

// Converts `node` to the type of `spec` and checks it against spec.range, or throws a
// ConfigError located at `loc` that names the key, the value and the allowed range.
ConfigValue decode_value(const ConfigKeySpec& spec, const YAML::Node& node,
                         const std::string& loc);

// The whole tree as nested YAML, keys in schema order grouped by section (to_yaml()).
std::string nested_yaml(const std::vector<ConfigValue>& values);

}  // namespace dtrain::config_internal
