// Unit tests of engine::evaluate on a world of one: exact accuracy, loss and perplexity
// of hand-built models on tiny datasets, batching, and train/eval mode handling.
#include "runtime/engine/evaluator.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include <ATen/ATen.h>

#include "runtime/data/in_memory.h"
#include "runtime/dist/local_communicator.h"
#include "tests/runtime/engine/engine_test_util.h"

namespace dtrain::engine {
namespace {

using testing::InputLogitsClassifier;
using testing::NextTokenModel;
using testing::TinyClassificationSet;

data::ClassificationDataset make_tiny_set(const TinyClassificationSet& set) {
  return data::ClassificationDataset(testing::float_matrix(set.inputs),
                                     at::tensor(set.labels, at::kLong), 3, "tiny");
}

TEST(EvaluatorTest, ExactAccuracyAndLossOfAHandBuiltClassifier) {
  TinyClassificationSet set;
  auto ds = make_tiny_set(set);
  dist::LocalCommunicator comm;
  InputLogitsClassifier model(1.0);
  // Every batch size gives the same metrics: one, several with a short tail, all at once.
  for (int64_t batch : {1, 2, 4, 9, 64}) {
    SCOPED_TRACE(batch);
    auto m = evaluate(model, ds, comm, batch);
    ASSERT_EQ(m.size(), 2u);
    EXPECT_EQ(m.at("accuracy"), 6.0 / 9.0);
    EXPECT_NEAR(m.at("loss"), set.mean_loss(), 1e-6);
  }
}

TEST(EvaluatorTest, BatchesCoverEverySampleOnce) {
  TinyClassificationSet set;
  auto ds = make_tiny_set(set);
  dist::LocalCommunicator comm;
  InputLogitsClassifier model(1.0);
  evaluate(model, ds, comm, 4);
  EXPECT_EQ(model.forward_in_training_mode.size(), 3u);  // 4 + 4 + 1
}

TEST(EvaluatorTest, RunsInEvalModeAndRestoresTheMode) {
  TinyClassificationSet set;
  auto ds = make_tiny_set(set);
  dist::LocalCommunicator comm;
  InputLogitsClassifier model(1.0);
  model.train();
  evaluate(model, ds, comm, 9);
  EXPECT_TRUE(model.is_training());
  model.eval();
  evaluate(model, ds, comm, 9);
  EXPECT_FALSE(model.is_training());
  EXPECT_EQ(model.forward_in_training_mode, (std::vector<bool>{false, false}));
}

TEST(EvaluatorTest, RecordsNoAutogradGraph) {
  // A classifier with a parameter: the evaluation must not build a graph.
  class Scaled : public models::Model {
   public:
    Scaled() { w_ = register_parameter("w", at::ones({1})); }
    at::Tensor forward(const at::Tensor& x) override {
      at::Tensor out = x * w_;
      grad_enabled.push_back(out.requires_grad());
      return out;
    }
    models::Task task() const override { return models::Task::kClassification; }
    std::vector<bool> grad_enabled;

   private:
    at::Tensor w_;
  };
  TinyClassificationSet set;
  auto ds = make_tiny_set(set);
  dist::LocalCommunicator comm;
  Scaled model;
  auto m = evaluate(model, ds, comm, 9);
  EXPECT_EQ(model.grad_enabled, (std::vector<bool>{false}));
  EXPECT_EQ(m.at("accuracy"), 6.0 / 9.0);
}

TEST(EvaluatorTest, LanguageModelTokenAccuracyLossAndPerplexity) {
  // vocab 4; the model always predicts x + 1 (mod 4). In the stream below, 9 of the 12
  // next-token targets follow that rule.
  const std::vector<int64_t> stream = {0, 1, 2, 3, 0, 2, 3, 0, 1, 1, 2, 3, 1};
  //                          targets: 1  2  3  0  2  3  0  1  1  2  3  1
  //                          right:   y  y  y  y  n  y  y  y  n  y  y  n
  data::TokenDataset ds(at::tensor(stream, at::kLong), /*context_length=*/3, /*vocab_size=*/4,
                        "tiny tokens");
  ASSERT_EQ(ds.size(), 4);
  dist::LocalCommunicator comm;
  const double confidence = 2.0;
  NextTokenModel model(4, confidence);
  auto m = evaluate(model, ds, comm, 3);
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m.at("accuracy"), 9.0 / 12.0);
  const double right = testing::cross_entropy({confidence, 0, 0, 0}, 0);
  const double wrong = testing::cross_entropy({confidence, 0, 0, 0}, 1);
  const double loss = (9 * right + 3 * wrong) / 12.0;
  EXPECT_NEAR(m.at("loss"), loss, 1e-6);
  EXPECT_NEAR(m.at("perplexity"), std::exp(loss), 1e-6);
  EXPECT_DOUBLE_EQ(m.at("perplexity"), std::exp(m.at("loss")));
}

}  // namespace
}  // namespace dtrain::engine
