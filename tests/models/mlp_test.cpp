// Tests of the `mlp` reference model: shapes, names, errors, training, determinism.
#include "models/mlp.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/utils.h>

#include "runtime/base/error.h"
#include "tests/models/model_test_util.h"

namespace dtrain::models {
namespace {

using testing::message_of;

MlpOptions small_options() { return MlpOptions{/*input_dim=*/12, {16, 8}, /*num_classes=*/5}; }

TEST(MlpTest, FlattensInputsAndReturnsLogitsPerClass) {
  auto model = make_mlp(small_options());
  EXPECT_EQ(model->task(), Task::kClassification);
  EXPECT_EQ(model->forward(at::randn({4, 3, 4})).sizes(), (at::IntArrayRef{4, 5}));
  EXPECT_EQ(model->forward(at::randn({2, 12})).sizes(), (at::IntArrayRef{2, 5}));
}

TEST(MlpTest, ParameterNamesAndShapes) {
  auto model = make_mlp(small_options());
  EXPECT_EQ(testing::parameter_names(*model),
            (std::vector<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                                      "head.weight", "head.bias"}));
  auto params = model->named_parameters();
  EXPECT_EQ(params["fc1.weight"].sizes(), (at::IntArrayRef{16, 12}));
  EXPECT_EQ(params["fc2.weight"].sizes(), (at::IntArrayRef{8, 16}));
  EXPECT_EQ(params["head.weight"].sizes(), (at::IntArrayRef{5, 8}));
  EXPECT_EQ(testing::parameter_count(*model), 16 * 12 + 16 + 8 * 16 + 8 + 5 * 8 + 5);
  EXPECT_TRUE(model->named_buffers().is_empty());
}

TEST(MlpTest, NoHiddenLayersIsALinearClassifier) {
  auto model = make_mlp(MlpOptions{6, {}, 3});
  EXPECT_EQ(testing::parameter_names(*model),
            (std::vector<std::string>{"head.weight", "head.bias"}));
  EXPECT_EQ(model->forward(at::randn({2, 6})).sizes(), (at::IntArrayRef{2, 3}));
}

TEST(MlpTest, DefaultOptionsMatchTheConfigDefaults) {
  MlpOptions options;
  EXPECT_EQ(options.input_dim, 784);
  EXPECT_EQ(options.hidden_dims, (std::vector<int64_t>{2048, 2048}));
  EXPECT_EQ(options.num_classes, 10);
}

TEST(MlpTest, WrongFeatureCountNamesTheExpectedDim) {
  auto model = make_mlp(small_options());
  std::string msg = message_of<Error>([&] { model->forward(at::randn({4, 13})); });
  EXPECT_NE(msg.find("12 features"), std::string::npos) << msg;
  EXPECT_NE(msg.find("MODEL.MLP.INPUT_DIM"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[4, 13]"), std::string::npos) << msg;
  msg = message_of<Error>([&] { model->forward(at::randn({0, 12})); });
  EXPECT_NE(msg.find("[0, 12]"), std::string::npos) << msg;
  msg = message_of<Error>([&] { model->forward(at::randn({})); });
  EXPECT_NE(msg.find("MODEL.MLP.INPUT_DIM"), std::string::npos) << msg;
}

TEST(MlpTest, IntegerInputsAreRejected) {
  auto model = make_mlp(small_options());
  std::string msg = message_of<Error>([&] { model->forward(at::zeros({2, 12}, at::kLong)); });
  EXPECT_NE(msg.find("floating-point"), std::string::npos) << msg;
}

TEST(MlpTest, NonPositiveSizesAreConfigErrorsNamingTheKey) {
  std::string msg = message_of<ConfigError>([] { make_mlp(MlpOptions{0, {4}, 2}); });
  EXPECT_NE(msg.find("MODEL.MLP.INPUT_DIM"), std::string::npos) << msg;
  msg = message_of<ConfigError>([] { make_mlp(MlpOptions{4, {4, -1}, 2}); });
  EXPECT_NE(msg.find("MODEL.MLP.HIDDEN_DIMS"), std::string::npos) << msg;
  EXPECT_NE(msg.find("index 1"), std::string::npos) << msg;
  msg = message_of<ConfigError>([] { make_mlp(MlpOptions{4, {4}, 0}); });
  EXPECT_NE(msg.find("MODEL.MLP.NUM_CLASSES"), std::string::npos) << msg;
}

TEST(MlpTest, SgdStepsReduceTheLossOnAFixedBatch) {
  torch::manual_seed(1);
  auto model = make_mlp(small_options());
  at::Tensor inputs = at::randn({16, 12});
  at::Tensor targets = at::randint(5, {16}, at::kLong);
  auto losses = testing::sgd_losses(*model, inputs, targets, 50, 0.5);
  EXPECT_LT(losses.back(), 0.5 * losses.front())
      << "loss " << losses.front() << " -> " << losses.back();
}

TEST(MlpTest, InitializationIsDeterministicGivenTheSeed) {
  torch::manual_seed(7);
  auto a = make_mlp(small_options());
  torch::manual_seed(7);
  auto b = make_mlp(small_options());
  EXPECT_TRUE(testing::bitwise_equal_state(*a, *b));
  auto c = make_mlp(small_options());  // the generator moved on
  EXPECT_FALSE(testing::bitwise_equal_state(*a, *c));
}

}  // namespace
}  // namespace dtrain::models
