// ckpt_compare: checks that two dtrain checkpoint directories hold bitwise-identical
// state (exact resume), or floating-point tensors equal within a relative tolerance
// (one step on W ranks against one rank), for the end-to-end tests.
//
//   ckpt_compare OUT_A/model_final OUT_B/model_final
//   ckpt_compare --rtol 1e-6 --ignore rng/ --ignore-world-size NP2/model_final NP1/model_final
//
// Reads both indexes and every piece of every tensor through the checkpoint library
// (checksums verified), reassembles each replicated tensor whole and each per-rank
// tensor per rank, and compares bytes; compares every scalar exactly. With --rtol X,
// floating-point tensors match when max|a - b| <= X * max|b| (per tensor). --ignore P
// (repeatable) skips tensors and scalars whose name starts with P. Prints one line per
// difference and a summary; exit status 0 when identical, 1 when anything differs, 2 on
// a usage or read error. Single-threaded.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <exception>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "checkpoint/inspect.h"

namespace {

using dtrain::checkpoint::CheckpointIndex;
using dtrain::checkpoint::ShardReader;
using dtrain::checkpoint::TensorRecord;

struct Options {
  std::string dir_a, dir_b;
  double rtol = -1.0;  // < 0: bitwise
  std::vector<std::string> ignore;
  bool ignore_world_size = false;

  bool ignored(const std::string& name) const {
    for (const auto& prefix : ignore) {
      if (name.rfind(prefix, 0) == 0) return true;
    }
    return false;
  }
};

// One logical tensor read back: the whole value (replicated) or one value per rank.
struct Loaded {
  std::map<int, at::Tensor> values;  // key -1: replicated whole tensor; else the rank
};

Loaded read_tensor(ShardReader& reader, const TensorRecord& t, const std::string& dir) {
  Loaded out;
  if (t.per_rank) {
    for (const auto& p : t.pieces) {
      out.values[p.shard] = dtrain::checkpoint::read_piece_tensor(reader, t, p, dir);
    }
  } else {
    out.values[-1] = dtrain::checkpoint::read_full_tensor(reader, t, dir);
  }
  return out;
}

bool same_bytes(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const at::Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.numel() * ca.element_size()) == 0;
}

std::string scalar_text(const dtrain::StateValue& v) {
  if (auto i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (auto d = std::get_if<double>(&v)) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.17g", *d);
    return buf;
  }
  if (auto s = std::get_if<std::string>(&v)) return "'" + *s + "'";
  return "<tensor>";
}

bool same_scalar(const dtrain::StateValue& a, const dtrain::StateValue& b) {
  if (a.index() != b.index()) return false;
  if (auto da = std::get_if<double>(&a)) {
    const double db = std::get<double>(b);
    return std::memcmp(da, &db, sizeof(double)) == 0;  // bitwise, NaN-safe
  }
  if (auto ia = std::get_if<int64_t>(&a)) return *ia == std::get<int64_t>(b);
  if (auto sa = std::get_if<std::string>(&a)) return *sa == std::get<std::string>(b);
  return false;
}

int compare(const Options& o) {
  const std::string& dir_a = o.dir_a;
  const std::string& dir_b = o.dir_b;
  const CheckpointIndex a = dtrain::checkpoint::load_index(dir_a);
  const CheckpointIndex b = dtrain::checkpoint::load_index(dir_b);
  int differences = 0;
  auto differ = [&](const std::string& what) {
    std::printf("DIFFERENT %s\n", what.c_str());
    ++differences;
  };
  if (a.iteration != b.iteration) {
    differ("iteration: " + std::to_string(a.iteration) + " vs " + std::to_string(b.iteration));
  }
  if (!o.ignore_world_size && a.world_size != b.world_size) {
    differ("world_size: " + std::to_string(a.world_size) + " vs " + std::to_string(b.world_size));
  }
  // Scalars.
  std::set<std::string> names;
  for (const auto& [k, v] : a.scalars) names.insert(k);
  for (const auto& [k, v] : b.scalars) names.insert(k);
  for (const auto& k : names) {
    if (o.ignored(k)) continue;
    auto ia = a.scalars.find(k), ib = b.scalars.find(k);
    if (ia == a.scalars.end() || ib == b.scalars.end()) {
      differ("scalar " + k + ": only in " + (ia == a.scalars.end() ? dir_b : dir_a));
    } else if (!same_scalar(ia->second, ib->second)) {
      differ("scalar " + k + ": " + scalar_text(ia->second) + " vs " + scalar_text(ib->second));
    }
  }
  // Tensors.
  ShardReader reader_a(dir_a, a.world_size), reader_b(dir_b, b.world_size);
  int64_t tensors = 0, bytes = 0, within_tolerance = 0;
  double worst = 0.0;
  std::set<std::string> seen;
  for (const auto& ta : a.tensors) {
    seen.insert(ta.name);
    if (o.ignored(ta.name)) continue;
    const TensorRecord* tb = b.find_tensor(ta.name);
    if (!tb) {
      differ("tensor " + ta.name + ": only in " + dir_a);
      continue;
    }
    Loaded la = read_tensor(reader_a, ta, dir_a), lb = read_tensor(reader_b, *tb, dir_b);
    ++tensors;
    if (la.values.size() != lb.values.size()) {
      differ("tensor " + ta.name + ": different numbers of ranks");
      continue;
    }
    for (const auto& [r, va] : la.values) {
      auto it = lb.values.find(r);
      const std::string where = r < 0 ? ta.name : ta.name + " (rank " + std::to_string(r) + ")";
      if (it == lb.values.end()) {
        differ("tensor " + where + ": missing in " + dir_b);
      } else if (!same_bytes(va, it->second)) {
        const at::Tensor& vb = it->second;
        const bool comparable = va.sizes() == vb.sizes() && va.scalar_type() == vb.scalar_type() &&
                                at::isFloatingType(va.scalar_type()) && va.numel() > 0;
        double diff = 0.0, scale = 0.0;
        if (comparable) {
          diff = (va.to(at::kDouble) - vb.to(at::kDouble)).abs().max().item<double>();
          scale = vb.to(at::kDouble).abs().max().item<double>();
        }
        if (comparable && o.rtol >= 0 && diff <= o.rtol * scale) {
          bytes += va.numel() * static_cast<int64_t>(va.element_size());
          ++within_tolerance;
          worst = std::max(worst, scale > 0 ? diff / scale : 0.0);
        } else {
          char detail[128] = "";
          if (comparable) {
            std::snprintf(detail, sizeof(detail), ", max |a - b| = %.3g (max |b| = %.3g)", diff,
                          scale);
          }
          differ("tensor " + where + detail);
        }
      } else {
        bytes += va.numel() * static_cast<int64_t>(va.element_size());
      }
    }
  }
  for (const auto& tb : b.tensors) {
    if (!seen.count(tb.name) && !o.ignored(tb.name)) differ("tensor " + tb.name + ": only in " + dir_b);
  }
  if (o.rtol >= 0) {
    std::printf("%s: %lld tensors (%lld bytes; %lld not bitwise equal, largest relative "
                "difference %.3g <= rtol %.3g), %zu scalars, %d differences\n",
                differences ? "DIFFERENT" : "MATCH", static_cast<long long>(tensors),
                static_cast<long long>(bytes), static_cast<long long>(within_tolerance), worst,
                o.rtol, names.size(), differences);
  } else {
    std::printf("%s: %lld tensors (%lld identical bytes), %zu scalars, %d differences\n",
                differences ? "DIFFERENT" : "IDENTICAL", static_cast<long long>(tensors),
                static_cast<long long>(bytes), names.size(), differences);
  }
  return differences ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::vector<std::string> dirs;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--rtol" && i + 1 < argc) {
      o.rtol = std::atof(argv[++i]);
    } else if (arg == "--ignore" && i + 1 < argc) {
      o.ignore.push_back(argv[++i]);
    } else if (arg == "--ignore-world-size") {
      o.ignore_world_size = true;
    } else if (arg.rfind("--", 0) == 0) {
      dirs.clear();
      break;
    } else {
      dirs.push_back(arg);
    }
  }
  if (dirs.size() != 2) {
    std::fprintf(stderr,
                 "usage: %s [--rtol X] [--ignore PREFIX]... [--ignore-world-size] "
                 "CHECKPOINT_DIR_A CHECKPOINT_DIR_B\n",
                 argv[0]);
    return 2;
  }
  o.dir_a = dirs[0];
  o.dir_b = dirs[1];
  try {
    return compare(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ckpt_compare: %s\n", e.what());
    return 2;
  }
}
