// `dtrain ckpt inspect` (header, config summary, tensor table) and `dtrain ckpt verify`
// (the report of checkpoint::verify_checkpoint), see ckpt_command.h.
#include <algorithm>
#include <exception>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "checkpoint/index.h"
#include "launcher/ckpt_command.h"

namespace dtrain::launcher {
using checkpoint::CheckpointIndex;
using checkpoint::TensorRecord;
using nlohmann::json;

namespace {

// The config keys `inspect` summarizes.
const char* const kSummaryKeys[] = {"MODEL.NAME", "SOLVER.OPTIMIZER", "SOLVER.BASE_LR",
                                    "SOLVER.IMS_PER_BATCH", "SOLVER.MAX_ITER"};

std::string owner_of(const std::string& name) { return name.substr(0, name.find('/')); }

int64_t record_bytes(const TensorRecord& t) {
  int64_t b = 0;
  for (const auto& p : t.pieces) b += p.bytes;
  return b;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

std::string scalar_str(const StateValue& v) {
  if (auto i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (auto d = std::get_if<double>(&v)) return fmt::format("{}", *d);
  if (auto s = std::get_if<std::string>(&v)) {
    std::string text = s->size() > 60 ? s->substr(0, 57) + "..." : *s;
    for (char& c : text) {
      if (c == '\n') c = ' ';
    }
    return fmt::format("\"{}\"", text);
  }
  return "<tensor>";
}

json scalar_json(const StateValue& v) {
  if (auto i = std::get_if<int64_t>(&v)) return *i;
  if (auto d = std::get_if<double>(&v)) return *d;
  if (auto s = std::get_if<std::string>(&v)) return *s;
  return nullptr;
}

// KEY -> value text for kSummaryKeys ("-" when absent). Throws YAML::Exception for
// malformed YAML.
std::vector<std::pair<std::string, std::string>> config_summary(const std::string& yaml) {
  YAML::Node root = YAML::Load(yaml);
  std::vector<std::pair<std::string, std::string>> out;
  for (const char* key : kSummaryKeys) {
    // Walk MODEL -> NAME through maps only (const access never inserts).
    YAML::Node node = root;
    const std::string k = key;
    bool found = true;
    for (size_t start = 0; found && start <= k.size();) {
      size_t dot = k.find('.', start);
      if (dot == std::string::npos) dot = k.size();
      const YAML::Node parent = node;
      found = parent.IsMap() && parent[k.substr(start, dot - start)].IsDefined();
      if (found) node.reset(parent[k.substr(start, dot - start)]);
      start = dot + 1;
    }
    std::string value = "-";
    if (found && node.IsScalar()) value = node.Scalar();
    if (found && node.IsSequence()) {
      std::vector<std::string> items;
      for (const auto& item : node) items.push_back(item.IsScalar() ? item.Scalar() : "...");
      value = fmt::format("[{}]", fmt::join(items, ", "));
    }
    out.emplace_back(key, value);
  }
  return out;
}

// True when `yaml` holds nothing but blank lines and comments.
bool yaml_is_blank(const std::string& yaml) {
  size_t start = 0;
  while (start < yaml.size()) {
    size_t end = yaml.find('\n', start);
    if (end == std::string::npos) end = yaml.size();
    const std::string line = yaml.substr(start, end - start);
    const size_t first = line.find_first_not_of(" \t\r");
    if (first != std::string::npos && line[first] != '#') return false;
    start = end + 1;
  }
  return true;
}

struct Group {
  std::string name;
  std::vector<const TensorRecord*> tensors;
  int64_t bytes = 0;
};

// Tensors grouped by owner, in order of first appearance in the index.
std::vector<Group> group_tensors(const CheckpointIndex& index) {
  std::vector<Group> groups;
  for (const auto& t : index.tensors) {
    const std::string owner = owner_of(t.name);
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const Group& g) { return g.name == owner; });
    if (it == groups.end()) it = groups.insert(groups.end(), Group{owner, {}, 0});
    it->tensors.push_back(&t);
    it->bytes += record_bytes(t);
  }
  return groups;
}

void print_json(const std::string& dir, const std::string& note, const CheckpointIndex& index,
                const std::string& yaml, std::ostream& out) {
  json j;
  j["path"] = dir;
  if (!note.empty()) j["note"] = note;
  j["format"] = checkpoint::kFormatName;
  j["format_version"] = index.format_version;
  j["iteration"] = index.iteration;
  j["world_size"] = index.world_size;
  j["created"] = index.created;
  j["versions"] = index.versions;
  json cfg = json::object();
  if (!yaml_is_blank(yaml)) {
    try {
      for (const auto& [k, v] : config_summary(yaml)) cfg[k] = v;
    } catch (const std::exception& e) {
      cfg["error"] = e.what();
    }
  }
  j["config"] = cfg;
  json tensors = json::array(), groups = json::array();
  int64_t total = 0;
  for (const auto& g : group_tensors(index)) {
    groups.push_back({{"name", g.name}, {"tensors", g.tensors.size()}, {"bytes", g.bytes}});
    total += g.bytes;
    for (const TensorRecord* t : g.tensors) {
      tensors.push_back({{"name", t->name}, {"dtype", t->dtype}, {"shape", t->shape},
                         {"bytes", record_bytes(*t)}, {"per_rank", t->per_rank},
                         {"pieces", t->pieces.size()}});
    }
  }
  j["groups"] = groups;
  j["tensors"] = tensors;
  j["total"] = {{"tensors", index.tensors.size()}, {"bytes", total}};
  json scalars = json::object();
  for (const auto& [k, v] : index.scalars) scalars[k] = scalar_json(v);
  j["scalars"] = scalars;
  out << j.dump(2) << "\n";
}

void print_text(const std::string& dir, const std::string& note, const CheckpointIndex& index,
                const std::string& yaml, std::ostream& out) {
  if (!note.empty()) out << "note: " << note << "\n";
  out << "Checkpoint " << dir << "\n";
  out << fmt::format("  {:<12} {} v{}\n", "format", checkpoint::kFormatName, index.format_version);
  out << fmt::format("  {:<12} {}\n", "iteration",
                     index.iteration < 0 ? std::string("none (-1)") : std::to_string(index.iteration));
  std::vector<int64_t> shard_bytes(index.world_size, 0);
  for (const auto& t : index.tensors) {
    for (const auto& p : t.pieces) shard_bytes[p.shard] += p.bytes;
  }
  std::vector<std::string> per_shard;
  for (int64_t b : shard_bytes) per_shard.push_back(human_bytes(b));
  out << fmt::format("  {:<12} {} (shard payloads: {})\n", "world size", index.world_size,
                     fmt::join(per_shard, ", "));
  out << fmt::format("  {:<12} {}\n", "created", index.created.empty() ? "-" : index.created);
  std::vector<std::string> versions;
  for (const auto& [k, v] : index.versions) versions.push_back(k + " " + v);
  out << fmt::format("  {:<12} {}\n", "versions", versions.empty() ? "-" : fmt::format("{}", fmt::join(versions, ", ")));

  out << "Config\n";
  if (yaml_is_blank(yaml)) {
    out << "  (no config stored)\n";
  } else {
    try {
      for (const auto& [k, v] : config_summary(yaml)) out << fmt::format("  {:<21} {}\n", k, v);
    } catch (const std::exception& e) {
      out << "  (the stored config is not valid YAML: " << e.what() << ")\n";
    }
  }

  size_t name_w = 4, dtype_w = 5, shape_w = 5;
  for (const auto& t : index.tensors) {
    name_w = std::max(name_w, t.name.size());
    dtype_w = std::max(dtype_w, t.dtype.size());
    shape_w = std::max(shape_w, shape_str(t.shape).size());
  }
  out << "Tensors\n";
  out << fmt::format("    {:<{}}  {:<{}}  {:<{}}  {:>10}\n", "name", name_w, "dtype", dtype_w,
                     "shape", shape_w, "bytes");
  int64_t total = 0;
  for (const auto& g : group_tensors(index)) {
    out << fmt::format("  {} ({} tensor{}, {})\n", g.name, g.tensors.size(),
                       g.tensors.size() == 1 ? "" : "s", human_bytes(g.bytes));
    for (const TensorRecord* t : g.tensors) {
      const std::string per_rank =
          t->per_rank ? fmt::format("  per rank, {} rank{}", t->pieces.size(),
                                    t->pieces.size() == 1 ? "" : "s")
                      : "";
      out << fmt::format("    {:<{}}  {:<{}}  {:<{}}  {:>10}{}\n", t->name, name_w, t->dtype,
                         dtype_w, shape_str(t->shape), shape_w, human_bytes(record_bytes(*t)),
                         per_rank);
    }
    total += g.bytes;
  }
  out << fmt::format("  total: {} tensors, {} ({} bytes) in {} shard file{}\n",
                     index.tensors.size(), human_bytes(total), total, index.world_size,
                     index.world_size == 1 ? "" : "s");
  out << "Scalars\n";
  if (index.scalars.empty()) out << "  (none)\n";
  for (const auto& [k, v] : index.scalars) out << fmt::format("  {} = {}\n", k, scalar_str(v));
}

}  // namespace

int ckpt_inspect(const InspectOptions& options, std::ostream& out, std::ostream& err) {
  try {
    const ResolvedCheckpoint r = resolve_checkpoint(options.path);
    const CheckpointIndex index = checkpoint::load_index(r.dir);
    const std::string yaml = checkpoint::read_config_yaml(r.dir);
    if (options.json) {
      print_json(r.dir, r.note, index, yaml, out);
    } else {
      print_text(r.dir, r.note, index, yaml, out);
    }
    return kCkptOk;
  } catch (const std::exception& e) {
    err << "dtrain ckpt inspect: " << e.what() << "\n";
    return kCkptFailed;
  }
}

int ckpt_verify(const VerifyOptions& options, std::ostream& out, std::ostream& err) {
  ResolvedCheckpoint r;
  try {
    r = resolve_checkpoint(options.path);
  } catch (const std::exception& e) {
    err << "dtrain ckpt verify: " << e.what() << "\n";
    return kCkptFailed;
  }
  if (!r.note.empty()) out << "note: " << r.note << "\n";
  out << "Verifying " << r.dir << "\n";
  checkpoint::VerifyStats stats;
  const std::vector<std::string> problems = checkpoint::verify_checkpoint(r.dir, &stats);
  for (const auto& p : checkpoint::capped_problems(problems)) out << "  problem: " << p << "\n";
  if (problems.empty()) {
    out << fmt::format("OK: {} is valid (iteration {}, {} tensors, {} pieces, {} in {} shard "
                       "file{}; every xxh64 checksum matches)\n",
                       r.dir, stats.iteration, stats.tensors, stats.pieces,
                       human_bytes(stats.bytes), stats.world_size,
                       stats.world_size == 1 ? "" : "s");
    return kCkptOk;
  }
  out << fmt::format("DAMAGED: {} has {} problem{}\n", r.dir, problems.size(),
                     problems.size() == 1 ? "" : "s");
  return kCkptFailed;
}

}  // namespace dtrain::launcher
