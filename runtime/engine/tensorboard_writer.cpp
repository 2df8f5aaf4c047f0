// TensorboardXWriter: EventStorage scalars -> TensorBoard event files.
#include "runtime/engine/tensorboard_writer.h"

#include <map>
#include <utility>
#include <vector>

#include "runtime/base/logging.h"
#include "runtime/tensorboard/event_file_writer.h"

namespace dtrain::engine {

TensorboardXWriter::TensorboardXWriter(std::string log_dir) : log_dir_(std::move(log_dir)) {}

TensorboardXWriter::~TensorboardXWriter() = default;

std::string TensorboardXWriter::path() const { return file_ ? file_->path() : std::string(); }

void TensorboardXWriter::open(int64_t start_iter) {
  file_ = std::make_unique<tensorboard::EventFileWriter>(log_dir_);
  // TensorBoard's event accumulators treat every START after a run's first one as a
  // restart: they keep only the earlier events with step < START's step. See
  // tensorboard/backend/event_processing/plugin_event_accumulator.py and
  // event_accumulator.py, _CheckForRestartAndMaybePurge / _Purge (which needs
  // file_version "brain.Event:2" or later).
  file_->add_session_start(start_iter);
  file_->flush();
  last_written_ = start_iter - 1;
  DTRAIN_LOG_INFO("TensorBoard events: {} (session start at iteration {})", file_->path(),
                  start_iter);
}

void TensorboardXWriter::start(int64_t start_iter) {
  if (closed_) return;
  if (!file_) {
    open(start_iter);
  } else {
    file_->add_session_start(start_iter);
    file_->flush();
    last_written_ = start_iter - 1;
  }
}

void TensorboardXWriter::write(const EventStorage& storage) {
  if (closed_) return;
  if (!file_) open(0);  // no start(): a run from iteration 0 (PeriodicWriter's contract)
  std::map<int64_t, std::vector<std::pair<std::string, double>>> by_iter;
  int64_t newest = last_written_;
  for (const auto& [name, history] : storage.histories()) {
    const auto& values = history.values();
    // The new values are at the end (iterations only grow); find where they begin.
    size_t first = values.size();
    while (first > 0 && values[first - 1].second > last_written_) --first;
    for (size_t i = first; i < values.size(); ++i) {
      by_iter[values[i].second].emplace_back(name, values[i].first);
      newest = std::max(newest, values[i].second);
    }
  }
  for (const auto& [iter, scalars] : by_iter) file_->add_scalars(iter, scalars);
  file_->flush();
  last_written_ = newest;
}

void TensorboardXWriter::close() {
  closed_ = true;
  if (file_) file_->close();
}

}  // namespace dtrain::engine
