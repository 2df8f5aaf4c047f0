// Tests of the model registry and build_model(cfg).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "models/model.h"
#include "runtime/base/config.h"
#include "runtime/base/error.h"
#include "tests/models/model_test_util.h"

namespace dtrain::models {
namespace {

using testing::message_of;

Config config_with(const std::vector<std::string>& overrides) {
  Config cfg = Config::defaults();
  cfg.merge_overrides(overrides);
  cfg.freeze();
  return cfg;
}

TEST(RegistryTest, ListsExactlyTheReferenceModels) {
  std::vector<std::string> names;
  for (const auto& entry : model_registry()) names.push_back(entry.first);
  EXPECT_EQ(names, (std::vector<std::string>{"cnn", "gpt", "mlp", "resnet"}));
}

TEST(RegistryTest, DefaultConfigBuildsTheMlp) {
  auto model = build_model(config_with({"MODEL.MLP.HIDDEN_DIMS", "(32, 16)"}));
  EXPECT_EQ(model->task(), Task::kClassification);
  auto params = model->named_parameters();
  EXPECT_EQ(params["fc1.weight"].sizes(), (at::IntArrayRef{32, 784}));
  EXPECT_EQ(params["fc2.weight"].sizes(), (at::IntArrayRef{16, 32}));
  EXPECT_EQ(params["head.weight"].sizes(), (at::IntArrayRef{10, 16}));
}

TEST(RegistryTest, BuildsResNetFromConfigKeys) {
  auto model = build_model(config_with({"MODEL.NAME", "resnet", "MODEL.RESNET.WIDTH", "4",
                                        "MODEL.RESNET.IN_CHANNELS", "1",
                                        "MODEL.RESNET.NUM_CLASSES", "7"}));
  EXPECT_EQ(model->task(), Task::kClassification);
  EXPECT_EQ(model->forward(at::randn({2, 1, 8, 8})).sizes(), (at::IntArrayRef{2, 7}));
  EXPECT_TRUE(model->named_parameters().contains("layer4.1.conv2.weight"));
  EXPECT_FALSE(model->named_parameters().contains("layer4.2.conv2.weight"));  // depth 18
}

TEST(RegistryTest, BuildsCnnFromConfigKeys) {
  auto model = build_model(config_with({"MODEL.NAME", "cnn", "MODEL.CNN.IN_CHANNELS", "3",
                                        "MODEL.CNN.INPUT_SIZE", "[16, 12]",
                                        "MODEL.CNN.CHANNELS", "[4, 8, 8]",
                                        "MODEL.CNN.KERNEL_SIZE", "5", "MODEL.CNN.HIDDEN_DIM", "0",
                                        "MODEL.CNN.NUM_CLASSES", "7"}));
  EXPECT_EQ(model->forward(at::randn({2, 3, 16, 12})).sizes(), (at::IntArrayRef{2, 7}));
  auto params = model->named_parameters();
  EXPECT_EQ(params["conv1.weight"].sizes(), (at::IntArrayRef{4, 3, 5, 5}));
  EXPECT_EQ(params["head.weight"].sizes(), (at::IntArrayRef{7, 8 * 2 * 1}));  // 16x12 / 8
  EXPECT_FALSE(params.contains("fc1.weight"));
}

TEST(RegistryTest, BuildsTheImagenetStemBottleneckResNetFromConfigKeys) {
  auto model = build_model(config_with({"MODEL.NAME", "resnet", "MODEL.RESNET.DEPTH", "50",
                                        "MODEL.RESNET.STEM", "imagenet", "MODEL.RESNET.WIDTH",
                                        "4"}));
  auto params = model->named_parameters();
  EXPECT_EQ(params["conv1.weight"].sizes(), (at::IntArrayRef{4, 3, 7, 7}));
  EXPECT_EQ(params["layer4.2.conv3.weight"].sizes(), (at::IntArrayRef{128, 32, 1, 1}));
  EXPECT_EQ(model->forward(at::randn({2, 3, 32, 32})).sizes(), (at::IntArrayRef{2, 10}));
}

TEST(RegistryTest, BuildsGptFromConfigKeys) {
  auto model = build_model(config_with({"MODEL.NAME", "gpt", "MODEL.GPT.N_LAYER", "1",
                                        "MODEL.GPT.N_EMBD", "16", "MODEL.GPT.N_HEAD", "4",
                                        "MODEL.GPT.VOCAB_SIZE", "11",
                                        "MODEL.GPT.CONTEXT_LENGTH", "6"}));
  EXPECT_EQ(model->task(), Task::kLanguageModel);
  EXPECT_EQ(model->forward(at::zeros({2, 6}, at::kLong)).sizes(), (at::IntArrayRef{2, 6, 11}));
  EXPECT_EQ(model->named_parameters()["transformer.wpe.weight"].sizes(),
            (at::IntArrayRef{6, 16}));
}

TEST(RegistryTest, UnknownNameListsTheRegisteredModels) {
  std::string msg =
      message_of<ConfigError>([] { build_model(config_with({"MODEL.NAME", "vit"})); });
  EXPECT_EQ(msg, "unknown MODEL.NAME 'vit'; registered models: cnn, gpt, mlp, resnet");
}

TEST(RegistryTest, BadModelKeysAreConfigErrorsNamingTheKey) {
  std::string msg = message_of<ConfigError>([] {
    build_model(config_with({"MODEL.NAME", "resnet", "MODEL.RESNET.DEPTH", "152"}));
  });
  EXPECT_NE(msg.find("MODEL.RESNET.DEPTH"), std::string::npos) << msg;
  msg = message_of<ConfigError>([] {
    build_model(config_with({"MODEL.NAME", "resnet", "MODEL.RESNET.STEM", "imagenet1k"}));
  });
  EXPECT_EQ(msg, "MODEL.RESNET.STEM must be one of cifar, imagenet, got 'imagenet1k'");
  msg = message_of<ConfigError>([] {
    build_model(config_with({"MODEL.NAME", "gpt", "MODEL.GPT.N_HEAD", "3"}));
  });
  EXPECT_NE(msg.find("MODEL.GPT.N_HEAD"), std::string::npos) << msg;
  msg = message_of<ConfigError>([] {
    build_model(config_with({"MODEL.MLP.HIDDEN_DIMS", "(8, 0)"}));
  });
  EXPECT_NE(msg.find("MODEL.MLP.HIDDEN_DIMS"), std::string::npos) << msg;
}

}  // namespace
}  // namespace dtrain::models
