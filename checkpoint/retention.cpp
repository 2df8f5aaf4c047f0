// Retention: PeriodicCheckpointer and the order of checkpoints by recency (retention.h).
#include "checkpoint/retention.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <regex>

#include <fmt/format.h>

#include "checkpoint/checkpointer.h"
#include "checkpoint/index.h"
#include "runtime/base/error.h"
#include "runtime/base/logging.h"
#include "runtime/h5/h5.h"

namespace dtrain::checkpoint {
namespace stdfs = std::filesystem;

PeriodicCheckpointer::PeriodicCheckpointer(Checkpointer& checkpointer, int64_t period,
                                           std::optional<int64_t> max_iter, int64_t max_to_keep,
                                           std::string file_prefix, bool async, OnSaveError on_error)
    : checkpointer_(checkpointer),
      period_(period),
      max_iter_(max_iter),
      max_to_keep_(max_to_keep),
      prefix_(std::move(file_prefix)),
      async_(async),
      on_error_(on_error) {
  DTRAIN_CHECK_T(ConfigError, period_ > 0, "checkpoint period must be positive, got {}", period_);
}

OnSaveError parse_on_save_error(const std::string& value) {
  if (value == "stop") return OnSaveError::kStop;
  if (value == "warn") return OnSaveError::kWarn;
  throw ConfigError(fmt::format("CHECKPOINT.ON_SAVE_ERROR: expected 'stop' or 'warn', got '{}'", value));
}

template <typename F>
void PeriodicCheckpointer::periodic(const std::string& what, F&& f) {
  if (on_error_ == OnSaveError::kStop) {
    f();
    return;
  }
  try {
    f();
  } catch (const CheckpointError& e) {
    // Only an error raised alike on every rank: then every rank goes on alike.
    if (!agreed_on_every_rank(e)) throw;
    ++failed_saves_;
    DTRAIN_LOG_WARN("{} failed; training goes on without it (CHECKPOINT.ON_SAVE_ERROR warn; {} "
                    "failed so far): {}",
                    what, failed_saves_, e.what());
  }
}

void PeriodicCheckpointer::save(const std::string& name, const StateDict& extra) {
  const int64_t before = checkpointer_.commits();
  checkpointer_.save(name, extra);
  prune_if_committed(before);
}

void PeriodicCheckpointer::step(int64_t iteration, const StateDict& extra) {
  const int64_t before = checkpointer_.commits();
  // An asynchronous save whose shards are all written is committed at this boundary.
  periodic("committing an asynchronous periodic checkpoint", [&] { checkpointer_.poll_async(); });
  StateDict state = extra;
  state["iteration"] = iteration;
  const bool last = max_iter_ && iteration >= *max_iter_ - 1;
  if ((iteration + 1) % period_ == 0) {
    const std::string name = fmt::format("{}_{:07d}", prefix_, iteration);
    // One in flight is finished first, on its own: its failure does not skip this save.
    periodic("committing an asynchronous periodic checkpoint", [&] { checkpointer_.finish_async(); });
    periodic(fmt::format("saving periodic checkpoint {}", name), [&] {
      if (async_ && !last) {
        checkpointer_.save_async(name, state);
      } else {
        checkpointer_.save(name, state);
      }
    });
  }
  if (last) {
    // A periodic save still in flight is finished first, under the periodic rule.
    periodic("committing an asynchronous periodic checkpoint", [&] { checkpointer_.finish_async(); });
    checkpointer_.save(prefix_ + "_final", state);
  }
  periodic("deleting old periodic checkpoints (CHECKPOINT.MAX_TO_KEEP)", [&] { prune_if_committed(before); });
}

void PeriodicCheckpointer::finish() {
  const int64_t before = checkpointer_.commits();
  checkpointer_.finish_async();
  periodic("deleting old periodic checkpoints (CHECKPOINT.MAX_TO_KEEP)", [&] { prune_if_committed(before); });
}

void PeriodicCheckpointer::prune_if_committed(int64_t commits_before) {
  if (max_to_keep_ > 0 && checkpointer_.commits() != commits_before) prune();
}

void PeriodicCheckpointer::prune() {
  // Rebuilt from disk every time: survives restarts and other writers' leftovers.
  const std::regex periodic(prefix_ + "_([0-9]{7})");
  std::vector<std::string> names;
  for (const auto& path : checkpointer_.get_all_checkpoint_files()) {
    const std::string n = stdfs::path(path).filename().string();
    if (std::regex_match(n, periodic)) names.push_back(n);
  }
  std::sort(names.begin(), names.end());  // zero-padded: name order is iteration order
  const std::string last = stdfs::path(checkpointer_.get_checkpoint_file()).filename().string();
  const std::string resumed = stdfs::path(checkpointer_.loaded_from()).filename().string();
  // The newest max_to_keep stay; of the older ones, all but those protected go.
  const int64_t excess = static_cast<int64_t>(names.size()) - max_to_keep_;
  for (int64_t i = 0; i < excess; ++i) {
    if (names[i] == last || names[i] == resumed) continue;
    checkpointer_.remove_checkpoint(names[i]);
  }
}

std::vector<std::string> order_by_recency(const std::vector<std::string>& dirs) {
  struct Entry {
    std::string dir;
    int64_t iteration;
    bool final;
  };
  std::vector<Entry> entries;
  for (const auto& d : dirs) {
    int64_t iteration = std::numeric_limits<int64_t>::min();
    try {
      iteration = h5::File::open(d + "/" + kIndexFile).get_int_attr("iteration");
    } catch (const std::exception&) {
      // Damaged: tried last, where loading it reports why.
    }
    const bool final = d.size() >= 6 && d.compare(d.size() - 6, 6, "_final") == 0;
    entries.push_back({d, iteration, final});
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    if (a.iteration != b.iteration) return a.iteration > b.iteration;
    if (a.final != b.final) return a.final;
    return a.dir > b.dir;
  });
  std::vector<std::string> out;
  for (auto& e : entries) out.push_back(std::move(e.dir));
  return out;
}

}  // namespace dtrain::checkpoint
