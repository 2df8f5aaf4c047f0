// The `gpt` reference model: a pre-LayerNorm decoder-only transformer language model.
#include "models/gpt.h"

#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include "runtime/base/error.h"

namespace dtrain::models {
namespace {

torch::nn::LayerNorm layer_norm(int64_t n_embd) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({n_embd}));
}

// Causal multi-head self-attention with a fused qkv projection. Not thread-safe.
class CausalSelfAttentionImpl : public torch::nn::Module {
 public:
  explicit CausalSelfAttentionImpl(const GptOptions& o)
      : n_head_(o.n_head),
        dropout_(o.dropout),
        c_attn_(register_module("c_attn", torch::nn::Linear(o.n_embd, 3 * o.n_embd))),
        c_proj_(register_module("c_proj", torch::nn::Linear(o.n_embd, o.n_embd))) {}

  // x [B, T, C] -> [B, T, C]; position t attends to positions <= t only.
  at::Tensor forward(const at::Tensor& x) {
    const int64_t b = x.size(0), t = x.size(1), c = x.size(2), hd = c / n_head_;
    // [B, T, 3C] -> three [B, H, T, hd]
    auto qkv = c_attn_->forward(x).view({b, t, 3, n_head_, hd}).permute({2, 0, 3, 1, 4});
    at::Tensor q = qkv[0], k = qkv[1], v = qkv[2];
    at::Tensor att = at::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(hd)));
    at::Tensor future = at::ones({t, t}, x.options().dtype(at::kBool)).triu(1);
    att = at::softmax(att.masked_fill(future, -std::numeric_limits<double>::infinity()), -1);
    att = at::dropout(att, dropout_, is_training());
    at::Tensor y = at::matmul(att, v).transpose(1, 2).reshape({b, t, c});
    return at::dropout(c_proj_->forward(y), dropout_, is_training());
  }

 private:
  int64_t n_head_;
  double dropout_;
  torch::nn::Linear c_attn_;
  torch::nn::Linear c_proj_;
};
TORCH_MODULE(CausalSelfAttention);

// Position-wise feed-forward: Linear(C, 4C) -> GELU -> Linear(4C, C). Not thread-safe.
class FeedForwardImpl : public torch::nn::Module {
 public:
  explicit FeedForwardImpl(const GptOptions& o)
      : dropout_(o.dropout),
        c_fc_(register_module("c_fc", torch::nn::Linear(o.n_embd, 4 * o.n_embd))),
        c_proj_(register_module("c_proj", torch::nn::Linear(4 * o.n_embd, o.n_embd))) {}

  at::Tensor forward(const at::Tensor& x) {
    return at::dropout(c_proj_->forward(at::gelu(c_fc_->forward(x))), dropout_,
                       is_training());
  }

 private:
  double dropout_;
  torch::nn::Linear c_fc_;
  torch::nn::Linear c_proj_;
};
TORCH_MODULE(FeedForward);

// One pre-LayerNorm transformer block. Not thread-safe.
class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const GptOptions& o)
      : ln_1_(register_module("ln_1", layer_norm(o.n_embd))),
        attn_(register_module("attn", CausalSelfAttention(o))),
        ln_2_(register_module("ln_2", layer_norm(o.n_embd))),
        mlp_(register_module("mlp", FeedForward(o))) {}

  at::Tensor forward(at::Tensor x) {
    x = x + attn_->forward(ln_1_->forward(x));
    return x + mlp_->forward(ln_2_->forward(x));
  }

 private:
  torch::nn::LayerNorm ln_1_;
  CausalSelfAttention attn_;
  torch::nn::LayerNorm ln_2_;
  FeedForward mlp_;
};
TORCH_MODULE(Block);

// The trunk, a module of its own so that parameter names match nanoGPT's
// "transformer.*". Not thread-safe.
class TransformerImpl : public torch::nn::Module {
 public:
  explicit TransformerImpl(const GptOptions& o)
      : dropout_(o.dropout),
        wte_(register_module("wte", torch::nn::Embedding(o.vocab_size, o.n_embd))),
        wpe_(register_module("wpe", torch::nn::Embedding(o.context_length, o.n_embd))),
        h_(register_module("h", torch::nn::ModuleList())),
        ln_f_(register_module("ln_f", layer_norm(o.n_embd))) {
    for (int64_t i = 0; i < o.n_layer; ++i) h_->push_back(Block(o));
  }

  // tokens [B, T] -> hidden states [B, T, C] after the final LayerNorm.
  at::Tensor forward(const at::Tensor& tokens) {
    at::Tensor positions = at::arange(tokens.size(1), tokens.options());
    at::Tensor x = wte_->forward(tokens) + wpe_->forward(positions);
    x = at::dropout(x, dropout_, is_training());
    for (const auto& block : *h_) x = block->as<BlockImpl>()->forward(x);
    return ln_f_->forward(x);
  }

 private:
  double dropout_;
  torch::nn::Embedding wte_;
  torch::nn::Embedding wpe_;
  torch::nn::ModuleList h_;
  torch::nn::LayerNorm ln_f_;
};
TORCH_MODULE(Transformer);

void validate(const GptOptions& o) {
  const std::pair<const char*, int64_t> sizes[] = {
      {"MODEL.GPT.N_LAYER", o.n_layer},       {"MODEL.GPT.N_HEAD", o.n_head},
      {"MODEL.GPT.N_EMBD", o.n_embd},         {"MODEL.GPT.VOCAB_SIZE", o.vocab_size},
      {"MODEL.GPT.CONTEXT_LENGTH", o.context_length}};
  for (const auto& [key, value] : sizes) {
    DTRAIN_CHECK_T(ConfigError, value > 0, "{} must be positive, got {}", key, value);
  }
  DTRAIN_CHECK_T(ConfigError, o.n_embd % o.n_head == 0,
                 "MODEL.GPT.N_HEAD={} must divide MODEL.GPT.N_EMBD={}", o.n_head, o.n_embd);
  DTRAIN_CHECK_T(ConfigError, o.dropout >= 0.0 && o.dropout < 1.0,
                 "MODEL.GPT.DROPOUT must be in [0, 1), got {}", o.dropout);
}

// Not thread-safe (as any nn::Module).
class Gpt : public Model {
 public:
  explicit Gpt(const GptOptions& o) : context_length_(o.context_length) {
    validate(o);
    transformer_ = register_module("transformer", Transformer(o));
    lm_head_ = register_module(
        "lm_head",
        torch::nn::Linear(torch::nn::LinearOptions(o.n_embd, o.vocab_size).bias(false)));
    init_weights(o);
  }

  at::Tensor forward(const at::Tensor& inputs) override {
    DTRAIN_CHECK(inputs.dim() == 2 && inputs.scalar_type() == at::kLong,
                 "gpt: expected int64 token ids [B, T], got {} of shape [{}]",
                 std::string(c10::toString(inputs.scalar_type())),
                 fmt::join(inputs.sizes(), ", "));
    DTRAIN_CHECK(inputs.size(1) >= 1 && inputs.size(1) <= context_length_,
                 "gpt: sequence length T={} must be in [1, MODEL.GPT.CONTEXT_LENGTH={}]",
                 inputs.size(1), context_length_);
    return lm_head_->forward(transformer_->forward(inputs));
  }

  Task task() const override { return Task::kLanguageModel; }

 private:
  // GPT-2 / nanoGPT initialization.
  void init_weights(const GptOptions& o) {
    for (auto& module : modules(/*include_self=*/false)) {
      if (auto* linear = module->as<torch::nn::Linear>()) {
        torch::nn::init::normal_(linear->weight, 0.0, 0.02);
        if (linear->bias.defined()) torch::nn::init::zeros_(linear->bias);
      } else if (auto* embedding = module->as<torch::nn::Embedding>()) {
        torch::nn::init::normal_(embedding->weight, 0.0, 0.02);
      }
    }
    const double proj_std = 0.02 / std::sqrt(2.0 * o.n_layer);
    for (auto& param : named_parameters()) {
      const std::string& name = param.key();
      static const std::string kSuffix = "c_proj.weight";
      if (name.size() >= kSuffix.size() &&
          name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0) {
        torch::nn::init::normal_(param.value(), 0.0, proj_std);
      }
    }
  }

  int64_t context_length_;
  Transformer transformer_{nullptr};
  torch::nn::Linear lm_head_{nullptr};
};

}  // namespace

GptOptions GptOptions::from_config(const Config& cfg) {
  GptOptions options;
  options.n_layer = cfg.get_int("MODEL.GPT.N_LAYER");
  options.n_head = cfg.get_int("MODEL.GPT.N_HEAD");
  options.n_embd = cfg.get_int("MODEL.GPT.N_EMBD");
  options.vocab_size = cfg.get_int("MODEL.GPT.VOCAB_SIZE");
  options.context_length = cfg.get_int("MODEL.GPT.CONTEXT_LENGTH");
  options.dropout = cfg.get_float("MODEL.GPT.DROPOUT");
  return options;
}

std::shared_ptr<Model> make_gpt(const GptOptions& options) {
  return std::make_shared<Gpt>(options);
}

}  // namespace dtrain::models
