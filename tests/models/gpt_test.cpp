// Tests of the `gpt` reference model: shapes, names, causality, errors, dropout,
// initialization, training and determinism.
#include "models/gpt.h"

#include <cmath>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/utils.h>

#include "runtime/base/error.h"
#include "tests/models/model_test_util.h"

namespace dtrain::models {
namespace {

using testing::message_of;

// 2 layers, 4 heads of width 8, vocabulary 50, context 16.
GptOptions small_options() {
  GptOptions o;
  o.n_layer = 2;
  o.n_head = 4;
  o.n_embd = 32;
  o.vocab_size = 50;
  o.context_length = 16;
  o.dropout = 0.0;
  return o;
}

TEST(GptTest, LogitsPerPositionOverTheVocabulary) {
  auto model = make_gpt(small_options());
  EXPECT_EQ(model->task(), Task::kLanguageModel);
  at::Tensor tokens = at::randint(50, {3, 16}, at::kLong);
  EXPECT_EQ(model->forward(tokens).sizes(), (at::IntArrayRef{3, 16, 50}));
  EXPECT_EQ(model->forward(tokens.narrow(1, 0, 5)).sizes(), (at::IntArrayRef{3, 5, 50}));
  EXPECT_EQ(model->forward(tokens.narrow(1, 0, 1)).sizes(), (at::IntArrayRef{3, 1, 50}));
}

TEST(GptTest, ParameterNamesFollowNanoGptAndCountMatches) {
  GptOptions o = small_options();
  o.n_layer = 1;
  auto model = make_gpt(o);
  EXPECT_EQ(testing::parameter_names(*model),
            (std::vector<std::string>{
                "transformer.wte.weight", "transformer.wpe.weight",
                "transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias",
                "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_attn.bias",
                "transformer.h.0.attn.c_proj.weight", "transformer.h.0.attn.c_proj.bias",
                "transformer.h.0.ln_2.weight", "transformer.h.0.ln_2.bias",
                "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_fc.bias",
                "transformer.h.0.mlp.c_proj.weight", "transformer.h.0.mlp.c_proj.bias",
                "transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight"}));
  EXPECT_TRUE(model->named_buffers().is_empty());
  auto params = model->named_parameters();
  EXPECT_EQ(params["transformer.wte.weight"].sizes(), (at::IntArrayRef{50, 32}));
  EXPECT_EQ(params["transformer.wpe.weight"].sizes(), (at::IntArrayRef{16, 32}));
  EXPECT_EQ(params["transformer.h.0.attn.c_attn.weight"].sizes(), (at::IntArrayRef{96, 32}));
  EXPECT_EQ(params["transformer.h.0.mlp.c_fc.weight"].sizes(), (at::IntArrayRef{128, 32}));
  EXPECT_EQ(params["lm_head.weight"].sizes(), (at::IntArrayRef{50, 32}));
  // Untied: the lm head is its own tensor.
  EXPECT_NE(params["lm_head.weight"].data_ptr(), params["transformer.wte.weight"].data_ptr());

  o.n_layer = 3;
  const int64_t c = o.n_embd, v = o.vocab_size, t = o.context_length;
  EXPECT_EQ(testing::parameter_count(*make_gpt(o)),
            2 * v * c + t * c + o.n_layer * (12 * c * c + 13 * c) + 2 * c);
}

TEST(GptTest, ChangingATokenDoesNotChangeEarlierLogits) {
  GptOptions o = small_options();
  o.dropout = 0.1;  // eval() must switch it off
  auto model = make_gpt(o);
  model->eval();
  at::Tensor tokens = at::randint(50, {2, 12}, at::kLong);
  at::Tensor before = model->forward(tokens);
  for (int64_t t : {0, 5, 11}) {
    at::Tensor changed = tokens.clone();
    changed.select(1, t).add_(1).remainder_(50);
    at::Tensor after = model->forward(changed);
    EXPECT_TRUE(at::allclose(before.narrow(1, 0, t), after.narrow(1, 0, t), 0, 1e-6))
        << "position " << t;
    EXPECT_FALSE(at::allclose(before.narrow(1, t, 12 - t), after.narrow(1, t, 12 - t)))
        << "position " << t;
  }
}

TEST(GptTest, DropoutIsActiveOnlyInTraining) {
  GptOptions o = small_options();
  o.dropout = 0.5;
  auto model = make_gpt(o);
  at::Tensor tokens = at::randint(50, {2, 8}, at::kLong);
  EXPECT_FALSE(at::equal(model->forward(tokens), model->forward(tokens)));
  model->eval();
  EXPECT_TRUE(at::equal(model->forward(tokens), model->forward(tokens)));
}

TEST(GptTest, InitializationFollowsGpt2) {
  GptOptions o = small_options();
  o.n_embd = 64;
  o.vocab_size = 256;
  auto model = make_gpt(o);
  auto params = model->named_parameters();
  auto std_of = [&](const char* name) { return params[name].std().item<double>(); };
  EXPECT_NEAR(std_of("lm_head.weight"), 0.02, 0.002);
  EXPECT_NEAR(std_of("transformer.wte.weight"), 0.02, 0.002);
  EXPECT_NEAR(std_of("transformer.h.1.mlp.c_fc.weight"), 0.02, 0.002);
  const double proj_std = 0.02 / std::sqrt(2.0 * o.n_layer);
  EXPECT_NEAR(std_of("transformer.h.0.mlp.c_proj.weight"), proj_std, 0.1 * proj_std);
  EXPECT_TRUE(at::equal(params["transformer.h.0.attn.c_attn.bias"], at::zeros({192})));
  EXPECT_TRUE(at::equal(params["transformer.h.1.ln_2.weight"], at::ones({64})));
  EXPECT_TRUE(at::equal(params["transformer.ln_f.bias"], at::zeros({64})));
}

TEST(GptTest, TooLongSequenceNamesBothLengths) {
  auto model = make_gpt(small_options());
  std::string msg =
      message_of<Error>([&] { model->forward(at::zeros({2, 17}, at::kLong)); });
  EXPECT_NE(msg.find("T=17"), std::string::npos) << msg;
  EXPECT_NE(msg.find("MODEL.GPT.CONTEXT_LENGTH=16"), std::string::npos) << msg;
  msg = message_of<Error>([&] { model->forward(at::zeros({2, 0}, at::kLong)); });
  EXPECT_NE(msg.find("T=0"), std::string::npos) << msg;
}

TEST(GptTest, NonTokenInputsAreRejected) {
  auto model = make_gpt(small_options());
  std::string msg = message_of<Error>([&] { model->forward(at::zeros({2, 4})); });
  EXPECT_NE(msg.find("int64 token ids [B, T]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Float"), std::string::npos) << msg;
  msg = message_of<Error>([&] { model->forward(at::zeros({2, 4, 1}, at::kLong)); });
  EXPECT_NE(msg.find("[2, 4, 1]"), std::string::npos) << msg;
}

TEST(GptTest, HeadsThatDoNotDivideTheWidthAreAConfigError) {
  GptOptions o = small_options();
  o.n_head = 5;
  std::string msg = message_of<ConfigError>([&] { make_gpt(o); });
  EXPECT_NE(msg.find("MODEL.GPT.N_HEAD=5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("MODEL.GPT.N_EMBD=32"), std::string::npos) << msg;
}

TEST(GptTest, BadSizesAndDropoutAreConfigErrorsNamingTheKey) {
  struct Case {
    void (*mutate)(GptOptions&);
    const char* key;
  };
  const Case cases[] = {
      {[](GptOptions& o) { o.n_layer = 0; }, "MODEL.GPT.N_LAYER"},
      {[](GptOptions& o) { o.n_head = 0; }, "MODEL.GPT.N_HEAD"},
      {[](GptOptions& o) { o.n_embd = -4; }, "MODEL.GPT.N_EMBD"},
      {[](GptOptions& o) { o.vocab_size = 0; }, "MODEL.GPT.VOCAB_SIZE"},
      {[](GptOptions& o) { o.context_length = 0; }, "MODEL.GPT.CONTEXT_LENGTH"},
      {[](GptOptions& o) { o.dropout = 1.0; }, "MODEL.GPT.DROPOUT"},
      {[](GptOptions& o) { o.dropout = -0.1; }, "MODEL.GPT.DROPOUT"},
  };
  for (const Case& c : cases) {
    GptOptions o = small_options();
    c.mutate(o);
    std::string msg = message_of<ConfigError>([&] { make_gpt(o); });
    EXPECT_NE(msg.find(c.key), std::string::npos) << msg;
  }
}

TEST(GptTest, SgdStepsReduceTheLossOnAFixedBatch) {
  torch::manual_seed(3);
  auto model = make_gpt(small_options());
  at::Tensor sequence = at::randint(50, {4, 17}, at::kLong);
  at::Tensor inputs = sequence.narrow(1, 0, 16);
  at::Tensor targets = sequence.narrow(1, 1, 16);
  auto losses = testing::sgd_losses(*model, inputs, targets, 20, 0.5);
  EXPECT_NEAR(losses.front(), std::log(50.0), 0.1);  // uniform at init
  EXPECT_LT(losses.back(), 0.9 * losses.front())
      << "loss " << losses.front() << " -> " << losses.back();
}

TEST(GptTest, InitializationIsDeterministicGivenTheSeed) {
  torch::manual_seed(7);
  auto a = make_gpt(small_options());
  torch::manual_seed(7);
  auto b = make_gpt(small_options());
  EXPECT_TRUE(testing::bitwise_equal_state(*a, *b));
  auto c = make_gpt(small_options());
  EXPECT_FALSE(testing::bitwise_equal_state(*a, *c));
}

}  // namespace
}  // namespace dtrain::models
