// apply_foreign_weights (foreign_load.h) and Checkpointer::load_foreign_file: weights from
// the PyTorch world (docs/INTEROP.md). Every rank that can read the file reads it; the
// others get its bytes from the first that can. The model is loaded by key matching; the
// optimizer and the scheduler when asked for and when their PyTorch state maps onto dtrain's.
#include <chrono>
#include <cstdint>
#include <filesystem>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "checkpoint/checkpointer.h"
#include "checkpoint/foreign_load.h"
#include "checkpoint/interop/matching.h"
#include "checkpoint/interop/weights.h"
#include "runtime/base/error.h"
#include "runtime/dist/agree.h"
#include "runtime/base/fs.h"
#include "runtime/base/logging.h"

namespace dtrain::checkpoint {
namespace {

interop::ForeignWeights read_everywhere(dist::Communicator& comm, const std::string& path) {
  const bool readable = std::filesystem::is_regular_file(path);
  const auto flags = comm.all_gather_bytes(readable ? "1" : "0");
  const auto first = std::find(flags.begin(), flags.end(), "1");
  DTRAIN_CHECK_T(CheckpointError, first != flags.end(), "cannot load '{}': no rank can read it",
                 path);
  const std::string what = fmt::format("loading '{}'", path);
  interop::ForeignWeights w;
  if (std::count(flags.begin(), flags.end(), "1") == static_cast<long>(flags.size())) {
    dist::all_or_none<CheckpointError>(comm, what, [&] { w = interop::read_foreign_weights(path); });
    return w;
  }
  const int root = static_cast<int>(first - flags.begin());
  const std::string bytes =
      dist::on_rank<CheckpointError>(comm, root, what, [&] { return fs::read_file(path, {SIZE_MAX}); });
  dist::all_or_none<CheckpointError>(comm, what, [&] { w = interop::parse_foreign_weights(bytes, path); });
  return w;
}

interop::KeyShapes key_shapes(const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  interop::KeyShapes out;
  for (const auto& [k, t] : tensors) out.emplace_back(k, t.sizes().vec());
  return out;
}

}  // namespace

ForeignLoadReport apply_foreign_weights(const interop::ForeignWeights& w,
                                        torch::nn::Module& model,
                                        const std::map<std::string, Stateful*>& states,
                                        const ForeignLoadOptions& options) {
  std::vector<std::pair<std::string, at::Tensor>> own;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) own.emplace_back(item.key(), item.value());
  for (const auto& item : model.named_buffers(/*recurse=*/true)) own.emplace_back(item.key(), item.value());
  ForeignLoadReport report;
  report.match = interop::match_keys(key_shapes(own), key_shapes(w.model),
                                     options.heuristics || w.matching_heuristics);
  DTRAIN_CHECK_T(CheckpointError, !options.strict || report.match.clean(),
                 "'{}' does not match the model (CHECKPOINT.STRICT is on):\n{}", w.origin,
                 report.match.table());
  {
    std::map<std::string, at::Tensor> dst(own.begin(), own.end());
    std::map<std::string, at::Tensor> src(w.model.begin(), w.model.end());
    at::NoGradGuard no_grad;
    for (const auto& p : report.match.matched) {
      at::Tensor d = dst.at(p.model_key);
      d.copy_(src.at(p.loaded_key));
    }
  }
  for (const auto& [key, state] : states) {
    const interop::PyObject* src = key == "optimizer"   ? w.optimizer
                                   : key == "scheduler" ? w.scheduler
                                                        : nullptr;
    if (src) report.states[key] = state->load_pytorch_state(*src);
  }
  return report;
}

StateDict Checkpointer::load_foreign_file(const std::string& path, bool heuristics,
                                          const std::optional<std::vector<std::string>>& only) {
  const auto t0 = std::chrono::steady_clock::now();
  const interop::ForeignWeights w = read_everywhere(comm_, path);
  std::map<std::string, Stateful*> states;
  for (const auto& [key, c] : checkpointables_) {
    if (!only || std::find(only->begin(), only->end(), key) != only->end()) states[key] = c.state;
  }
  ForeignLoadReport report;
  dist::all_or_none<CheckpointError>(comm_, fmt::format("loading '{}'", path), [&] {
    report = apply_foreign_weights(w, *model_, states,
                                   {heuristics || options_.matching_heuristics, options_.strict});
  });
  const interop::KeyMatch& match = report.match;
  if (comm_.rank() == 0) {
    const bool renamed = !match.stripped_prefix.empty() ||
        std::any_of(match.matched.begin(), match.matched.end(),
                    [](const auto& p) { return p.model_key != p.loaded_key; });
    if (!match.clean()) {
      DTRAIN_LOG_WARN("Some model parameters or buffers were not loaded from '{}':\n{}", path,
                      match.table());
    } else if (renamed) {
      DTRAIN_LOG_INFO("Keys of '{}' matched to the model:\n{}", path, match.table());
    }
    for (const auto& s : w.skipped) DTRAIN_LOG_WARN("'{}': {}; skipped", path, s);
    for (const auto& [key, why] : report.states) {
      if (why.empty()) {
        DTRAIN_LOG_INFO("Loaded the {} state of '{}'", key, path);
      } else {
        DTRAIN_LOG_WARN("The {} state of '{}' was not loaded: {}", key, path, why);
      }
    }
    DTRAIN_LOG_INFO("Loaded {} weights from {} ({} of {} model tensors) in {:.3f} s", w.format,
                    path, match.matched.size(), match.matched.size() +
                    match.shape_mismatch.size() + match.unmatched_model.size(),
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  loaded_from_ = path;
  StateDict extra;
  if (w.iteration) extra["iteration"] = *w.iteration;
  return extra;
}

}  // namespace dtrain::checkpoint
