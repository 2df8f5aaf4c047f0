// `dtrain ckpt diff` (tensor-by-tensor comparison across world sizes) and `dtrain ckpt
// export|import` (PyTorch .pt state dicts), see ckpt_command.h.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <exception>
#include <filesystem>
#include <limits>
#include <memory>
#include <random>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "checkpoint/index.h"
#include "checkpoint/interop/safetensors.h"
#include "checkpoint/interop/weights.h"
#include "checkpoint/torch_io.h"
#include "launcher/ckpt_command.h"
#include "runtime/base/error.h"
#include "runtime/base/env.h"
#include "runtime/base/fs.h"
#include "runtime/h5/h5.h"

namespace dtrain::launcher {
namespace stdfs = std::filesystem;
using checkpoint::CheckpointIndex;
using checkpoint::TensorRecord;

namespace {

std::string shape_str(at::IntArrayRef shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// ---- diff ----

// One side of a diff: the index and a reader of its shards.
struct Side {
  ResolvedCheckpoint where;
  CheckpointIndex index;
  std::unique_ptr<checkpoint::ShardReader> reader;
  // "model/fc1.weight" or "ranks/RRRRR/rng/cpu" -> (record, piece index or -1 for whole)
  std::map<std::string, std::pair<const TensorRecord*, int>> entries;
  std::vector<std::string> order;  // keys in index order

  explicit Side(const std::string& path) : where(resolve_checkpoint(path)) {
    index = checkpoint::load_index(where.dir);
    reader = std::make_unique<checkpoint::ShardReader>(where.dir, index.world_size);
    for (const auto& t : index.tensors) {
      if (!t.per_rank) {
        entries[t.name] = {&t, -1};
        order.push_back(t.name);
        continue;
      }
      for (size_t i = 0; i < t.pieces.size(); ++i) {
        const std::string key = checkpoint::per_rank_path(t.pieces[i].shard, t.name);
        entries[key] = {&t, static_cast<int>(i)};
        order.push_back(key);
      }
    }
  }

  at::Tensor read(const std::string& key) {
    const auto& [record, piece] = entries.at(key);
    if (piece < 0) return checkpoint::read_full_tensor(*reader, *record, where.dir);
    return checkpoint::read_piece_tensor(*reader, *record, record->pieces[piece], where.dir);
  }

  std::vector<int64_t> shape(const std::string& key) const {
    const auto& [record, piece] = entries.at(key);
    return piece < 0 ? record->shape : record->pieces[piece].shape;
  }
};

struct Comparison {
  int64_t differing = 0;  // elements that differ (NaN == NaN)
  double max_abs = 0.0;   // max |a - b| in float64 (inf for NaN vs number)
};

// a and b have the same shape. Floating point in float64, integers exactly (as int64).
Comparison compare(const at::Tensor& a, const at::Tensor& b) {
  Comparison c;
  if (a.numel() == 0) return c;
  if (a.is_floating_point() || b.is_floating_point()) {
    at::Tensor da = a.to(at::kDouble), db = b.to(at::kDouble);
    at::Tensor same = da.eq(db).logical_or(da.isnan().logical_and(db.isnan()));
    at::Tensor diff = (da - db).abs().masked_fill(same, 0.0);
    diff = diff.masked_fill(diff.isnan(), std::numeric_limits<double>::infinity());
    c.differing = same.logical_not().sum().item<int64_t>();
    c.max_abs = diff.max().item<double>();
  } else {
    at::Tensor la = a.to(at::kLong), lb = b.to(at::kLong);
    c.differing = la.ne(lb).sum().item<int64_t>();
    c.max_abs = static_cast<double>((la - lb).abs().max().item<int64_t>());
  }
  return c;
}

// The rank a "ranks/RRRRR/..." key belongs to, or -1.
int rank_of_key(const std::string& key) {
  if (key.rfind("ranks/", 0) != 0 || key.size() < 12 || key[11] != '/') return -1;
  const std::string digits = key.substr(6, 5);
  if (!std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoi(digits);
}

std::string scalar_text(const StateValue& v) {
  if (auto i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (auto d = std::get_if<double>(&v)) return fmt::format("{}", *d);
  if (auto s = std::get_if<std::string>(&v)) return fmt::format("\"{}\"", *s);
  return "<tensor>";
}

// Scalars (int64, double, string) of the same type and value; NaN equals NaN.
bool same_scalar(const StateValue& a, const StateValue& b) {
  if (a.index() != b.index()) return false;
  if (auto i = std::get_if<int64_t>(&a)) return *i == std::get<int64_t>(b);
  if (auto d = std::get_if<double>(&a)) {
    const double e = std::get<double>(b);
    return *d == e || (std::isnan(*d) && std::isnan(e));
  }
  if (auto s = std::get_if<std::string>(&a)) return *s == std::get<std::string>(b);
  return false;
}

int run_diff(const DiffOptions& options, std::ostream& out) {
  Side a(options.a), b(options.b);
  for (const Side* s : {&a, &b}) {
    if (!s->where.note.empty()) out << "note: " << s->where.note << "\n";
  }
  out << fmt::format("A: {} (iteration {}, world size {})\n", a.where.dir, a.index.iteration,
                     a.index.world_size);
  out << fmt::format("B: {} (iteration {}, world size {})\n", b.where.dir, b.index.iteration,
                     b.index.world_size);
  int64_t identical = 0, close = 0, differ = 0, only_a = 0, only_b = 0, skipped = 0;
  auto only = [&](Side& side, Side& other, const std::string& key, const char* label,
                  int64_t& counter) {
    const int rank = rank_of_key(key);
    if (rank >= 0 && rank >= other.index.world_size) {
      ++skipped;  // per-rank state of a rank the other checkpoint did not have
      return;
    }
    const auto& rec = *side.entries.at(key).first;
    out << fmt::format("  {:<10} {}  {} {}\n", label, key, rec.dtype, shape_str(side.shape(key)));
    ++counter;
  };
  for (const auto& key : a.order) {
    if (!b.entries.count(key)) {
      only(a, b, key, "only in A", only_a);
      continue;
    }
    const TensorRecord& ra = *a.entries.at(key).first;
    const TensorRecord& rb = *b.entries.at(key).first;
    const auto sa = a.shape(key), sb = b.shape(key);
    if (sa != sb) {
      out << fmt::format("  {:<10} {}: {} {} in A, {} {} in B\n", "shape", key, ra.dtype,
                         shape_str(sa), rb.dtype, shape_str(sb));
      ++differ;
      continue;
    }
    const Comparison c = compare(a.read(key), b.read(key));
    int64_t numel = 1;
    for (int64_t d : sa) numel *= d;
    if (ra.dtype != rb.dtype) {
      out << fmt::format("  {:<10} {}: {} in A, {} in B; max |a-b| = {:.6g} ({} of {} elements "
                         "differ)\n",
                         "dtype", key, ra.dtype, rb.dtype, c.max_abs, c.differing, numel);
      ++differ;
    } else if (c.differing == 0) {
      ++identical;
    } else if (c.max_abs <= options.atol) {
      out << fmt::format("  {:<10} {}: max |a-b| = {:.6g} <= atol ({} of {} elements differ)\n",
                         "close", key, c.max_abs, c.differing, numel);
      ++close;
    } else {
      out << fmt::format("  {:<10} {}  {} {}: max |a-b| = {:.6g} ({} of {} elements differ)\n",
                         "differs", key, ra.dtype, shape_str(sa), c.max_abs, c.differing, numel);
      ++differ;
    }
  }
  for (const auto& key : b.order) {
    if (!a.entries.count(key)) only(b, a, key, "only in B", only_b);
  }
  int64_t scalars_same = 0, scalars_differ = 0;
  for (const auto& [k, va] : a.index.scalars) {
    auto it = b.index.scalars.find(k);
    if (it == b.index.scalars.end()) {
      out << fmt::format("  {:<10} {} = {} only in A\n", "scalar", k, scalar_text(va));
      ++scalars_differ;
    } else if (!same_scalar(va, it->second)) {
      out << fmt::format("  {:<10} {}: {} in A, {} in B\n", "scalar", k, scalar_text(va),
                         scalar_text(it->second));
      ++scalars_differ;
    } else {
      ++scalars_same;
    }
  }
  for (const auto& [k, vb] : b.index.scalars) {
    if (!a.index.scalars.count(k)) {
      out << fmt::format("  {:<10} {} = {} only in B\n", "scalar", k, scalar_text(vb));
      ++scalars_differ;
    }
  }
  if (skipped > 0) {
    out << fmt::format("note: {} per-rank tensors of ranks that only one checkpoint has (world "
                       "sizes {} and {}) were not compared\n",
                       skipped, a.index.world_size, b.index.world_size);
  }
  const bool same = differ == 0 && only_a == 0 && only_b == 0 && scalars_differ == 0;
  out << fmt::format("{}: {} tensors identical, {} within atol, {} differ, {} only in A, {} only "
                     "in B; {} scalars identical, {} differ\n",
                     !same ? "DIFFERENT" : close > 0 ? "EQUAL WITHIN ATOL" : "IDENTICAL", identical, close, differ, only_a, only_b,
                     scalars_same, scalars_differ);
  return same ? kCkptOk : kCkptFailed;
}

// ---- export ----

int run_export(const ExportOptions& options, std::ostream& out) {
  const ResolvedCheckpoint r = resolve_checkpoint(options.path);
  if (!r.note.empty()) out << "note: " << r.note << "\n";
  DTRAIN_CHECK_T(CheckpointError, options.force || !stdfs::exists(options.to),
                 "'{}' exists; pass --force to replace it", options.to);
  const bool safetensors = stdfs::path(options.to).extension() == ".safetensors";
  DTRAIN_CHECK_T(CheckpointError, !(safetensors && (options.all || options.bare)),
                 "--all and --bare write torch.save files; '{}' is a .safetensors file (tensors "
                 "and string metadata only)", options.to);
  const CheckpointIndex index = checkpoint::load_index(r.dir);
  checkpoint::ShardReader reader(r.dir, index.world_size);
  StateDict state;
  int64_t bytes = 0, tensors = 0;
  for (const auto& t : index.tensors) {
    if (!options.all && (t.per_rank || t.name.rfind("model/", 0) != 0)) continue;
    if (!t.per_rank) {
      at::Tensor full = checkpoint::read_full_tensor(reader, t, r.dir);
      bytes += full.numel() * static_cast<int64_t>(full.element_size());
      state[options.all ? t.name : t.name.substr(6)] = full;
      ++tensors;
      continue;
    }
    for (const auto& p : t.pieces) {
      at::Tensor dst = checkpoint::read_piece_tensor(reader, t, p, r.dir);
      bytes += p.bytes;
      state[checkpoint::per_rank_path(p.shard, t.name)] = dst;
      ++tensors;
    }
  }
  DTRAIN_CHECK_T(CheckpointError, tensors > 0,
                 "'{}' holds no model tensors (names \"model/...\"); use --all to export "
                 "everything", r.dir);
  if (options.all) {
    for (const auto& [k, v] : index.scalars) state[k] = v;
    checkpoint::write_torch_state_dict(options.to, state);
  } else if (safetensors) {
    interop::NamedTensors tensors;
    for (const auto& [k, v] : state) tensors.emplace_back(k, std::get<at::Tensor>(v));
    std::map<std::string, std::string> meta{{"format", "pt"}};
    if (index.iteration >= 0) meta["iteration"] = std::to_string(index.iteration);
    interop::write_safetensors(options.to, tensors, meta);
  } else {
    checkpoint::TorchWriteOptions w;
    w.model_key = !options.bare;
    if (index.iteration >= 0) w.iteration = index.iteration;
    checkpoint::write_torch_state_dict(options.to, state, w);
  }
  out << fmt::format("Exported {} tensors ({}){} from {} to {}\n", tensors, human_bytes(bytes),
                     options.all ? fmt::format(" and {} scalars", index.scalars.size()) : "",
                     r.dir, options.to);
  return kCkptOk;
}

// ---- import ----

// Whether format v1 (its HDF5 type mapping, runtime/h5/types.h) can store tensors of dtype `t`.
bool storable(at::ScalarType t) {
  try {
    h5::datatype_for(t);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

void check_key(const std::string& file, const std::string& key) {
  bool ok = !key.empty() && key.front() != '/' && key.back() != '/' &&
            key.find("//") == std::string::npos;
  for (size_t start = 0; ok && start < key.size();) {
    size_t end = key.find('/', start);
    if (end == std::string::npos) end = key.size();
    const std::string part = key.substr(start, end - start);
    ok = part != "." && part != "..";
    start = end + 1;
  }
  DTRAIN_CHECK_T(CheckpointError, ok,
                 "'{}': key '{}' cannot name a checkpoint entry (empty, '.' or '..' path "
                 "components)", file, key);
}

// Throws unless --force may replace `dir`: a checkpoint directory or an empty one.
void check_replaceable(const std::string& dir) {
  const bool checkpoint_dir = stdfs::exists(dir + "/" + checkpoint::kIndexFile);
  DTRAIN_CHECK_T(CheckpointError, stdfs::is_directory(dir) && (checkpoint_dir || stdfs::is_empty(dir)),
                 "refusing to replace '{}' even with --force: it is not a checkpoint directory "
                 "(no {}) nor an empty one", dir, checkpoint::kIndexFile);
}

int run_import(const ImportOptions& options, std::ostream& out) {
  std::string to = options.to;
  while (to.size() > 1 && to.back() == '/') to.pop_back();
  DTRAIN_CHECK_T(CheckpointError, stdfs::exists(options.path), "'{}' does not exist",
                 options.path);
  DTRAIN_CHECK_T(CheckpointError, stdfs::is_regular_file(options.path),
                 "'{}' is not a file (import reads a PyTorch, detectron2 or safetensors file)",
                 options.path);
  DTRAIN_CHECK_T(CheckpointError, options.force || !stdfs::exists(to),
                 "'{}' exists; pass --force to replace it", to);
  std::string yaml = fmt::format("# imported from '{}' by dtrain ckpt import\n",
                                 stdfs::absolute(options.path).string());
  StateDict state;
  if (options.config_file.empty()) {
    const interop::ForeignWeights w = interop::read_foreign_weights(options.path);
    state = checkpoint::state_dict_of(w);
    for (const auto& [key, state] :
         {std::pair{"optimizer", w.optimizer}, {"scheduler", w.scheduler}}) {
      if (!state) continue;
      out << fmt::format("{}: not imported: without --config-file there is no dtrain model to map "
                         "PyTorch's {} state onto\n", key, key);
    }
  } else {
    std::string config;
    state = import_with_model(options, out, &config);
    yaml += config;
  }

  std::vector<std::pair<std::string, at::Tensor>> replicated;
  std::vector<std::vector<std::pair<std::string, at::Tensor>>> per_rank;
  StateDict scalars;
  int64_t bytes = 0, model_tensors = 0;
  for (const auto& [key, value] : state) {
    check_key(options.path, key);
    const at::Tensor* t = std::get_if<at::Tensor>(&value);
    if (!t) {
      scalars[key.find('/') == std::string::npos ? "extra/" + key : key] = value;
      continue;
    }
    DTRAIN_CHECK_T(CheckpointError, t->defined() && t->layout() == at::kStrided,
                   "'{}': tensor '{}' is not a dense tensor", options.path, key);
    DTRAIN_CHECK_T(CheckpointError, storable(t->scalar_type()),
                   "'{}': tensor '{}' has dtype {}, which checkpoint format v1 cannot store "
                   "(convert it, e.g. to float32)",
                   options.path, key, c10::toString(t->scalar_type()));
    bytes += t->numel() * static_cast<int64_t>(t->element_size());
    if (key.rfind("ranks/", 0) == 0) {
      // "ranks/RRRRR/<name>" (export --all): per-rank state of rank RRRRR.
      const size_t slash = key.find('/', 6);
      const std::string digits = key.substr(6, slash == std::string::npos ? 0 : slash - 6);
      DTRAIN_CHECK_T(CheckpointError,
                     !digits.empty() && digits.size() <= 5 &&
                         std::all_of(digits.begin(), digits.end(), ::isdigit),
                     "'{}': key '{}' starts with 'ranks/' but not 'ranks/<rank>/<name>'",
                     options.path, key);
      const size_t rank = std::stoul(digits);
      DTRAIN_CHECK_T(CheckpointError, rank < static_cast<size_t>(options.world_size),
                     "'{}': key '{}' is state of rank {}, but the checkpoint has --world-size "
                     "{} (ranks 0..{}); pass --world-size {} or more to import it",
                     options.path, key, rank, options.world_size, options.world_size - 1,
                     rank + 1);
      if (per_rank.size() <= rank) per_rank.resize(rank + 1);
      per_rank[rank].emplace_back(key.substr(slash + 1), *t);
    } else if (key.find('/') != std::string::npos) {
      replicated.emplace_back(key, *t);
      if (key.rfind("model/", 0) == 0) ++model_tensors;
    } else {
      replicated.emplace_back("model/" + key, *t);
      ++model_tensors;
    }
  }
  DTRAIN_CHECK_T(CheckpointError, !replicated.empty() || !per_rank.empty(),
                 "'{}' holds no tensors", options.path);
  int64_t iteration = -1;
  if (auto it = scalars.find("extra/iteration"); it != scalars.end()) {
    if (auto i = std::get_if<int64_t>(&it->second)) iteration = *i;
  }
  DTRAIN_CHECK_T(CheckpointError,
                 options.world_size >= 1 && options.world_size <= kMaxImportWorldSize,
                 "--world-size {} is outside 1..{}", options.world_size, kMaxImportWorldSize);
  const int world_size = options.world_size;
  per_rank.resize(world_size);

  const bool replace = stdfs::exists(stdfs::symlink_status(to));
  if (replace) check_replaceable(to);
  // Verified before it replaces anything; a crash leaves the old or the new checkpoint.
  write_checkpoint_dir(to, world_size, replicated, per_rank, scalars, iteration, yaml, replace);
  out << fmt::format("Imported {} tensors ({}; {} under model/) and {} scalars from {} into {} "
                     "(world size {}); load it with MODEL.WEIGHTS {}\n",
                     state.size() - scalars.size(), human_bytes(bytes), model_tensors,
                     scalars.size(), options.path, to, world_size, to);
  return kCkptOk;
}

}  // namespace

int ckpt_diff(const DiffOptions& options, std::ostream& out, std::ostream& err) {
  try {
    return run_diff(options, out);
  } catch (const std::exception& e) {
    err << "dtrain ckpt diff: " << e.what() << "\n";
    return kCkptFailed;
  }
}

int ckpt_export(const ExportOptions& options, std::ostream& out, std::ostream& err) {
  try {
    return run_export(options, out);
  } catch (const std::exception& e) {
    err << "dtrain ckpt export: " << e.what() << "\n";
    return kCkptFailed;
  }
}

int ckpt_import(const ImportOptions& options, std::ostream& out, std::ostream& err) {
  try {
    return run_import(options, out);
  } catch (const std::exception& e) {
    err << "dtrain ckpt import: " << e.what() << "\n";
    return kCkptFailed;
  }
}

}  // namespace dtrain::launcher
