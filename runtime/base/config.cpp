// Typed configuration tree (see config.h): schema lookup, YAML merging with _BASE_
// inheritance, command-line overrides, type checking, YAML dump and --help-config text.
#include "runtime/base/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <unordered_map>
#include <utility>

#include "runtime/base/config_value.h"
#include "runtime/base/error.h"
#include "runtime/base/fs.h"

namespace dtrain {
namespace {

namespace stdfs = std::filesystem;
using namespace config_internal;  // NOLINT: the module's own codec

constexpr const char* kBaseKey = "_BASE_";
constexpr const char* kCommandLine = "command line";
// Config files are small; a larger "config" is a mistake (or /dev/zero's cousin).
constexpr size_t kMaxConfigFileBytes = size_t{16} << 20;
// _BASE_ nesting and the number of files one merge may read (lists can fan out).
constexpr size_t kMaxBaseDepth = 32;
constexpr size_t kMaxMergedFiles = 256;


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
      DTRAIN_CHECK(is_numeric(spec.type) == spec.range.has_value(),
                   "config schema: '{}' {} a range ({} key)", spec.key,
                   spec.range ? "must not have" : "needs", config_type_name(spec.type));
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


// Parses a YAML document, turning parser errors into "origin:line:column: ..." messages.
// The text may be any file (a _BASE_ can name one), so the message never quotes it:
// yaml-cpp's own text is cut before its first ": ", after which a few messages append
// what they found ("unknown escape character: x").
YAML::Node load_yaml(const std::string& text, const std::string& origin) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    const std::string msg = e.msg.substr(0, e.msg.find(": "));
    if (e.mark.is_null()) {
      throw ConfigError(fmt::format("{}: malformed YAML: {}", origin, msg));
    }
    throw ConfigError(fmt::format("{}:{}:{}: malformed YAML: {}", origin, e.mark.line + 1,
                                  e.mark.column + 1, msg));
  }
}

std::string expand_user(const std::string& path) {
  if (path == "~" || path.rfind("~/", 0) == 0) {
    if (const char* home = std::getenv("HOME")) return std::string(home) + path.substr(1);
  }
  return path;
}

// True for text that could be a (mistyped) config key: short, letters, digits, '_', '.'.
bool looks_like_key_name(const std::string& key) {
  if (key.empty() || key.size() > 100) return false;
  return std::all_of(key.begin(), key.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
  });
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
    if (chain_.size() >= kMaxBaseDepth || ++files_read_ > kMaxMergedFiles) {
      throw ConfigError(fmt::format(
          "{}: _BASE_ '{}': too many config files ({} nested, {} read in all; the limits are {} "
          "and {})",
          included_from, written_as, chain_.size() + 1, files_read_, kMaxBaseDepth,
          kMaxMergedFiles));
    }
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
      text = fs::read_file(path, {kMaxConfigFileBytes});
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
      // Not a config at all, maybe not even meant as one: do not echo its content.
      throw ConfigError(fmt::format("{}: expected a mapping of config keys at the top level "
                                    "(e.g. 'SOLVER:' with 'BASE_LR: 0.1' below it), got {}; "
                                    "is it a dtrain config file?",
                                    where(origin, root.Mark()), describe_kind(root)));
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
      // fvcore's merge_from_file: one path, or a list merged in order (later ones
      // override earlier ones); the file's own keys then override them all.
      std::vector<std::string> paths;
      if (base->IsScalar() && !base->Scalar().empty()) {
        paths.push_back(base->Scalar());
      } else if (base->IsSequence()) {
        for (size_t i = 0; i < base->size(); ++i) {
          const YAML::Node item = (*base)[i];
          if (!item.IsScalar() || item.Scalar().empty()) {
            throw ConfigError(fmt::format("{}: {} element {} is not a path: got {}",
                                          where(origin, base_mark), kBaseKey, i, describe(item)));
          }
          paths.push_back(item.Scalar());
        }
      } else {
        throw ConfigError(fmt::format(
            "{}: {} expects the path of a config file or a list of paths, got {}",
            where(origin, base_mark), kBaseKey, describe(*base)));
      }
      for (const std::string& written : paths) {
        stdfs::path resolved(expand_user(written));
        if (resolved.is_relative()) resolved = base_dir / resolved;
        merge_file(resolved.string(), origin, written);
      }
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
    // Text that only happens to parse as a mapping ("root:$6$...:::" of /etc/shadow) has
    // keys that are no names: say so without echoing them.
    if (!looks_like_key_name(key)) {
      throw ConfigError(fmt::format("{}: not a config file: a top-level key that is no config "
                                    "key name ({} characters, not only letters, digits, '_' "
                                    "and '.')",
                                    loc, key.size()));
    }
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
  size_t files_read_ = 0;  // files merged so far, bases included
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

std::vector<Config::Difference> Config::diff(const Config& other) const {
  std::vector<Difference> out;
  const auto& schema = config_schema();
  for (size_t i = 0; i < schema.size(); ++i) {
    if (values_[i] == other.values_[i]) continue;
    out.push_back({schema[i].key, format_value(values_[i]), format_value(other.values_[i])});
  }
  return out;
}

std::string Config::to_yaml() const { return nested_yaml(values_); }

std::string Config::help_text() {
  const std::vector<ConfigKeySpec>& schema = config_schema();
  size_t key_width = 0;
  for (const ConfigKeySpec& spec : schema) key_width = std::max(key_width, spec.key.size());
  std::string out =
      "Configuration keys: KEY  type  default, then what it does (and, for numbers, the\n"
      "allowed values). Set them in a YAML file (nested, e.g. 'SOLVER:' then\n"
      "'  BASE_LR: 0.1') or as KEY VALUE on the command line.\n";
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
    if (spec.range) {
      out += fmt::format("      allowed: {}{}\n", is_list(spec.type) ? "each element " : "",
                         spec.range->text(element_type(spec.type) == ConfigType::kInt));
    }
  }
  return out;
}

std::string Config::closest_key(const std::string& key) { return closest_name(key, false); }

bool Config::has_key(const std::string& key) { return find_key(key).has_value(); }

}  // namespace dtrain
