// Tests of the `resnet` reference model: parameter counts, names, shapes, errors,
// training and determinism.
#include "models/resnet.h"

#include <algorithm>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/utils.h>

#include "runtime/base/error.h"
#include "tests/models/model_test_util.h"

namespace dtrain::models {
namespace {

using testing::message_of;

bool has_parameter(const Model& model, const std::string& name) {
  auto names = testing::parameter_names(model);
  return std::find(names.begin(), names.end(), name) != names.end();
}

TEST(ResNetTest, ResNet18HasTheStandardCifarParameterCount) {
  auto model = make_resnet(ResNetOptions{18, 64, 3, 10});
  EXPECT_EQ(testing::parameter_count(*model), 11173962);
  EXPECT_EQ(model->task(), Task::kClassification);
}

TEST(ResNetTest, ResNet34HasTheStandardCifarParameterCount) {
  auto model = make_resnet(ResNetOptions{34, 64, 3, 10});
  EXPECT_EQ(testing::parameter_count(*model), 21282122);
  EXPECT_TRUE(has_parameter(*model, "layer3.5.conv2.weight"));
  EXPECT_FALSE(has_parameter(*model, "layer3.6.conv1.weight"));
  EXPECT_TRUE(has_parameter(*model, "layer4.2.bn2.bias"));
}

TEST(ResNetTest, ParameterAndBufferNamesFollowTorchvision) {
  auto model = make_resnet(ResNetOptions{18, 4, 3, 10});
  auto names = testing::parameter_names(*model);
  EXPECT_EQ(names.front(), "conv1.weight");
  EXPECT_EQ(names.back(), "fc.bias");
  EXPECT_TRUE(has_parameter(*model, "bn1.weight"));
  EXPECT_TRUE(has_parameter(*model, "layer1.1.bn2.weight"));
  EXPECT_TRUE(has_parameter(*model, "layer2.0.downsample.0.weight"));
  EXPECT_TRUE(has_parameter(*model, "layer4.0.downsample.1.bias"));
  EXPECT_FALSE(has_parameter(*model, "layer1.0.downsample.0.weight"));  // same shape
  EXPECT_FALSE(has_parameter(*model, "layer2.1.downsample.0.weight"));
  EXPECT_FALSE(has_parameter(*model, "conv1.bias"));  // convs feed BatchNorm
  auto buffers = model->named_buffers();
  EXPECT_TRUE(buffers.contains("bn1.running_mean"));
  EXPECT_TRUE(buffers.contains("layer3.0.downsample.1.running_var"));
  EXPECT_TRUE(buffers.contains("layer4.1.bn1.num_batches_tracked"));
  auto params = model->named_parameters();
  EXPECT_EQ(params["conv1.weight"].sizes(), (at::IntArrayRef{4, 3, 3, 3}));
  EXPECT_EQ(params["layer4.0.conv1.weight"].sizes(), (at::IntArrayRef{32, 16, 3, 3}));
  EXPECT_EQ(params["layer4.0.downsample.0.weight"].sizes(), (at::IntArrayRef{32, 16, 1, 1}));
  EXPECT_EQ(params["fc.weight"].sizes(), (at::IntArrayRef{10, 32}));
  // BatchNorm starts as the identity affine map.
  EXPECT_TRUE(at::equal(params["bn1.weight"], at::ones({4})));
  EXPECT_TRUE(at::equal(params["bn1.bias"], at::zeros({4})));
}

TEST(ResNetTest, OutputShapesInTrainAndEvalMode) {
  auto model = make_resnet(ResNetOptions{18, 4, 3, 7});
  EXPECT_EQ(model->forward(at::randn({2, 3, 32, 32})).sizes(), (at::IntArrayRef{2, 7}));
  model->eval();
  EXPECT_EQ(model->forward(at::randn({3, 3, 16, 16})).sizes(), (at::IntArrayRef{3, 7}));
  auto resnet34 = make_resnet(ResNetOptions{34, 4, 1, 5});
  EXPECT_EQ(resnet34->forward(at::randn({2, 1, 8, 8})).sizes(), (at::IntArrayRef{2, 5}));
}

TEST(ResNetTest, UnsupportedDepthIsAConfigErrorNamingTheKey) {
  for (int64_t depth : {0, 20, 50}) {
    std::string msg =
        message_of<ConfigError>([&] { make_resnet(ResNetOptions{depth, 4, 3, 10}); });
    EXPECT_NE(msg.find("MODEL.RESNET.DEPTH"), std::string::npos) << msg;
    EXPECT_NE(msg.find("18 or 34"), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::to_string(depth)), std::string::npos) << msg;
  }
}

TEST(ResNetTest, NonPositiveSizesAreConfigErrorsNamingTheKey) {
  std::string msg = message_of<ConfigError>([] { make_resnet(ResNetOptions{18, 0, 3, 10}); });
  EXPECT_NE(msg.find("MODEL.RESNET.WIDTH"), std::string::npos) << msg;
  msg = message_of<ConfigError>([] { make_resnet(ResNetOptions{18, 4, 0, 10}); });
  EXPECT_NE(msg.find("MODEL.RESNET.IN_CHANNELS"), std::string::npos) << msg;
  msg = message_of<ConfigError>([] { make_resnet(ResNetOptions{18, 4, 3, -1}); });
  EXPECT_NE(msg.find("MODEL.RESNET.NUM_CLASSES"), std::string::npos) << msg;
}

TEST(ResNetTest, BadInputsNameTheExpectedShape) {
  auto model = make_resnet(ResNetOptions{18, 4, 3, 10});
  std::string msg = message_of<Error>([&] { model->forward(at::randn({2, 1, 8, 8})); });
  EXPECT_NE(msg.find("[B, 3, H, W]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("MODEL.RESNET.IN_CHANNELS"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2, 1, 8, 8]"), std::string::npos) << msg;
  msg = message_of<Error>([&] { model->forward(at::randn({2, 3 * 8 * 8})); });
  EXPECT_NE(msg.find("[2, 192]"), std::string::npos) << msg;
  msg = message_of<Error>([&] { model->forward(at::zeros({2, 3, 8, 8}, at::kByte)); });
  EXPECT_NE(msg.find("floating-point"), std::string::npos) << msg;
}

TEST(ResNetTest, SgdStepsReduceTheLossOnAFixedBatch) {
  torch::manual_seed(2);
  auto model = make_resnet(ResNetOptions{18, 4, 3, 10});
  at::Tensor inputs = at::randn({8, 3, 8, 8});
  at::Tensor targets = at::randint(10, {8}, at::kLong);
  auto losses = testing::sgd_losses(*model, inputs, targets, 10, 0.05);
  EXPECT_LT(losses.back(), 0.5 * losses.front())
      << "loss " << losses.front() << " -> " << losses.back();
}

TEST(ResNetTest, InitializationIsDeterministicGivenTheSeed) {
  torch::manual_seed(7);
  auto a = make_resnet(ResNetOptions{18, 4, 3, 10});
  torch::manual_seed(7);
  auto b = make_resnet(ResNetOptions{18, 4, 3, 10});
  EXPECT_TRUE(testing::bitwise_equal_state(*a, *b));
  auto c = make_resnet(ResNetOptions{18, 4, 3, 10});
  EXPECT_FALSE(testing::bitwise_equal_state(*a, *c));
}

}  // namespace
}  // namespace dtrain::models
