// The config module's value codec (see config_value.h): YAML scalars in and out,
// decoding of nodes into typed values, the numeric range checks of ConfigRange, and the
// nested YAML dump.
#include "runtime/base/config_value.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "runtime/base/error.h"

namespace dtrain {

namespace {
constexpr size_t kMaxShownValue = 80;  // longest value echoed back in an error message

// A bound for ConfigRange::text(): integral bounds as integers.
std::string format_bound(double v, bool integer) {
  if (integer) return fmt::format("{}", static_cast<int64_t>(v));
  return fmt::format("{}", v);
}
}  // namespace

bool ConfigRange::contains(double value) const {
  if (std::isnan(value)) return false;
  if (std::isinf(value) && !(allow_inf && value > 0 && std::isinf(max))) return false;
  if (min_open ? !(value > min) : !(value >= min)) return false;
  if (max_open ? !(value < max) : !(value <= max)) return false;
  return true;
}

std::string ConfigRange::text(bool integer) const {
  const bool has_min = std::isfinite(min), has_max = std::isfinite(max);
  std::string out;
  if (has_min && has_max) {
    out = fmt::format("{}{}, {}{}", min_open ? "(" : "[", format_bound(min, integer),
                      format_bound(max, integer), max_open ? ")" : "]");
  } else if (has_min) {
    out = fmt::format("{} {}", min_open ? ">" : ">=", format_bound(min, integer));
  } else if (has_max) {
    out = fmt::format("{} {}", max_open ? "<" : "<=", format_bound(max, integer));
  } else {
    out = integer ? "any" : "any finite value";
    return allow_inf ? out + " or .inf" : out;
  }
  if (integer || (has_min && has_max)) return out;
  return allow_inf ? out + " or .inf" : "finite, " + out;
}

namespace config_internal {

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

bool is_numeric(ConfigType type) {
  const ConfigType e = element_type(type);
  return e == ConfigType::kInt || e == ConfigType::kFloat;
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

// Converts `node` to the type of `spec` (no range check), or throws a ConfigError.
ConfigValue decode_unchecked(const ConfigKeySpec& spec, const YAML::Node& node,
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


namespace {

// Throws unless every number in `value` lies in spec.range.
void check_range(const ConfigKeySpec& spec, const ConfigValue& value, const std::string& loc) {
  if (!spec.range) return;
  const bool integer = element_type(spec.type) == ConfigType::kInt;
  auto fail = [&](const std::string& what, const std::string& shown) {
    throw ConfigError(fmt::format("{}: config key '{}'{} is {}, outside its allowed range {}",
                                  loc, spec.key, what, shown, spec.range->text(integer)));
  };
  if (auto* v = std::get_if<int64_t>(&value)) {
    if (!spec.range->contains(static_cast<double>(*v))) fail("", fmt::format("{}", *v));
  } else if (auto* v = std::get_if<double>(&value)) {
    if (!spec.range->contains(*v)) fail("", format_float(*v));
  } else if (auto* v = std::get_if<std::vector<int64_t>>(&value)) {
    for (size_t i = 0; i < v->size(); ++i) {
      if (!spec.range->contains(static_cast<double>((*v)[i]))) {
        fail(fmt::format(" element {}", i), fmt::format("{}", (*v)[i]));
      }
    }
  } else if (auto* v = std::get_if<std::vector<double>>(&value)) {
    for (size_t i = 0; i < v->size(); ++i) {
      if (!spec.range->contains((*v)[i])) {
        fail(fmt::format(" element {}", i), format_float((*v)[i]));
      }
    }
  }
}

}  // namespace

ConfigValue decode_value(const ConfigKeySpec& spec, const YAML::Node& node,
                         const std::string& loc) {
  ConfigValue value = decode_unchecked(spec, node, loc);
  check_range(spec, value, loc);
  return value;
}

std::string describe_kind(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "an empty document";
    case YAML::NodeType::Scalar:
      return "plain text (a YAML scalar)";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    default:
      return "an undefined value";
  }
}


namespace {

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

std::string nested_yaml(const std::vector<ConfigValue>& values) {
  static const KeyTree tree = build_key_tree();
  std::string out;
  emit_tree(tree, values, 0, &out);
  return out;
}

}  // namespace config_internal
}  // namespace dtrain
