// Tests of the `resnet` reference model: parameter counts, names and their order, both
// stems, basic and bottleneck blocks, errors, training and determinism.
#include "models/resnet.h"

#include <algorithm>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/conv.h>
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

TEST(ResNetTest, ImagenetStemParameterCountsEqualTorchvisions) {
  // torchvision.models.resnet{18,34,50,101}() (1000 classes), counted with python.
  const std::vector<std::pair<int64_t, int64_t>> expected = {
      {18, 11689512}, {34, 21797672}, {50, 25557032}, {101, 44549160}};
  for (const auto& [depth, count] : expected) {
    auto model = make_resnet(ResNetOptions{depth, 64, 3, 1000, ResNetStem::kImagenet});
    EXPECT_EQ(testing::parameter_count(*model), count) << "depth " << depth;
  }
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

TEST(ResNetTest, BottleneckBlocksFollowTorchvisionV15) {
  auto model = make_resnet(ResNetOptions{50, 4, 3, 10});
  auto params = model->named_parameters();
  // layer1.0 projects 4 -> 16 channels at stride 1; later blocks of a stage do not.
  EXPECT_EQ(params["layer1.0.conv1.weight"].sizes(), (at::IntArrayRef{4, 4, 1, 1}));
  EXPECT_EQ(params["layer1.0.conv2.weight"].sizes(), (at::IntArrayRef{4, 4, 3, 3}));
  EXPECT_EQ(params["layer1.0.conv3.weight"].sizes(), (at::IntArrayRef{16, 4, 1, 1}));
  EXPECT_EQ(params["layer1.0.bn3.weight"].sizes(), (at::IntArrayRef{16}));
  EXPECT_EQ(params["layer1.0.downsample.0.weight"].sizes(), (at::IntArrayRef{16, 4, 1, 1}));
  EXPECT_FALSE(has_parameter(*model, "layer1.1.downsample.0.weight"));
  EXPECT_EQ(params["layer2.0.conv1.weight"].sizes(), (at::IntArrayRef{8, 16, 1, 1}));
  EXPECT_EQ(params["layer4.2.conv3.weight"].sizes(), (at::IntArrayRef{128, 32, 1, 1}));
  EXPECT_FALSE(has_parameter(*model, "layer4.3.conv1.weight"));
  EXPECT_EQ(params["fc.weight"].sizes(), (at::IntArrayRef{10, 128}));
  // v1.5: the stride sits on the 3x3 conv2 (and the projection), not on conv1.
  auto modules = model->named_modules();
  auto stride = [&](const std::string& name) {
    return modules[name]->as<torch::nn::Conv2d>()->options.stride()->at(0);
  };
  EXPECT_EQ(stride("layer2.0.conv1"), 1);
  EXPECT_EQ(stride("layer2.0.conv2"), 2);
  EXPECT_EQ(stride("layer2.0.downsample.0"), 2);
  EXPECT_EQ(stride("layer1.0.conv2"), 1);
  auto resnet101 = make_resnet(ResNetOptions{101, 4, 3, 10});
  EXPECT_TRUE(has_parameter(*resnet101, "layer3.22.bn3.bias"));
  EXPECT_FALSE(has_parameter(*resnet101, "layer3.23.bn3.bias"));
}

TEST(ResNetTest, ImagenetStemIsTorchvisions) {
  auto model = make_resnet(ResNetOptions{18, 4, 3, 10, ResNetStem::kImagenet});
  auto conv1 = model->named_modules()["conv1"]->as<torch::nn::Conv2d>();
  EXPECT_EQ(conv1->weight.sizes(), (at::IntArrayRef{4, 3, 7, 7}));
  EXPECT_EQ(conv1->options.stride()->at(0), 2);
  EXPECT_EQ(c10::get<torch::ExpandingArray<2>>(conv1->options.padding())->at(0), 3);
  EXPECT_FALSE(conv1->options.bias());
  // The stem alone shrinks 64x64 to 16x16; stages 2-4 to 2x2. Any size still works.
  EXPECT_EQ(model->forward(at::randn({2, 3, 64, 64})).sizes(), (at::IntArrayRef{2, 10}));
  EXPECT_EQ(model->forward(at::randn({2, 3, 7, 9})).sizes(), (at::IntArrayRef{2, 10}));
  auto cifar = make_resnet(ResNetOptions{18, 4, 3, 10});
  EXPECT_EQ(cifar->named_parameters()["conv1.weight"].sizes(), (at::IntArrayRef{4, 3, 3, 3}));
  EXPECT_EQ(ResNetOptions{}.stem, ResNetStem::kCifar);
}

TEST(ResNetTest, BothStemsHaveTheSameKeysInTheSameOrder) {
  for (int64_t depth : {18, 50}) {
    auto cifar = make_resnet(ResNetOptions{depth, 4, 3, 10, ResNetStem::kCifar});
    auto imagenet = make_resnet(ResNetOptions{depth, 4, 3, 10, ResNetStem::kImagenet});
    auto keys = testing::state_dict_keys(*cifar);
    EXPECT_EQ(keys, testing::state_dict_keys(*imagenet));
    // PyTorch's order: each module's parameters, then its buffers, modules in pre-order.
    ASSERT_GE(keys.size(), 8u);
    EXPECT_EQ(std::vector<std::string>(keys.begin(), keys.begin() + 7),
              (std::vector<std::string>{"conv1.weight", "bn1.weight", "bn1.bias",
                                        "bn1.running_mean", "bn1.running_var",
                                        "bn1.num_batches_tracked", "layer1.0.conv1.weight"}));
    EXPECT_EQ(keys.back(), "fc.bias");
  }
}

TEST(ResNetTest, StemNamesAreCheckedAndNamedInErrors) {
  EXPECT_EQ(resnet_stem_from_name("cifar"), ResNetStem::kCifar);
  EXPECT_EQ(resnet_stem_from_name("imagenet"), ResNetStem::kImagenet);
  for (const std::string name : {"ImageNet", "", "cifar10"}) {
    std::string msg = message_of<ConfigError>([&] { resnet_stem_from_name(name); });
    EXPECT_NE(msg.find("MODEL.RESNET.STEM"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cifar, imagenet"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'" + name + "'"), std::string::npos) << msg;
  }
}

TEST(ResNetTest, UnsupportedDepthIsAConfigErrorNamingTheKeyAndTheDepths) {
  for (int64_t depth : {0, 20, 152}) {
    std::string msg =
        message_of<ConfigError>([&] { make_resnet(ResNetOptions{depth, 4, 3, 10}); });
    EXPECT_NE(msg.find("MODEL.RESNET.DEPTH"), std::string::npos) << msg;
    EXPECT_NE(msg.find("18, 34 (basic blocks), 50, 101 (bottleneck blocks)"), std::string::npos)
        << msg;
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

TEST(ResNetTest, BottleneckResNetWithImagenetStemTrains) {
  torch::manual_seed(3);
  auto model = make_resnet(ResNetOptions{50, 4, 3, 10, ResNetStem::kImagenet});
  at::Tensor inputs = at::randn({8, 3, 16, 16});
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
