// Helpers shared by the engine tests: hand-built models whose predictions are known in
// advance, and the exact metrics they must get on a given dataset.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/ATen.h>

#include "models/model.h"

namespace dtrain::engine::testing {

// Classifier whose logits are its inputs [B, C] times `scale`: predicts argmax(input).
// Records whether forward() ran in training mode. Not thread-safe.
class InputLogitsClassifier : public models::Model {
 public:
  explicit InputLogitsClassifier(double scale) : scale_(scale) {}
  at::Tensor forward(const at::Tensor& inputs) override {
    forward_in_training_mode.push_back(is_training());
    return inputs * scale_;
  }
  models::Task task() const override { return models::Task::kClassification; }
  std::vector<bool> forward_in_training_mode;

 private:
  double scale_;
};

// Language model that predicts token (x + 1) % vocab after token x: logits are
// `confidence` at that token and 0 elsewhere. Not thread-safe.
class NextTokenModel : public models::Model {
 public:
  NextTokenModel(int64_t vocab, double confidence) : vocab_(vocab), confidence_(confidence) {}
  at::Tensor forward(const at::Tensor& inputs) override {
    return at::one_hot((inputs + 1).remainder(vocab_), vocab_).to(at::kFloat) * confidence_;
  }
  models::Task task() const override { return models::Task::kLanguageModel; }

 private:
  int64_t vocab_;
  double confidence_;
};

// Cross-entropy (natural log) of one row of logits against `target`, in double.
inline double cross_entropy(const std::vector<double>& logits, int64_t target) {
  double max = logits[0];
  for (double v : logits) max = std::max(max, v);
  double sum = 0.0;
  for (double v : logits) sum += std::exp(v - max);
  return -(logits[static_cast<size_t>(target)] - max - std::log(sum));
}

// A float32 [rows.size(), C] tensor holding `rows`.
inline at::Tensor float_matrix(const std::vector<std::vector<float>>& rows) {
  const int64_t n = static_cast<int64_t>(rows.size());
  const int64_t c = static_cast<int64_t>(rows.front().size());
  at::Tensor t = at::empty({n, c}, at::kFloat);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < c; ++j) t[i][j] = rows[static_cast<size_t>(i)][static_cast<size_t>(j)];
  }
  return t;
}

// The 9-sample, 3-class evaluation set used by the evaluator tests: inputs (which are
// also InputLogitsClassifier's logits at scale 1), labels, and 6 of 9 predicted right.
struct TinyClassificationSet {
  std::vector<std::vector<float>> inputs = {
      {2.0f, 0.5f, -1.0f}, {0.0f, 3.0f, 1.0f},  {1.0f, 1.5f, 4.0f},   // right (0, 1, 2)
      {-1.0f, 0.0f, 2.5f}, {5.0f, 1.0f, 0.0f},  {0.25f, 0.5f, 0.0f},  // wrong, right, right
      {1.0f, 2.0f, 0.0f},  {3.0f, -2.0f, 1.0f}, {0.0f, 0.0f, 1.0f}};  // wrong, right, wrong
  std::vector<int64_t> labels = {0, 1, 2, 0, 0, 1, 0, 0, 1};
  int64_t correct = 6;

  // Mean cross-entropy over all samples (logits = inputs).
  double mean_loss() const {
    double s = 0.0;
    for (size_t i = 0; i < labels.size(); ++i) {
      std::vector<double> row(inputs[i].begin(), inputs[i].end());
      s += cross_entropy(row, labels[i]);
    }
    return s / static_cast<double>(labels.size());
  }
};

}  // namespace dtrain::engine::testing
