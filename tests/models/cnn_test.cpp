// Tests of the `cnn` reference model: shapes, names, errors, training, determinism.
#include "models/cnn.h"

#include <algorithm>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/utils.h>

#include "runtime/base/error.h"
#include "tests/models/model_test_util.h"

namespace dtrain::models {
namespace {

using testing::message_of;

CnnOptions small_options() {
  CnnOptions o;
  o.in_channels = 2;
  o.input_size = {12, 10};
  o.channels = {4, 6};
  o.kernel_size = 3;
  o.hidden_dim = 8;
  o.num_classes = 5;
  return o;
}

TEST(CnnTest, ImagesGiveLogitsPerClass) {
  auto model = make_cnn(small_options());
  EXPECT_EQ(model->task(), Task::kClassification);
  EXPECT_EQ(model->forward(at::randn({3, 2, 12, 10})).sizes(), (at::IntArrayRef{3, 5}));
}

TEST(CnnTest, ParameterNamesAndShapesFollowTheBlocks) {
  auto model = make_cnn(small_options());
  EXPECT_EQ(testing::state_dict_keys(*model),
            (std::vector<std::string>{
                "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                "bn1.num_batches_tracked", "conv2.weight", "bn2.weight", "bn2.bias",
                "bn2.running_mean", "bn2.running_var", "bn2.num_batches_tracked", "fc1.weight",
                "fc1.bias", "head.weight", "head.bias"}));
  auto params = model->named_parameters();
  EXPECT_EQ(params["conv1.weight"].sizes(), (at::IntArrayRef{4, 2, 3, 3}));
  EXPECT_EQ(params["conv2.weight"].sizes(), (at::IntArrayRef{6, 4, 3, 3}));
  // 12x10 pooled twice is 3x2: 6 channels * 6 features.
  EXPECT_EQ(params["fc1.weight"].sizes(), (at::IntArrayRef{8, 36}));
  EXPECT_EQ(params["head.weight"].sizes(), (at::IntArrayRef{5, 8}));
}

TEST(CnnTest, ForwardIsConvBatchNormReluPoolThenLinears) {
  torch::manual_seed(3);
  auto model = make_cnn(small_options());
  model->eval();
  auto p = model->named_parameters();
  auto b = model->named_buffers();
  // Non-trivial running statistics, so that eval mode's normalization shows.
  b["bn1.running_mean"].uniform_(-0.5, 0.5);
  b["bn1.running_var"].uniform_(0.5, 2.0);
  at::Tensor x = at::randn({2, 2, 12, 10});
  at::Tensor y = x;
  for (int i = 1; i <= 2; ++i) {
    const std::string bn = "bn" + std::to_string(i);
    y = at::conv2d(y, p["conv" + std::to_string(i) + ".weight"], {}, 1, 1);
    y = at::batch_norm(y, p[bn + ".weight"], p[bn + ".bias"], b[bn + ".running_mean"],
                       b[bn + ".running_var"], false, 0.1, 1e-5, false);
    y = at::max_pool2d(at::relu(y), {2, 2});
  }
  y = at::relu(at::linear(y.flatten(1), p["fc1.weight"], p["fc1.bias"]));
  y = at::linear(y, p["head.weight"], p["head.bias"]);
  EXPECT_TRUE(at::allclose(model->forward(x), y, 1e-5, 1e-6));
}

TEST(CnnTest, ZeroHiddenDimGoesStraightToTheHead) {
  CnnOptions o = small_options();
  o.hidden_dim = 0;
  auto model = make_cnn(o);
  auto names = testing::parameter_names(*model);
  EXPECT_EQ(std::count(names.begin(), names.end(), "fc1.weight"), 0);
  EXPECT_EQ(model->named_parameters()["head.weight"].sizes(), (at::IntArrayRef{5, 36}));
}

TEST(CnnTest, DefaultOptionsMatchTheConfigDefaults) {
  CnnOptions o;
  EXPECT_EQ(o.in_channels, 1);
  EXPECT_EQ(o.input_size, (std::vector<int64_t>{28, 28}));
  EXPECT_EQ(o.channels, (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(o.kernel_size, 3);
  EXPECT_EQ(o.hidden_dim, 256);
  EXPECT_EQ(o.num_classes, 10);
  EXPECT_EQ(make_cnn(o)->forward(at::randn({2, 1, 28, 28})).sizes(), (at::IntArrayRef{2, 10}));
}

TEST(CnnTest, WrongInputShapeNamesTheExpectedOne) {
  auto model = make_cnn(small_options());
  std::string msg = message_of<Error>([&] { model->forward(at::randn({3, 1, 12, 10})); });
  EXPECT_NE(msg.find("[B, 2, 12, 10]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[3, 1, 12, 10]"), std::string::npos) << msg;
  msg = message_of<Error>([&] { model->forward(at::zeros({1, 2, 12, 10}, at::kLong)); });
  EXPECT_NE(msg.find("floating-point"), std::string::npos) << msg;
}

TEST(CnnTest, BadSizesAreConfigErrorsNamingTheKey) {
  auto msg_for = [](auto change) {
    CnnOptions o = small_options();
    change(o);
    return message_of<ConfigError>([&] { make_cnn(o); });
  };
  EXPECT_NE(msg_for([](CnnOptions& o) { o.kernel_size = 4; }).find("MODEL.CNN.KERNEL_SIZE"),
            std::string::npos);
  EXPECT_NE(msg_for([](CnnOptions& o) { o.channels = {}; }).find("MODEL.CNN.CHANNELS"),
            std::string::npos);
  EXPECT_NE(msg_for([](CnnOptions& o) { o.channels = {4, 0}; }).find("index 1"),
            std::string::npos);
  EXPECT_NE(msg_for([](CnnOptions& o) { o.input_size = {3, 10}; }).find("pooled to nothing"),
            std::string::npos);
  EXPECT_NE(msg_for([](CnnOptions& o) { o.input_size = {12}; }).find("MODEL.CNN.INPUT_SIZE"),
            std::string::npos);
  EXPECT_NE(msg_for([](CnnOptions& o) { o.num_classes = 0; }).find("MODEL.CNN.NUM_CLASSES"),
            std::string::npos);
}

TEST(CnnTest, SgdStepsReduceTheLossOnAFixedBatch) {
  torch::manual_seed(1);
  auto model = make_cnn(small_options());
  at::Tensor inputs = at::randn({16, 2, 12, 10});
  at::Tensor targets = at::randint(5, {16}, at::kLong);
  auto losses = testing::sgd_losses(*model, inputs, targets, 40, 0.1);
  EXPECT_LT(losses.back(), 0.5 * losses.front())
      << "loss " << losses.front() << " -> " << losses.back();
}

TEST(CnnTest, InitializationIsDeterministicGivenTheSeed) {
  torch::manual_seed(7);
  auto a = make_cnn(small_options());
  torch::manual_seed(7);
  auto b = make_cnn(small_options());
  EXPECT_TRUE(testing::bitwise_equal_state(*a, *b));
}

}  // namespace
}  // namespace dtrain::models
