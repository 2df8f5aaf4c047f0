// EventStorage and metric writers, shaped like detectron2's utils/events.py.
//
// The trainer owns one EventStorage; hooks put scalars into it during a step and
// writers read it every LOG.PERIOD iterations:
//
//   storage.put_scalar("total_loss", loss);            // smoothed (median) on the console
//   storage.put_scalar("lr", lr, /*smoothing_hint=*/false);
//   JsonWriter(out_dir + "/metrics.json").write(storage);
//
// Not thread-safe: used from the training thread only.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace dtrain::engine {

// History of one scalar: (value, iteration) pairs, bounded to the last kMaxLen.
class HistoryBuffer {
 public:
  static constexpr size_t kMaxLen = 1000000;
  void update(double value, int64_t iteration);
  double latest() const { return data_.back().first; }
  // Median / mean of the last `window` values.
  double median(size_t window) const;
  double avg(size_t window) const;
  // Mean of every value ever added (survives the bound).
  double global_avg() const { return count_ ? total_ / static_cast<double>(count_) : 0.0; }
  const std::vector<std::pair<double, int64_t>>& values() const { return data_; }

 private:
  std::vector<std::pair<double, int64_t>> data_;
  double total_ = 0.0;
  int64_t count_ = 0;
};

class EventStorage {
 public:
  explicit EventStorage(int64_t start_iter = 0) : iter_(start_iter) {}

  // Records `value` for `name` at the current iteration. With smoothing_hint, writers
  // that smooth (the console printer) show the median over their window.
  void put_scalar(const std::string& name, double value, bool smoothing_hint = true);
  // The history of `name`; throws dtrain::Error when it was never put.
  const HistoryBuffer& history(const std::string& name) const;
  bool has(const std::string& name) const { return histories_.count(name) > 0; }
  // name -> (latest value, iteration it was put at).
  std::map<std::string, std::pair<double, int64_t>> latest() const;
  // name -> (median over `window` if its hint says so, else latest; iteration).
  std::map<std::string, std::pair<double, int64_t>> latest_with_smoothing_hint(
      size_t window) const;
  const std::map<std::string, HistoryBuffer>& histories() const { return histories_; }

  int64_t iter() const { return iter_; }
  void set_iter(int64_t iter) { iter_ = iter; }

 private:
  int64_t iter_;
  std::map<std::string, HistoryBuffer> histories_;
  std::map<std::string, bool> smoothing_hints_;
};

// The iterations at which a run from start_iter to max_iter writes records, if it
// completes: every log_period-th iteration and the last (PeriodicWriter), each
// evaluation during training (EvalHook: every eval_period-th iteration but the last) and
// max_iter itself (the evaluation after training). Scalars other than evaluations are
// put at every iteration, so a write at iteration w records w and the evaluations since
// the previous write.
struct WriteSchedule {
  int64_t start_iter = 0;
  int64_t max_iter = 0;
  int64_t log_period = 20;
  std::optional<int64_t> eval_period;  // nullopt: no evaluation; 0: only after training
  // Whether the run writes a record at `iteration`.
  bool writes(int64_t iteration) const;
};

// Something that writes the storage's metrics somewhere (detectron2's EventWriter).
class EventWriter {
 public:
  virtual ~EventWriter() = default;
  virtual void write(const EventStorage& storage) = 0;
  virtual void close() {}
  // Called once before training starts at `start_iter` (e.g. after a resume).
  virtual void start(int64_t /*start_iter*/) {}
  // Called instead of start() before a resumed run (start_iter > 0) whose schedule is
  // known. Default: start(schedule.start_iter).
  virtual void resume(const WriteSchedule& schedule) { start(schedule.start_iter); }
};

// Appends one JSON object per call to a file: {"iteration": N, "<scalar>": value, ...}
// with every scalar whose latest value was put at iteration N (unsmoothed, so runs can
// be compared value by value). Iterations already written are not written again.
class JsonWriter : public EventWriter {
 public:
  explicit JsonWriter(std::string path);
  ~JsonWriter() override;
  // Drops every record of iterations >= start_iter (they are about to be recomputed).
  void start(int64_t start_iter) override;
  // Before a resumed run: drops the records at iterations >= start_iter that the run
  // will write again (schedule.writes), so no iteration appears twice; of the other
  // records >= start_iter keeps only the evaluation results ("eval/..." values, e.g. the
  // final evaluation of a finished run that is now extended) and drops the rest (steps
  // of an interrupted run past its checkpoint, recomputed but not logged again).
  void resume(const WriteSchedule& schedule) override;
  void write(const EventStorage& storage) override;
  void close() override;

 private:
  // Rewrites the file keeping what `keep` returns for each record (nullopt: dropped);
  // torn lines (a killed run's last) are dropped. Then appends from start_iter on.
  void rewrite(int64_t start_iter,
               const std::function<std::optional<std::string>(int64_t, const std::string&)>& keep);

  std::string path_;
  std::FILE* file_ = nullptr;
  int64_t last_written_ = -1;
};

// Prints detectron2's console line: eta, iter, losses (median of 20), time, data_time, lr.
class CommonMetricPrinter : public EventWriter {
 public:
  explicit CommonMetricPrinter(int64_t max_iter, size_t window = 20);
  void write(const EventStorage& storage) override;

 private:
  int64_t max_iter_;
  size_t window_;
  std::optional<std::pair<int64_t, double>> last_write_;  // (iter, wall seconds)
};

// "H:MM:SS" for a duration in seconds.
std::string format_duration(double seconds);

}  // namespace dtrain::engine
