// Unit tests of runtime/engine/best_checkpointer.h: BestMetric's comparison and state
// round trip, TEST.BEST_CHECKPOINT.* validation, and the hook's decisions behind an
// EvalHook that returns scripted metrics (single process, saves recorded, not written).
#include "runtime/engine/best_checkpointer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/base/config.h"
#include "runtime/base/error.h"
#include "runtime/dist/local_communicator.h"
#include "runtime/engine/default_trainer.h"
#include "runtime/engine/hooks.h"

namespace dtrain::engine {
namespace {

using Mode = BestMetric::Mode;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
const char* kMetric = "eval/ds/accuracy";

TEST(BestMetricTest, MaxAndMinCompareStrictly) {
  BestMetric max(kMetric, Mode::kMax);
  EXPECT_FALSE(max.has_best());
  EXPECT_TRUE(max.improves(-5.0));  // anything finite is the first best
  max.update(0.5, 9);
  EXPECT_TRUE(max.improves(0.6));
  EXPECT_FALSE(max.improves(0.5));  // equal is not better (detectron2's operator.gt)
  EXPECT_FALSE(max.improves(0.4));

  BestMetric min("eval/ds/loss", Mode::kMin);
  min.update(0.5, 9);
  EXPECT_TRUE(min.improves(0.4));
  EXPECT_FALSE(min.improves(0.5));
  EXPECT_FALSE(min.improves(0.6));
}

TEST(BestMetricTest, NonFiniteValuesNeverImprove) {
  BestMetric best(kMetric, Mode::kMax);
  EXPECT_FALSE(best.improves(kNaN));
  EXPECT_FALSE(best.improves(kInf));
  best.update(0.1, 3);
  EXPECT_FALSE(best.improves(kInf));
  EXPECT_FALSE(best.improves(kNaN));
  BestMetric min("eval/ds/loss", Mode::kMin);
  EXPECT_FALSE(min.improves(-kInf));
}

TEST(BestMetricTest, StateRoundTrip) {
  BestMetric a(kMetric, Mode::kMin);
  EXPECT_TRUE(a.state_dict().empty());  // no best yet: nothing saved
  a.update(0.123456789012345, 42);
  const StateDict s = a.state_dict();
  EXPECT_EQ(state_string(s, "metric", "t"), kMetric);
  EXPECT_EQ(state_string(s, "mode", "t"), "min");
  EXPECT_EQ(state_double(s, "best_metric", "t"), 0.123456789012345);
  EXPECT_EQ(state_int(s, "best_iter", "t"), 42);

  BestMetric b(kMetric, Mode::kMin);
  b.load_state_dict(s);
  ASSERT_TRUE(b.has_best());
  EXPECT_EQ(b.best_value(), 0.123456789012345);
  EXPECT_EQ(b.best_iter(), 42);
  // An empty state (older checkpoint, or saved before the first evaluation) resets.
  b.load_state_dict({});
  EXPECT_FALSE(b.has_best());
}

TEST(BestMetricTest, BestOfAnotherMetricOrModeIsNotRestored) {
  BestMetric a(kMetric, Mode::kMax);
  a.update(0.9, 10);
  BestMetric other_metric("eval/ds/loss", Mode::kMax);
  other_metric.load_state_dict(a.state_dict());
  EXPECT_FALSE(other_metric.has_best());
  BestMetric other_mode(kMetric, Mode::kMin);
  other_mode.load_state_dict(a.state_dict());
  EXPECT_FALSE(other_mode.has_best());
}

TEST(BestMetricTest, MissingEntryThrowsNamingIt) {
  BestMetric a(kMetric, Mode::kMax);
  try {
    a.load_state_dict({{"metric", std::string(kMetric)}, {"mode", std::string("max")}});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("best_metric"), std::string::npos) << e.what();
  }
}

TEST(BestMetricTest, StorageNameAcceptsBothSpellings) {
  EXPECT_EQ(best_metric_storage_name("ds/accuracy"), "eval/ds/accuracy");
  EXPECT_EQ(best_metric_storage_name("eval/ds/accuracy"), "eval/ds/accuracy");
}

Config config_with(const std::vector<std::string>& overrides) {
  Config cfg = Config::defaults();
  cfg.merge_overrides(overrides);
  return cfg;
}

// The ConfigError message of make_best_metric(cfg), or "" when it does not throw.
std::string config_error(const Config& cfg) {
  try {
    make_best_metric(cfg);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(MakeBestMetricTest, OffByDefault) { EXPECT_EQ(make_best_metric(Config::defaults()), nullptr); }

TEST(MakeBestMetricTest, BuildsFromEitherSpelling) {
  for (const char* metric : {"synthetic_classification/loss", "eval/synthetic_classification/loss"}) {
    auto best = make_best_metric(config_with({"DATASETS.TEST", "[synthetic_classification]",
                                              "TEST.BEST_CHECKPOINT.METRIC", metric,
                                              "TEST.BEST_CHECKPOINT.MODE", "min"}));
    ASSERT_NE(best, nullptr);
    EXPECT_EQ(best->metric(), "eval/synthetic_classification/loss");
    EXPECT_EQ(best->mode(), Mode::kMin);
  }
}

TEST(MakeBestMetricTest, ErrorsNameTheKeys) {
  const std::string no_test = config_error(config_with(
      {"DATASETS.TEST", "[]", "TEST.BEST_CHECKPOINT.METRIC", "synthetic_classification/accuracy"}));
  EXPECT_NE(no_test.find("TEST.BEST_CHECKPOINT.METRIC"), std::string::npos) << no_test;
  EXPECT_NE(no_test.find("DATASETS.TEST"), std::string::npos) << no_test;

  const std::string bad_mode = config_error(
      config_with({"DATASETS.TEST", "[synthetic_classification]", "TEST.BEST_CHECKPOINT.METRIC",
                   "synthetic_classification/accuracy", "TEST.BEST_CHECKPOINT.MODE", "larger"}));
  EXPECT_NE(bad_mode.find("TEST.BEST_CHECKPOINT.MODE"), std::string::npos) << bad_mode;
  EXPECT_NE(bad_mode.find("larger"), std::string::npos) << bad_mode;

  const std::string bad_dataset = config_error(config_with(
      {"DATASETS.TEST", "[synthetic_classification]", "TEST.BEST_CHECKPOINT.METRIC", "accuracy"}));
  EXPECT_NE(bad_dataset.find("TEST.BEST_CHECKPOINT.METRIC"), std::string::npos) << bad_dataset;
  EXPECT_NE(bad_dataset.find("synthetic_classification"), std::string::npos) << bad_dataset;
}

// A trainer whose steps do nothing but throw at `throw_at` (when >= 0).
class IdleTrainer : public TrainerBase {
 public:
  explicit IdleTrainer(int64_t throw_at = -1) : throw_at_(throw_at) {}
  void run_step() override {
    if (iter() == throw_at_) throw std::runtime_error("boom");
  }

 private:
  int64_t throw_at_;
};

struct Save {
  std::string name;
  int64_t iteration;    // the "iteration" extra
  double best_value;    // the best the checkpoint carries
  int64_t best_iter;
};

// Trains [start, max_iter) with an EvalHook of `period` returning `values` in turn as
// "ds/<name>", then the BestCheckpointer; returns the saves it made.
std::vector<Save> run_best(BestMetric& best, int64_t period, int64_t start, int64_t max_iter,
                           std::vector<double> values, int64_t throw_at = -1,
                           const char* name = "accuracy") {
  IdleTrainer trainer(throw_at);
  dist::LocalCommunicator comm;
  size_t next = 0;
  std::vector<Save> saves;
  auto eval = std::make_shared<EvalHook>(period, [&] {
    EXPECT_LT(next, values.size()) << "more evaluations than scripted";
    return std::map<std::string, double>{{std::string("ds/") + name, values.at(next++)}};
  });
  auto hook = std::make_shared<BestCheckpointer>(
      period, best, comm, [&](const std::string& n, const StateDict& extra) {
        saves.push_back({n, state_int(extra, "iteration", "extra"), best.best_value(),
                         best.best_iter()});
      });
  trainer.register_hooks({eval, hook});
  try {
    trainer.train(start, max_iter);
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(next, values.size()) << "fewer evaluations than scripted";
  return saves;
}

TEST(BestCheckpointerTest, SavesOnlyWhenTheMetricImproves) {
  BestMetric best(kMetric, Mode::kMax);
  // Evaluations after iterations 2, 5, 8 and after training (storage iteration 10).
  auto saves = run_best(best, 3, 0, 10, {0.5, 0.4, 0.7, 0.7});
  ASSERT_EQ(saves.size(), 2u);
  EXPECT_EQ(saves[0].name, "model_best");
  EXPECT_EQ(saves[0].iteration, 2);
  EXPECT_EQ(saves[0].best_value, 0.5);  // the checkpoint carries its own value
  EXPECT_EQ(saves[0].best_iter, 2);
  EXPECT_EQ(saves[1].iteration, 8);
  EXPECT_EQ(saves[1].best_value, 0.7);
  EXPECT_EQ(saves[1].best_iter, 8);
  EXPECT_EQ(best.best_value(), 0.7);  // the final 0.7 is not better
  EXPECT_EQ(best.best_iter(), 8);
}

TEST(BestCheckpointerTest, FinalEvaluationSavesTheLastTrainedIteration) {
  BestMetric best("eval/ds/loss", Mode::kMin);
  auto saves = run_best(best, 4, 0, 10, {0.9, 0.8, 0.3}, -1, "loss");
  ASSERT_EQ(saves.size(), 3u);
  EXPECT_EQ(saves[2].iteration, 9);   // resume from it continues at 10 == max_iter
  EXPECT_EQ(saves[2].best_iter, 10);  // the storage (metrics.json) iteration
  EXPECT_EQ(saves[2].best_value, 0.3);
}

TEST(BestCheckpointerTest, NonFiniteFirstValueIsNotSaved) {
  BestMetric best(kMetric, Mode::kMax);
  auto saves = run_best(best, 3, 0, 7, {kNaN, 0.2, 0.1});
  ASSERT_EQ(saves.size(), 1u);
  EXPECT_EQ(saves[0].iteration, 5);
}

TEST(BestCheckpointerTest, MissingMetricSavesNothing) {
  BestMetric best("eval/ds/accuracy", Mode::kMax);
  auto saves = run_best(best, 3, 0, 7, {0.5, 0.6, 0.7}, -1, "loss");
  EXPECT_TRUE(saves.empty());
  EXPECT_FALSE(best.has_best());
}

TEST(BestCheckpointerTest, NoCheckAfterAFailedRun) {
  BestMetric best(kMetric, Mode::kMax);
  // Fails in iteration 7: evaluated after 2 and 5 only; no final check.
  auto saves = run_best(best, 3, 0, 10, {0.5, 0.6}, /*throw_at=*/7);
  ASSERT_EQ(saves.size(), 2u);
  EXPECT_EQ(saves[1].iteration, 5);
}

TEST(BestCheckpointerTest, ARestoredBestIsNotOverwrittenByAWorseValue) {
  BestMetric first(kMetric, Mode::kMax);
  run_best(first, 3, 0, 6, {0.5, 0.8});  // evaluations after 2 and after training (6)
  ASSERT_EQ(first.best_value(), 0.8);
  BestMetric resumed(kMetric, Mode::kMax);
  resumed.load_state_dict(first.state_dict());
  // Extended to 13: evaluations after 8, 11 and training; 0.7 and 0.75 are below the
  // restored 0.8 and not saved, 0.9 is.
  auto saves = run_best(resumed, 3, 6, 13, {0.7, 0.75, 0.9});
  ASSERT_EQ(saves.size(), 1u);
  EXPECT_EQ(saves[0].iteration, 12);
  EXPECT_EQ(saves[0].best_value, 0.9);
}

}  // namespace
}  // namespace dtrain::engine
