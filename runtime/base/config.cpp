// Typed configuration tree (see config.h): schema lookup, YAML merging with _BASE_
// inheritance, command-line overrides, type checking, YAML dump and --help-config text.
#include "runtime/base/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <unordered_map>
#include <utility>

#include "runtime/base/error.h"
#include "runtime/base/fs.h"

namespace dtrain {
namespace {

namespace stdfs = std::filesystem;

constexpr const char* kBaseKey = "_BASE_";
constexpr const char* kCommandLine = "command line";
constexpr size_t kMaxShownValue = 80;  // longest value echoed back in an error message

// The ConfigValue alternative that holds a value of `type` (same order as the enum).
size_t variant_index(ConfigType type) { return static_cast<size_t>(type); }

// The element type of a list type (and the type itself for a scalar type).
ConfigType element_type(ConfigType type) {
  switch (type) {
    case ConfigType::kIntList:
      return ConfigType::kInt;
    case ConfigType::kFloatList:
      return ConfigType::kFloat;
    case ConfigType::kStringList:
      return ConfigType::kString;
    default:
      return type;
  }
}

bool is_list(ConfigType type) { return element_type(type) != type; }

// ---- schema lookup -------------------------------------------------------------------

// Lookup tables derived once from config_schema(); immutable afterwards.
struct SchemaIndex {
  std::unordered_map<std::string, size_t> key_to_index;
  std::unordered_map<std::string, std::string> section_first_key;  // "SOLVER" -> "SOLVER.OPTIMIZER"
  std::vector<std::string> sections;  // every proper prefix of a key, first-appearance order
};

const SchemaIndex& schema_index() {
  static const SchemaIndex index = [] {
    SchemaIndex idx;
    const std::vector<ConfigKeySpec>& schema = config_schema();
    for (size_t i = 0; i < schema.size(); ++i) {
      const ConfigKeySpec& spec = schema[i];
      DTRAIN_CHECK(!spec.key.empty() && spec.key.front() != '.' && spec.key.back() != '.' &&
                       spec.key.find("..") == std::string::npos,
                   "config schema: malformed key '{}'", spec.key);
      DTRAIN_CHECK(idx.key_to_index.emplace(spec.key, i).second,
                   "config schema: key '{}' is declared twice", spec.key);
      DTRAIN_CHECK(spec.default_value.index() == variant_index(spec.type),
                   "config schema: the default of '{}' is not a {}", spec.key,
                   config_type_name(spec.type));
      for (size_t dot = spec.key.find('.'); dot != std::string::npos;
           dot = spec.key.find('.', dot + 1)) {
        std::string section = spec.key.substr(0, dot);
        if (idx.section_first_key.emplace(section, spec.key).second) {
          idx.sections.push_back(std::move(section));
        }
      }
    }
    for (const std::string& section : idx.sections) {
      DTRAIN_CHECK(idx.key_to_index.count(section) == 0,
                   "config schema: '{}' is declared both as a key and as a section", section);
    }
    return idx;
  }();
  return index;
}

std::optional<size_t> find_key(const std::string& key) {
  const auto& map = schema_index().key_to_index;
  auto it = map.find(key);
  if (it == map.end()) return std::nullopt;
  return it->second;
}

bool is_section(const std::string& name) {
  return schema_index().section_first_key.count(name) != 0;
}

std::string to_upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// Optimal string alignment distance: Levenshtein plus adjacent transpositions.
size_t edit_distance(const std::string& a, const std::string& b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[n][m];
}

// How far `query` (upper-cased) is from `candidate`: twice the edit distance to the whole
// candidate, or twice the distance to its trailing components (as many as `query` has)
// plus one, so that "BASE_LR" finds "SOLVER.BASE_LR" but a whole-key match wins ties.
size_t match_score(const std::string& query, const std::string& candidate) {
  size_t score = 2 * edit_distance(query, candidate);
  const size_t components = static_cast<size_t>(std::count(query.begin(), query.end(), '.')) + 1;
  size_t pos = candidate.size();
  for (size_t c = 0; c < components && pos != std::string::npos; ++c) {
    pos = pos == 0 ? std::string::npos : candidate.rfind('.', pos - 1);
  }
  if (pos != std::string::npos) {
    score = std::min(score, 2 * edit_distance(query, candidate.substr(pos + 1)) + 1);
  }
  return score;
}

// The declared key (or, with include_sections, key or section) closest to `name`.
std::string closest_name(const std::string& name, bool include_sections) {
  const std::string query = to_upper(name);
  std::string best;
  size_t best_score = std::numeric_limits<size_t>::max();
  auto consider = [&](const std::string& candidate) {
    const size_t score = match_score(query, candidate);
    if (score < best_score) {
      best_score = score;
      best = candidate;
    }
  };
  for (const ConfigKeySpec& spec : config_schema()) consider(spec.key);
  if (include_sections) {
    for (const std::string& section : schema_index().sections) consider(section);
  }
  return best;
}

[[noreturn]] void throw_unknown_key(const std::string& where, const std::string& key,
                                    bool include_sections) {
  throw ConfigError(fmt::format("{}: unknown config key '{}'; did you mean '{}'?", where, key,
                                closest_name(key, include_sections)));
}

// Index of a declared key, or a ConfigError that says what `key` is instead.
size_t lookup_or_throw(const std::string& key, const std::string& where) {
  if (auto index = find_key(key)) return *index;
  if (is_section(key)) {
    throw ConfigError(fmt::format("{}: '{}' is a config section, not a key; name one of its keys, "
                                  "e.g. '{}'",
                                  where, key, schema_index().section_first_key.at(key)));
  }
  throw_unknown_key(where, key, false);
}

// ---- scalar parsing and formatting -----------------------------------------------------

std::optional<int64_t> parse_int(const std::string& text) {
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  if (begin != end && *begin == '+') ++begin;
  if (begin == end) return std::nullopt;
  int64_t value = 0;
  auto [ptr, ec] = std::from_chars(begin, end, value);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

std::optional<double> parse_float(const std::string& text) {
  // YAML's spellings of the special values.
  static const std::map<std::string, double> kSpecial = {
      {".inf", HUGE_VAL},   {".Inf", HUGE_VAL},   {".INF", HUGE_VAL},   {"+.inf", HUGE_VAL},
      {"+.Inf", HUGE_VAL},  {"+.INF", HUGE_VAL},  {"-.inf", -HUGE_VAL}, {"-.Inf", -HUGE_VAL},
      {"-.INF", -HUGE_VAL}, {".nan", std::nan("")}, {".NaN", std::nan("")}, {".NAN", std::nan("")}};
  if (auto it = kSpecial.find(text); it != kSpecial.end()) return it->second;
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  if (begin != end && *begin == '+') ++begin;
  if (begin == end) return std::nullopt;
  double value = 0;
  auto [ptr, ec] = std::from_chars(begin, end, value, std::chars_format::general);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

std::optional<bool> parse_bool(const std::string& text) {
  bool value = false;
  if (!YAML::convert<bool>::decode(YAML::Node(text), value)) return std::nullopt;
  return value;
}

// Shortest text that reads back as the same double, always spelled as a YAML float
// ("1.0", "1.0e-08", ".inf") so that YAML readers, PyYAML included, see a float.
std::string format_float(double value) {
  if (std::isnan(value)) return ".nan";
  if (std::isinf(value)) return value > 0 ? ".inf" : "-.inf";
  std::string text = fmt::format("{}", value);
  const size_t exponent = text.find_first_of("eE");
  const bool has_dot = text.find('.') != std::string::npos;
  if (exponent == std::string::npos) {
    if (!has_dot) text += ".0";
  } else if (!has_dot) {
    text.insert(exponent, ".0");
  }
  return text;
}

// True when `text` can be written as a plain YAML scalar and still read as this string
// by yaml-cpp and PyYAML (no bool/null/number look-alikes, no indicator characters).
bool is_plain_string(const std::string& text) {
  if (text.empty()) return false;
  const unsigned char first = static_cast<unsigned char>(text.front());
  if (!(std::isalpha(first) || first == '_' || first == '/' || first == '.')) return false;
  for (char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (!(std::isalnum(u) || c == '_' || c == '.' || c == '/' || c == '-' || c == '+')) {
      return false;
    }
  }
  static const char* const kReserved[] = {"null", "Null", "NULL", "yes", "Yes", "YES", "no",
                                          "No",   "NO",   "on",   "On",  "ON",  "off", "Off",
                                          "OFF",  "true", "True", "TRUE", "false", "False",
                                          "FALSE", "y",   "Y",    "n",   "N"};
  for (const char* reserved : kReserved) {
    if (text == reserved) return false;
  }
  return !parse_bool(text) && !parse_float(text) && !parse_int(text);
}

std::string format_string(const std::string& text) {
  if (is_plain_string(text)) return text;
  std::string out = "\"";
  for (char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (u < 0x20 || u == 0x7f) {
          out += fmt::format("\\x{:02X}", u);
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

template <typename T, typename F>
std::string format_list(const std::vector<T>& items, F format_item) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ", ";
    out += format_item(items[i]);
  }
  return out + "]";
}

// A value as YAML text (flow style for lists), as written by to_yaml().
std::string format_value(const ConfigValue& value) {
  struct Visitor {
    std::string operator()(bool v) const { return v ? "true" : "false"; }
    std::string operator()(int64_t v) const { return fmt::format("{}", v); }
    std::string operator()(double v) const { return format_float(v); }
    std::string operator()(const std::string& v) const { return format_string(v); }
    std::string operator()(const std::vector<int64_t>& v) const {
      return format_list(v, [](int64_t x) { return fmt::format("{}", x); });
    }
    std::string operator()(const std::vector<double>& v) const {
      return format_list(v, format_float);
    }
    std::string operator()(const std::vector<std::string>& v) const {
      return format_list(v, format_string);
    }
  };
  return std::visit(Visitor{}, value);
}

// ---- YAML decoding -------------------------------------------------------------------

// "file:line" (1-based) for a node's mark, or just the origin when it has no mark.
std::string where(const std::string& origin, const YAML::Mark& mark) {
  if (mark.is_null() || mark.line < 0) return origin;
  return fmt::format("{}:{}", origin, mark.line + 1);
}

std::string shorten(std::string text) {
  if (text.size() > kMaxShownValue) text = text.substr(0, kMaxShownValue - 3) + "...";
  return text;
}

std::string flow_text(const YAML::Node& node) {
  YAML::Emitter out;
  out.SetMapFormat(YAML::Flow);
  out.SetSeqFormat(YAML::Flow);
  out << node;
  return shorten(out.c_str());
}

// What a node holds, for error messages: "'1.5'", "a list [1, 2]", "null (an empty value)".
std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "null (an empty value)";
    case YAML::NodeType::Scalar:
      return fmt::format("'{}'", shorten(node.Scalar()));
    case YAML::NodeType::Sequence:
      return "a list " + flow_text(node);
    case YAML::NodeType::Map:
      return "a mapping " + flow_text(node);
    default:
      return "an undefined value";
  }
}

// Converts a scalar node to a (non-list) `type`; nullopt when it does not fit.
std::optional<ConfigValue> decode_scalar(ConfigType type, const YAML::Node& node) {
  if (!node.IsScalar()) return std::nullopt;
  const std::string& text = node.Scalar();
  switch (type) {
    case ConfigType::kBool:
      if (auto v = parse_bool(text)) return ConfigValue(*v);
      return std::nullopt;
    case ConfigType::kInt:
      if (auto v = parse_int(text)) return ConfigValue(*v);
      return std::nullopt;
    case ConfigType::kFloat:
      if (auto v = parse_float(text)) return ConfigValue(*v);
      return std::nullopt;
    case ConfigType::kString:
      return ConfigValue(text);
    default:
      return std::nullopt;
  }
}

template <typename T>
std::vector<T> decode_list(const ConfigKeySpec& spec, const YAML::Node& node,
                           const std::string& loc) {
  std::vector<T> out;
  out.reserve(node.size());
  const ConfigType elem = element_type(spec.type);
  for (size_t i = 0; i < node.size(); ++i) {
    const YAML::Node item = node[i];
    std::optional<ConfigValue> value = decode_scalar(elem, item);
    if (!value) {
      throw ConfigError(fmt::format("{}: config key '{}' expects {}, got {} (element {}, {}, is "
                                    "not {} {})",
                                    loc, spec.key, config_type_name(spec.type), describe(node), i,
                                    describe(item), elem == ConfigType::kInt ? "an" : "a",
                                    config_type_name(elem)));
    }
    out.push_back(std::get<T>(std::move(*value)));
  }
  return out;
}

// Converts `node` to the type of `spec`, or throws a ConfigError located at `loc`.
ConfigValue decode_value(const ConfigKeySpec& spec, const YAML::Node& node,
                         const std::string& loc) {
  if (is_list(spec.type)) {
    if (node.IsSequence()) {
      switch (spec.type) {
        case ConfigType::kIntList:
          return decode_list<int64_t>(spec, node, loc);
        case ConfigType::kFloatList:
          return decode_list<double>(spec, node, loc);
        default:
          return decode_list<std::string>(spec, node, loc);
      }
    }
  } else if (std::optional<ConfigValue> value = decode_scalar(spec.type, node)) {
    return std::move(*value);
  }
  std::string hint;
  if (node.IsNull() && spec.type == ConfigType::kString) hint = "; write '' for an empty string";
  if (node.IsNull() && is_list(spec.type)) hint = "; write [] for an empty list";
  if (node.IsScalar() && is_list(spec.type)) {
    const std::string item = spec.type == ConfigType::kStringList ? format_string(node.Scalar())
                                                                   : node.Scalar();
    hint = fmt::format("; write a list such as [{}]", item);
  }
  throw ConfigError(fmt::format("{}: config key '{}' expects {}, got {}{}", loc, spec.key,
                                config_type_name(spec.type), describe(node), hint));
}

// Parses a YAML document, turning parser errors into "origin:line:column: ..." messages.
YAML::Node load_yaml(const std::string& text, const std::string& origin) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    if (e.mark.is_null()) {
      throw ConfigError(fmt::format("{}: malformed YAML: {}", origin, e.msg));
    }
    throw ConfigError(fmt::format("{}:{}:{}: malformed YAML: {}", origin, e.mark.line + 1,
                                  e.mark.column + 1, e.msg));
  }
}

std::string expand_user(const std::string& path) {
  if (path == "~" || path.rfind("~/", 0) == 0) {
    if (const char* home = std::getenv("HOME")) return std::string(home) + path.substr(1);
  }
  return path;
}

// Merges YAML documents into a copy of a Config's values, following _BASE_ chains.
class Merger {
 public:
  explicit Merger(std::vector<ConfigValue>* values) : values_(values) {}

  // Merges the file at `path`; `included_from` is the file whose _BASE_ names it ("" for
  // the top-level file), used in messages.
  void merge_file(const std::string& path, const std::string& included_from,
                  const std::string& written_as) {
    std::error_code ec;
    stdfs::path canonical = stdfs::weakly_canonical(path, ec);
    if (ec) canonical = stdfs::absolute(path);
    for (size_t i = 0; i < chain_.size(); ++i) {
      if (chain_[i].first == canonical) {
        std::string cycle;
        for (size_t j = i; j < chain_.size(); ++j) cycle += chain_[j].second + " -> ";
        throw ConfigError(fmt::format("{}: _BASE_ '{}' makes a cycle: {}{}", included_from,
                                      written_as, cycle, path));
      }
    }
    if (!stdfs::exists(path, ec)) {
      if (included_from.empty()) {
        throw ConfigError(fmt::format("config file '{}' not found", path));
      }
      throw ConfigError(fmt::format("{}: _BASE_ file '{}' not found (looked for '{}')",
                                    included_from, written_as, path));
    }
    std::string text;
    try {
      text = fs::read_file(path);
    } catch (const Error& e) {
      throw ConfigError(included_from.empty()
                            ? fmt::format("cannot read config file: {}", e.what())
                            : fmt::format("{}: cannot read _BASE_ file: {}", included_from,
                                          e.what()));
    }
    chain_.emplace_back(canonical, path);
    merge_text(text, path, stdfs::path(path).parent_path());
    chain_.pop_back();
  }

  // Merges one YAML document; a _BASE_ in it is resolved against `base_dir`.
  void merge_text(const std::string& text, const std::string& origin,
                  const stdfs::path& base_dir) {
    const YAML::Node root = load_yaml(text, origin);
    if (root.IsNull()) return;  // an empty document (or only comments)
    if (!root.IsMap()) {
      throw ConfigError(fmt::format("{}: expected a mapping of config keys at the top level "
                                    "(e.g. 'SOLVER:' with 'BASE_LR: 0.1' below it), got {}",
                                    where(origin, root.Mark()), describe(root)));
    }
    std::optional<YAML::Node> base;
    YAML::Mark base_mark;
    for (const auto& entry : root) {
      if (entry.first.IsScalar() && entry.first.Scalar() == kBaseKey) {
        if (base) {
          throw ConfigError(fmt::format("{}: duplicate key '{}' (first at line {})",
                                        where(origin, entry.first.Mark()), kBaseKey,
                                        base_mark.line + 1));
        }
        base = entry.second;
        base_mark = entry.first.Mark();
      }
    }
    if (base) {
      if (!base->IsScalar() || base->Scalar().empty()) {
        throw ConfigError(fmt::format("{}: {} expects the path of a config file, got {}",
                                      where(origin, base_mark), kBaseKey, describe(*base)));
      }
      const std::string written = base->Scalar();
      stdfs::path resolved(expand_user(written));
      if (resolved.is_relative()) resolved = base_dir / resolved;
      merge_file(resolved.string(), origin, written);
    }
    merge_map(root, "", origin);
  }

 private:
  // Merges the entries of a mapping whose keys sit under `prefix` ("" or "SOLVER.").
  void merge_map(const YAML::Node& map, const std::string& prefix, const std::string& origin) {
    std::map<std::string, int> seen;  // name -> 0-based line of its first occurrence
    for (const auto& entry : map) {
      const YAML::Node& key_node = entry.first;
      const YAML::Node& value = entry.second;
      const std::string loc = where(origin, key_node.Mark());
      if (!key_node.IsScalar()) {
        throw ConfigError(fmt::format("{}: config keys must be names, got {}", loc,
                                      describe(key_node)));
      }
      const std::string& name = key_node.Scalar();
      if (prefix.empty() && name == kBaseKey) continue;  // handled by merge_text
      if (auto [it, inserted] = seen.emplace(name, key_node.Mark().line); !inserted) {
        throw ConfigError(fmt::format("{}: duplicate key '{}' (first at line {})", loc,
                                      prefix + name, it->second + 1));
      }
      const std::string key = prefix + name;
      if (auto index = find_key(key)) {
        (*values_)[*index] = decode_value(config_schema()[*index], value, loc);
      } else if (is_section(key)) {
        if (value.IsNull()) continue;  // "MODEL:" with every key below commented out
        if (!value.IsMap()) {
          throw ConfigError(fmt::format(
              "{}: config key '{}' is a section and expects a mapping of its keys (e.g. '{}'), "
              "got {}",
              loc, key, schema_index().section_first_key.at(key), describe(value)));
        }
        merge_map(value, key + ".", origin);
      } else {
        throw_unknown(key, value, loc);
      }
    }
  }

  // An unknown key; for a whole unknown section, names its first leaf ("SOLVR.BASE_LR")
  // so that the suggestion is a full key ("SOLVER.BASE_LR"). The suggestion may be a
  // section ("SOLVER.CLIP_GRADIENT: x" suggests 'SOLVER.CLIP_GRADIENTS').
  [[noreturn]] static void throw_unknown(const std::string& key, const YAML::Node& value,
                                         const std::string& loc) {
    if (value.IsMap() && value.size() > 0) {
      const auto first = value.begin();
      if (first->first.IsScalar()) {
        throw_unknown(key + "." + first->first.Scalar(), first->second, loc);
      }
    }
    throw_unknown_key(loc, key, /*include_sections=*/true);
  }

  std::vector<ConfigValue>* values_;
  std::vector<std::pair<stdfs::path, std::string>> chain_;  // (canonical, as opened)
};

// Turns one command-line VALUE into a YAML node: "(a, b)" reads as the list [a, b]; for a
// string key, text that YAML cannot parse or reads as null is taken verbatim.
YAML::Node parse_override(const ConfigKeySpec& spec, const std::string& raw) {
  std::string text = raw;
  const size_t first = raw.find_first_not_of(" \t");
  const size_t last = raw.find_last_not_of(" \t");
  if (first != std::string::npos && raw[first] == '(' && raw[last] == ')') {
    text = "[" + raw.substr(first + 1, last - first - 1) + "]";
  }
  YAML::Node node;
  try {
    node = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    if (spec.type == ConfigType::kString) return YAML::Node(raw);
    throw ConfigError(fmt::format("{}: cannot parse the value '{}' of '{}' as YAML: {}",
                                  kCommandLine, raw, spec.key, e.msg));
  }
  if (spec.type == ConfigType::kString && node.IsNull()) return YAML::Node(raw);
  return node;
}

bool is_empty_list(const ConfigValue& value) {
  if (auto* v = std::get_if<std::vector<int64_t>>(&value)) return v->empty();
  if (auto* v = std::get_if<std::vector<double>>(&value)) return v->empty();
  if (auto* v = std::get_if<std::vector<std::string>>(&value)) return v->empty();
  return false;
}

// Converts a C++ value to the type of `spec` (int -> float, int list -> float list, an
// empty list of any type -> an empty list of this type), or throws.
ConfigValue coerce(const ConfigKeySpec& spec, const ConfigValue& value) {
  if (value.index() == variant_index(spec.type)) return value;
  if (spec.type == ConfigType::kFloat && std::holds_alternative<int64_t>(value)) {
    return static_cast<double>(std::get<int64_t>(value));
  }
  if (spec.type == ConfigType::kFloatList && std::holds_alternative<std::vector<int64_t>>(value)) {
    const auto& ints = std::get<std::vector<int64_t>>(value);
    return std::vector<double>(ints.begin(), ints.end());
  }
  if (is_list(spec.type) && is_empty_list(value)) {
    if (spec.type == ConfigType::kIntList) return std::vector<int64_t>{};
    if (spec.type == ConfigType::kFloatList) return std::vector<double>{};
    return std::vector<std::string>{};
  }
  throw ConfigError(fmt::format("set(): config key '{}' expects {}, got {} {}", spec.key,
                                config_type_name(spec.type),
                                config_type_name(static_cast<ConfigType>(value.index())),
                                shorten(format_value(value))));
}

// The index of `key`, checked to hold `type`; throws ConfigError otherwise.
size_t checked_index(const std::string& key, ConfigType type) {
  const size_t index = lookup_or_throw(key, "get()");
  const ConfigType actual = config_schema()[index].type;
  if (actual != type) {
    throw ConfigError(fmt::format("get(): config key '{}' is {}, not {}", key,
                                  config_type_name(actual), config_type_name(type)));
  }
  return index;
}

// Keys grouped by section in first-appearance order, for to_yaml().
struct KeyTree {
  std::string name;
  int leaf = -1;  // schema index of a key, -1 for a section
  std::vector<KeyTree> children;
};

KeyTree build_key_tree() {
  KeyTree root;
  const std::vector<ConfigKeySpec>& schema = config_schema();
  for (size_t i = 0; i < schema.size(); ++i) {
    KeyTree* node = &root;
    size_t start = 0;
    for (size_t dot = schema[i].key.find('.'); dot != std::string::npos;
         start = dot + 1, dot = schema[i].key.find('.', start)) {
      const std::string section = schema[i].key.substr(start, dot - start);
      auto it = std::find_if(node->children.begin(), node->children.end(),
                             [&](const KeyTree& c) { return c.leaf < 0 && c.name == section; });
      if (it == node->children.end()) {
        node->children.push_back(KeyTree{section, -1, {}});
        it = node->children.end() - 1;
      }
      node = &*it;
    }
    node->children.push_back(KeyTree{schema[i].key.substr(start), static_cast<int>(i), {}});
  }
  return root;
}

void emit_tree(const KeyTree& node, const std::vector<ConfigValue>& values, int indent,
               std::string* out) {
  for (const KeyTree& child : node.children) {
    out->append(static_cast<size_t>(indent), ' ');
    if (child.leaf >= 0) {
      *out += fmt::format("{}: {}\n", child.name, format_value(values[child.leaf]));
    } else {
      *out += child.name + ":\n";
      emit_tree(child, values, indent + 2, out);
    }
  }
}

}  // namespace

const char* config_type_name(ConfigType type) {
  switch (type) {
    case ConfigType::kBool:
      return "bool";
    case ConfigType::kInt:
      return "int";
    case ConfigType::kFloat:
      return "float";
    case ConfigType::kString:
      return "string";
    case ConfigType::kIntList:
      return "list of int";
    case ConfigType::kFloatList:
      return "list of float";
    case ConfigType::kStringList:
      return "list of string";
  }
  return "unknown type";
}

Config Config::defaults() {
  schema_index();  // validates the schema once
  Config config;
  for (const ConfigKeySpec& spec : config_schema()) config.values_.push_back(spec.default_value);
  return config;
}

Config Config::from_file(const std::string& path) {
  Config config = defaults();
  config.merge_file(path);
  return config;
}

void Config::merge_file(const std::string& path) {
  DTRAIN_CHECK_T(ConfigError, !frozen_,
                 "cannot merge config file '{}': the config is frozen (defrost() it first)", path);
  std::vector<ConfigValue> values = values_;
  Merger(&values).merge_file(path, "", path);
  values_ = std::move(values);
}

void Config::merge_yaml(const std::string& yaml_text, const std::string& origin) {
  DTRAIN_CHECK_T(ConfigError, !frozen_,
                 "cannot merge '{}': the config is frozen (defrost() it first)", origin);
  std::vector<ConfigValue> values = values_;
  Merger(&values).merge_text(yaml_text, origin, stdfs::path());
  values_ = std::move(values);
}

void Config::merge_overrides(const std::vector<std::string>& tokens) {
  DTRAIN_CHECK_T(ConfigError, !frozen_,
                 "cannot apply {} overrides: the config is frozen (defrost() it first)",
                 kCommandLine);
  if (tokens.size() % 2 != 0) {
    throw ConfigError(fmt::format(
        "{}: overrides must be KEY VALUE pairs, but '{}' (token {} of {}) has no value",
        kCommandLine, tokens.back(), tokens.size(), tokens.size()));
  }
  std::vector<ConfigValue> values = values_;
  for (size_t i = 0; i < tokens.size(); i += 2) {
    const size_t index = lookup_or_throw(tokens[i], kCommandLine);
    const ConfigKeySpec& spec = config_schema()[index];
    values[index] = decode_value(spec, parse_override(spec, tokens[i + 1]), kCommandLine);
  }
  values_ = std::move(values);
}

void Config::set(const std::string& key, const ConfigValue& value) {
  DTRAIN_CHECK_T(ConfigError, !frozen_, "cannot set '{}': the config is frozen", key);
  const size_t index = lookup_or_throw(key, "set()");
  values_[index] = coerce(config_schema()[index], value);
}

bool Config::get_bool(const std::string& key) const {
  return std::get<bool>(values_[checked_index(key, ConfigType::kBool)]);
}

int64_t Config::get_int(const std::string& key) const {
  return std::get<int64_t>(values_[checked_index(key, ConfigType::kInt)]);
}

double Config::get_float(const std::string& key) const {
  return std::get<double>(values_[checked_index(key, ConfigType::kFloat)]);
}

const std::string& Config::get_string(const std::string& key) const {
  return std::get<std::string>(values_[checked_index(key, ConfigType::kString)]);
}

const std::vector<int64_t>& Config::get_int_list(const std::string& key) const {
  return std::get<std::vector<int64_t>>(values_[checked_index(key, ConfigType::kIntList)]);
}

const std::vector<double>& Config::get_float_list(const std::string& key) const {
  return std::get<std::vector<double>>(values_[checked_index(key, ConfigType::kFloatList)]);
}

const std::vector<std::string>& Config::get_string_list(const std::string& key) const {
  return std::get<std::vector<std::string>>(
      values_[checked_index(key, ConfigType::kStringList)]);
}

const ConfigValue& Config::get(const std::string& key) const {
  return values_[lookup_or_throw(key, "get()")];
}

std::string Config::to_yaml() const {
  static const KeyTree tree = build_key_tree();
  std::string out;
  emit_tree(tree, values_, 0, &out);
  return out;
}

std::string Config::help_text() {
  const std::vector<ConfigKeySpec>& schema = config_schema();
  size_t key_width = 0;
  for (const ConfigKeySpec& spec : schema) key_width = std::max(key_width, spec.key.size());
  std::string out =
      "Configuration keys: KEY  type  default, then what it does. Set them in a YAML file\n"
      "(nested, e.g. 'SOLVER:' then '  BASE_LR: 0.1') or as KEY VALUE on the command line.\n";
  std::string group = "\x01";  // matches no section
  for (const ConfigKeySpec& spec : schema) {
    const size_t dot = spec.key.find('.');
    const std::string section = dot == std::string::npos ? "" : spec.key.substr(0, dot);
    if (section != group) {
      out += section.empty() ? "\n" : "\n" + section + ":\n";
      group = section;
    }
    out += fmt::format("  {:<{}}  {:<14}  {}\n      {}\n", spec.key, key_width,
                       config_type_name(spec.type), format_value(spec.default_value), spec.doc);
  }
  return out;
}

std::string Config::closest_key(const std::string& key) { return closest_name(key, false); }

bool Config::has_key(const std::string& key) { return find_key(key).has_value(); }

}  // namespace dtrain
