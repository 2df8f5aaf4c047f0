// EventStorage, JSON and console metric writers.
#include "runtime/engine/events.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/base/error.h"
#include "runtime/base/env.h"
#include "runtime/base/fs.h"
#include "runtime/base/logging.h"

namespace dtrain::engine {

void HistoryBuffer::update(double value, int64_t iteration) {
  if (data_.size() == kMaxLen) data_.erase(data_.begin());
  data_.emplace_back(value, iteration);
  total_ += value;
  ++count_;
}

double HistoryBuffer::median(size_t window) const {
  size_t n = std::min(window, data_.size());
  if (n == 0) return 0.0;
  std::vector<double> v;
  v.reserve(n);
  for (size_t i = data_.size() - n; i < data_.size(); ++i) v.push_back(data_[i].first);
  std::sort(v.begin(), v.end());
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double HistoryBuffer::avg(size_t window) const {
  size_t n = std::min(window, data_.size());
  if (n == 0) return 0.0;
  double s = 0.0;
  for (size_t i = data_.size() - n; i < data_.size(); ++i) s += data_[i].first;
  return s / static_cast<double>(n);
}

void EventStorage::put_scalar(const std::string& name, double value, bool smoothing_hint) {
  histories_[name].update(value, iter_);
  auto it = smoothing_hints_.find(name);
  if (it == smoothing_hints_.end()) smoothing_hints_[name] = smoothing_hint;
}

const HistoryBuffer& EventStorage::history(const std::string& name) const {
  auto it = histories_.find(name);
  DTRAIN_CHECK(it != histories_.end(), "no scalar named '{}' in the event storage", name);
  return it->second;
}

std::map<std::string, std::pair<double, int64_t>> EventStorage::latest() const {
  std::map<std::string, std::pair<double, int64_t>> out;
  for (const auto& [name, h] : histories_) out[name] = h.values().back();
  return out;
}

std::map<std::string, std::pair<double, int64_t>> EventStorage::latest_with_smoothing_hint(
    size_t window) const {
  std::map<std::string, std::pair<double, int64_t>> out;
  for (const auto& [name, h] : histories_) {
    bool smooth = smoothing_hints_.at(name);
    out[name] = {smooth ? h.median(window) : h.latest(), h.values().back().second};
  }
  return out;
}

JsonWriter::JsonWriter(std::string path) : path_(std::move(path)) {
  file_ = std::fopen(path_.c_str(), "a");
  DTRAIN_CHECK(file_ != nullptr, "cannot open metrics file '{}': {}", path_, std::strerror(errno));
}

JsonWriter::~JsonWriter() { close(); }

bool WriteSchedule::writes(int64_t iteration) const {
  if (iteration < start_iter || iteration > max_iter) return false;
  if (iteration == max_iter) return eval_period.has_value();  // the final evaluation
  if ((iteration + 1) % std::max<int64_t>(log_period, 1) == 0 || iteration == max_iter - 1) return true;
  return eval_period && *eval_period > 0 && (iteration + 1) % *eval_period == 0;
}

void JsonWriter::rewrite(
    int64_t start_iter,
    const std::function<std::optional<std::string>(int64_t, const std::string&)>& keep) {
  if (!file_) return;
  std::fclose(file_);
  file_ = nullptr;
  std::string kept;
  {
    std::FILE* in = std::fopen(path_.c_str(), "r");
    if (in != nullptr) {
      char* line = nullptr;
      size_t cap = 0;
      ssize_t n;
      while ((n = ::getline(&line, &cap, in)) > 0) {
        std::string text(line, static_cast<size_t>(n));
        std::optional<std::string> out;
        try {
          auto j = nlohmann::json::parse(text);
          out = keep(j.value("iteration", int64_t{-1}), text);
        } catch (const std::exception&) {
          continue;  // a torn last line of a killed run
        }
        if (!out) continue;
        kept += *out;
        if (kept.back() != '\n') kept += '\n';
      }
      std::free(line);
      std::fclose(in);
    }
  }
  fs::write_file_atomic(path_, kept);
  file_ = std::fopen(path_.c_str(), "a");
  DTRAIN_CHECK(file_ != nullptr, "cannot open metrics file '{}': {}", path_, std::strerror(errno));
  last_written_ = start_iter - 1;
}

void JsonWriter::start(int64_t start_iter) {
  rewrite(start_iter, [&](int64_t iter, const std::string& text) -> std::optional<std::string> {
    if (iter >= start_iter) return std::nullopt;
    return text;
  });
}

void JsonWriter::resume(const WriteSchedule& schedule) {
  int64_t dropped = 0, kept_evals = 0;
  rewrite(schedule.start_iter,
          [&](int64_t iter, const std::string& text) -> std::optional<std::string> {
            if (iter < schedule.start_iter) return text;
            if (schedule.writes(iter)) {
              ++dropped;
              return std::nullopt;
            }
            auto record = nlohmann::ordered_json::parse(text);
            nlohmann::ordered_json evals;
            for (const auto& [key, value] : record.items()) {
              if (key == "iteration" || key.rfind("eval/", 0) == 0) evals[key] = value;
            }
            if (evals.size() < 2) {
              ++dropped;
              return std::nullopt;
            }
            ++kept_evals;
            return evals.dump();
          });
  if (dropped > 0 || kept_evals > 0) {
    DTRAIN_LOG_INFO("{}: dropped {} records at or after iteration {} (this run writes or "
                    "recomputes them); kept the evaluation results of {} others",
                    path_, dropped, schedule.start_iter, kept_evals);
  }
}

void JsonWriter::close() {
  if (file_) std::fclose(file_);
  file_ = nullptr;
}

void JsonWriter::write(const EventStorage& storage) {
  if (!file_) return;
  // Group the latest values by the iteration they were put at; write new iterations.
  std::map<int64_t, nlohmann::ordered_json> by_iter;
  for (const auto& [name, value_iter] : storage.latest()) {
    if (value_iter.second <= last_written_) continue;
    auto& obj = by_iter[value_iter.second];
    if (obj.empty()) obj["iteration"] = value_iter.second;
    obj[name] = value_iter.first;
  }
  for (auto& [iter, obj] : by_iter) {
    std::string line = obj.dump() + "\n";
    DTRAIN_CHECK(std::fwrite(line.data(), 1, line.size(), file_) == line.size(),
                 "cannot write metrics file '{}': {}", path_, std::strerror(errno));
    last_written_ = std::max(last_written_, iter);
  }
  std::fflush(file_);
}

std::string format_duration(double seconds) {
  auto s = static_cast<int64_t>(std::max(0.0, seconds));
  return fmt::format("{}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60);
}

CommonMetricPrinter::CommonMetricPrinter(int64_t max_iter, size_t window)
    : max_iter_(max_iter), window_(window) {}

void CommonMetricPrinter::write(const EventStorage& storage) {
  const int64_t iter = storage.iter();
  if (iter == max_iter_) return;  // after_train's final write repeats the last iteration
  std::string eta;
  if (storage.has("time")) {
    const auto& t = storage.history("time");
    double eta_s = t.median(1000) * static_cast<double>(max_iter_ - iter - 1);
    eta = "eta: " + format_duration(eta_s) + "  ";
  }
  std::string losses;
  for (const auto& [name, h] : storage.histories()) {
    if (name.find("loss") != std::string::npos && name.rfind("eval/", 0) != 0) {
      losses += fmt::format("{}: {:.4g}  ", name, h.median(window_));
    }
  }
  std::string times;
  if (storage.has("time")) times += fmt::format("time: {:.4f}  ", storage.history("time").avg(window_));
  if (storage.has("data_time")) {
    times += fmt::format("data_time: {:.4f}  ", storage.history("data_time").avg(window_));
  }
  std::string lr = storage.has("lr") ? fmt::format("lr: {:.5g}", storage.history("lr").latest())
                                     : std::string();
  DTRAIN_LOG_INFO("{}iter: {}  {}{}{}", eta, iter, losses, times, lr);
}

}  // namespace dtrain::engine
