// synthetic_classification is learnable: a small MLP on [784] and a small CNN with global
// pooling on [3, 32, 32] reach high accuracy on the test split within a few steps.
#include <torch/torch.h>

#include <gtest/gtest.h>

#include "runtime/data/sampler.h"
#include "runtime/data/synthetic.h"

namespace dtrain::data {
namespace {

double train_and_evaluate(torch::nn::Sequential net, const SyntheticClassificationOptions& base,
                          int steps, double lr) {
  SyntheticClassificationOptions o = base;
  o.train = true;
  SyntheticClassification train(o);
  o.train = false;
  o.num_samples = 256;
  SyntheticClassification test(o);

  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(lr).momentum(0.9));
  DistributedSampler sampler(train.size(), 64, 0, 1, /*seed=*/0);
  for (int step = 0; step < steps; ++step) {
    Batch b = train.get_batch(sampler.next());
    opt.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(net->forward(b.inputs), b.targets);
    loss.backward();
    opt.step();
  }
  torch::NoGradGuard no_grad;
  std::vector<int64_t> all(test.size());
  for (int64_t i = 0; i < test.size(); ++i) all[i] = i;
  Batch t = test.get_batch(all);
  return net->forward(t.inputs).argmax(1).eq(t.targets).to(torch::kFloat).mean().item<double>();
}

TEST(LearnableTest, MlpOnFlatInputs) {
  torch::manual_seed(0);
  SyntheticClassificationOptions o;
  o.num_samples = 1024;
  o.input_shape = {784};
  o.num_classes = 10;
  o.noise = 0.5;
  torch::nn::Sequential mlp(torch::nn::Linear(784, 64), torch::nn::ReLU(),
                            torch::nn::Linear(64, 10));
  const double accuracy = train_and_evaluate(mlp, o, 60, 0.05);
  RecordProperty("accuracy", std::to_string(accuracy));
  EXPECT_GT(accuracy, 0.95);
}

TEST(LearnableTest, CnnWithGlobalPoolingOnImages) {
  torch::manual_seed(0);
  SyntheticClassificationOptions o;
  o.num_samples = 1024;
  o.input_shape = {3, 32, 32};
  o.num_classes = 10;
  o.noise = 0.5;
  namespace nn = torch::nn;
  nn::Sequential cnn(nn::Conv2d(nn::Conv2dOptions(3, 8, 3).padding(1)), nn::ReLU(),
                     nn::Conv2d(nn::Conv2dOptions(8, 16, 3).padding(1).stride(2)), nn::ReLU(),
                     nn::AdaptiveAvgPool2d(1), nn::Flatten(), nn::Linear(16, 10));
  const double accuracy = train_and_evaluate(cnn, o, 150, 0.1);
  RecordProperty("accuracy", std::to_string(accuracy));
  EXPECT_GT(accuracy, 0.9);
}

}  // namespace
}  // namespace dtrain::data
