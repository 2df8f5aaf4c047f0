// The `gpt` reference model: a GPT-2 style decoder-only transformer LM (MODEL.GPT.*).
//
//   auto model = dtrain::models::make_gpt({/*n_layer=*/2, /*n_head=*/2, /*n_embd=*/64,
//                                          /*vocab_size=*/256, /*context_length=*/64});
//   at::Tensor logits = model->forward(tokens);  // int64 [B, T] -> [B, T, 256]
//
// Not thread-safe, like any torch::nn::Module: one thread at a time uses a model (the
// training thread). make_gpt() shares no state between calls.
#pragma once

#include <cstdint>
#include <memory>

#include "models/model.h"
#include "runtime/base/config.h"

namespace dtrain::models {

// Shape of a gpt; each field mirrors the MODEL.GPT.* key of the same name.
struct GptOptions {
  int64_t n_layer = 2;           // transformer blocks
  int64_t n_head = 2;            // attention heads; must divide n_embd
  int64_t n_embd = 64;           // model width
  int64_t vocab_size = 256;      // token ids are in [0, vocab_size)
  int64_t context_length = 64;   // longest sequence (size of the positional embedding)
  double dropout = 0.0;          // on embeddings, attention weights and residual branches

  // Reads MODEL.GPT.N_LAYER, .N_HEAD, .N_EMBD, .VOCAB_SIZE, .CONTEXT_LENGTH, .DROPOUT.
  static GptOptions from_config(const Config& cfg);
};

// Builds a pre-LayerNorm decoder-only transformer (GPT-2 layout, as in nanoGPT):
// token + learned positional embedding, N_LAYER blocks of
//   x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))
// (causal multi-head self-attention with a fused qkv Linear and 1/sqrt(head_dim)
// scaling; MLP of width 4 * N_EMBD with exact GELU), a final LayerNorm and an untied
// bias-free lm head. Untied on purpose: the data-parallel engine reduces each
// registered parameter once, so one tensor must not be registered under two names.
//
// Parameter names follow nanoGPT, so its state dicts map one to one:
// "transformer.wte.weight", "transformer.wpe.weight",
// "transformer.h.{i}.ln_1.*", "transformer.h.{i}.attn.c_attn.*",
// "transformer.h.{i}.attn.c_proj.*", "transformer.h.{i}.ln_2.*",
// "transformer.h.{i}.mlp.c_fc.*", "transformer.h.{i}.mlp.c_proj.*",
// "transformer.ln_f.*", "lm_head.weight". There are no buffers (the causal mask is
// built in forward()). Initialization as GPT-2: weights normal(0, 0.02), the residual
// projections (c_proj) normal(0, 0.02 / sqrt(2 * N_LAYER)), biases 0, LayerNorm 1/0;
// all drawn from the global generator.
//
// Throws ConfigError naming MODEL.GPT.N_HEAD when it does not divide N_EMBD, naming
// MODEL.GPT.DROPOUT outside [0, 1), or the MODEL.GPT.* key of a non-positive size.
// forward() takes int64 tokens [B, T] with 1 <= T <= CONTEXT_LENGTH and returns logits
// [B, T, VOCAB_SIZE]; other inputs throw dtrain::Error.
std::shared_ptr<Model> make_gpt(const GptOptions& options);

}  // namespace dtrain::models
