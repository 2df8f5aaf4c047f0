// BestMetric and the BestCheckpointer hook (see best_checkpointer.h).
#include "runtime/engine/best_checkpointer.h"

#include <cmath>
#include <cstdlib>

#include <fmt/format.h>

#include "runtime/base/error.h"
#include "runtime/base/logging.h"

namespace dtrain::engine {
namespace {

constexpr const char* kOwner = "best_checkpointer";

const char* mode_name(BestMetric::Mode mode) {
  return mode == BestMetric::Mode::kMax ? "max" : "min";
}

}  // namespace

BestMetric::Mode BestMetric::parse_mode(const std::string& mode) {
  if (mode == "max") return Mode::kMax;
  if (mode == "min") return Mode::kMin;
  throw ConfigError(fmt::format("TEST.BEST_CHECKPOINT.MODE: expected 'max' or 'min', got '{}'", mode));
}

bool BestMetric::improves(double value) const {
  if (!std::isfinite(value)) return false;
  if (!best_) return true;
  return mode_ == Mode::kMax ? value > best_->first : value < best_->first;
}

void BestMetric::update(double value, int64_t iteration) { best_ = std::make_pair(value, iteration); }

StateDict BestMetric::state_dict() const {
  if (!best_) return {};
  return {{"metric", metric_},
          {"mode", std::string(mode_name(mode_))},
          {"best_metric", best_->first},
          {"best_iter", best_->second}};
}

void BestMetric::load_state_dict(const StateDict& state) {
  best_.reset();
  if (state.empty()) return;
  const std::string& metric = state_string(state, "metric", kOwner);
  const std::string& mode = state_string(state, "mode", kOwner);
  const double value = state_double(state, "best_metric", kOwner);
  const int64_t iter = state_int(state, "best_iter", kOwner);
  if (metric != metric_ || mode != mode_name(mode_)) {
    DTRAIN_LOG_WARN("The checkpoint's best {} was for '{}' ({}), this run tracks '{}' ({}): "
                    "starting without a best",
                    kOwner, metric, mode, metric_, mode_name(mode_));
    return;
  }
  best_ = std::make_pair(value, iter);
}

std::string best_metric_storage_name(const std::string& metric) {
  return metric.rfind("eval/", 0) == 0 ? metric : "eval/" + metric;
}

BestCheckpointer::BestCheckpointer(int64_t eval_period, BestMetric& best, dist::Communicator& comm,
                                   SaveFn save, std::string file_prefix)
    : period_(eval_period),
      best_(best),
      comm_(comm),
      save_(std::move(save)),
      file_prefix_(std::move(file_prefix)) {}

void BestCheckpointer::after_step() {
  // The EvalHook's conditions: it evaluated in this after_step.
  const int64_t next = trainer_->iter() + 1;
  if (period_ > 0 && next % period_ == 0 && next != trainer_->max_iter()) check(trainer_->iter());
}

void BestCheckpointer::after_train() {
  // The EvalHook evaluated after a complete run only; never communicate after an
  // exception (it may have reached only this rank).
  if (trainer_->stopped_by_exception() || trainer_->iter() < trainer_->max_iter()) return;
  check(trainer_->iter() - 1);
}

void BestCheckpointer::check(int64_t trained_iter) {
  // Rank 0's value for everyone: evaluations are all-reduced, so the values agree, but
  // the decision to call the collective save must agree bit for bit. "" = not put now.
  std::string value_text;
  if (comm_.rank() == 0) {
    const EventStorage& storage = trainer_->storage();
    if (storage.has(best_.metric())) {
      const auto& [value, iter] = storage.history(best_.metric()).values().back();
      if (iter == storage.iter()) value_text = fmt::format("{:a} {}", value, iter);
    }
  }
  if (comm_.size() > 1) comm_.broadcast_bytes(value_text, 0);
  if (value_text.empty()) {
    DTRAIN_LOG_WARN("Given val metric {} does not seem to be computed/stored. Will not be "
                    "checkpointing based on it.",
                    best_.metric());
    return;
  }
  char* end = nullptr;
  const double value = std::strtod(value_text.c_str(), &end);
  const int64_t metric_iter = std::strtoll(end, nullptr, 10);

  if (!best_.improves(value)) {
    if (best_.has_best()) {
      DTRAIN_LOG_INFO("Not saving as latest eval score for {} is {:.5f}, not better than best "
                      "score {:.5f} @ iteration {}.",
                      best_.metric(), value, best_.best_value(), best_.best_iter());
    } else {
      DTRAIN_LOG_WARN("Not saving as latest eval score for {} is {}", best_.metric(), value);
    }
    return;
  }
  const bool first = !best_.has_best();
  const double previous = first ? 0.0 : best_.best_value();
  const int64_t previous_iter = first ? -1 : best_.best_iter();
  // Updated first, so that model_best carries its own value; undone if the save fails.
  const StateDict before = best_.state_dict();
  best_.update(value, metric_iter);
  try {
    save_(file_prefix_, {{"iteration", trained_iter}});
  } catch (...) {
    best_.load_state_dict(before);
    throw;
  }
  if (first) {
    DTRAIN_LOG_INFO("Saved first model at {:.5f} @ {} steps", value, metric_iter);
  } else {
    DTRAIN_LOG_INFO("Saved best model as latest eval score for {} is {:.5f}, better than last "
                    "best score {:.5f} @ iteration {}.",
                    best_.metric(), value, previous, previous_iter);
  }
}

}  // namespace dtrain::engine
