// In-memory classification and token datasets (see in_memory.h).
#include "runtime/data/in_memory.h"

#include <cmath>
#include <cstring>

#include <ATen/ops/empty.h>
#include <fmt/format.h>

#include "runtime/base/error.h"

namespace dtrain::data {

std::array<float, 256> byte_values(const ByteNormalization& norm, const std::string& what) {
  DTRAIN_CHECK(std::isfinite(norm.mean) && std::isfinite(norm.std) && norm.std > 0,
               "{}: normalization std must be finite and > 0", what);
  std::array<float, 256> out;
  for (int v = 0; v < 256; ++v) out[v] = (v * (1.0f / 255.0f) - norm.mean) / norm.std;
  return out;
}

// ---- ClassificationDataset ---------------------------------------------------------

ClassificationDataset::ClassificationDataset(at::Tensor inputs, at::Tensor labels,
                                             int64_t num_classes, std::string description,
                                             ByteNormalization norm)
    : inputs_(std::move(inputs)),
      labels_(std::move(labels)),
      num_classes_(num_classes),
      description_(std::move(description)) {
  DTRAIN_CHECK(inputs_.dim() >= 1, "{}: inputs need a sample axis, got a scalar", description_);
  DTRAIN_CHECK(inputs_.scalar_type() == at::kFloat || inputs_.scalar_type() == at::kByte,
               "{}: inputs must be float32 or uint8, got {}", description_,
               c10::toString(inputs_.scalar_type()));
  DTRAIN_CHECK(labels_.dim() == 1 && labels_.scalar_type() == at::kLong,
               "{}: labels must be a 1-D int64 tensor", description_);
  DTRAIN_CHECK(labels_.size(0) == inputs_.size(0), "{}: {} inputs but {} labels", description_,
               inputs_.size(0), labels_.size(0));
  DTRAIN_CHECK(inputs_.device().is_cpu() && inputs_.is_contiguous() && labels_.is_contiguous(),
               "{}: tensors must be contiguous CPU tensors", description_);
  DTRAIN_CHECK(num_classes_ >= 1, "{}: num_classes must be >= 1, got {}", description_,
               num_classes_);
  byte_value_ = byte_values(norm, description_);
  size_ = inputs_.size(0);
}

std::vector<int64_t> ClassificationDataset::sample_shape() const {
  return std::vector<int64_t>(inputs_.sizes().begin() + 1, inputs_.sizes().end());
}

float ClassificationDataset::padding_value() const {
  return inputs_.scalar_type() == at::kByte ? byte_value_[0] : 0.0f;
}

Batch ClassificationDataset::get_batch(const std::vector<int64_t>& indices) const {
  const int64_t batch = static_cast<int64_t>(indices.size());
  std::vector<int64_t> shape = sample_shape();
  int64_t row = 1;
  for (int64_t d : shape) row *= d;
  shape.insert(shape.begin(), batch);

  Batch out;
  out.inputs = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
  out.targets = at::empty({batch}, at::TensorOptions().dtype(at::kLong));
  float* dst = out.inputs.data_ptr<float>();
  int64_t* targets = out.targets.data_ptr<int64_t>();
  const int64_t* labels = labels_.data_ptr<int64_t>();
  const bool bytes = inputs_.scalar_type() == at::kByte;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t i = indices[b];
    check_sample_index(i, size_, description_);
    targets[b] = labels[i];
    if (bytes) {
      const uint8_t* src = inputs_.data_ptr<uint8_t>() + i * row;
      for (int64_t k = 0; k < row; ++k) dst[b * row + k] = byte_value_[src[k]];
    } else if (row > 0) {
      std::memcpy(dst + b * row, inputs_.data_ptr<float>() + i * row, row * sizeof(float));
    }
  }
  return out;
}

std::string ClassificationDataset::describe() const {
  return fmt::format(
      "{}: {} samples of [{}] {}, {} classes", description_, size_, fmt::join(sample_shape(), ", "),
      inputs_.scalar_type() == at::kByte ? "uint8->float32" : "float32", num_classes_);
}

// ---- TokenDataset ------------------------------------------------------------------

TokenDataset::TokenDataset(at::Tensor stream, int64_t context_length, int64_t vocab_size,
                           std::string description)
    : stream_(std::move(stream)),
      context_length_(context_length),
      vocab_size_(vocab_size),
      description_(std::move(description)) {
  DTRAIN_CHECK(context_length_ >= 1, "{}: context length must be >= 1, got {}", description_,
               context_length_);
  DTRAIN_CHECK(stream_.dim() == 1 && stream_.scalar_type() == at::kLong &&
                   stream_.device().is_cpu() && stream_.is_contiguous(),
               "{}: the token stream must be a contiguous 1-D int64 CPU tensor", description_);
  DTRAIN_CHECK(stream_.size(0) >= context_length_ + 1,
               "{}: {} tokens, fewer than one sequence of context length + 1 = {}", description_,
               stream_.size(0), context_length_ + 1);
  size_ = (stream_.size(0) - 1) / context_length_;
}

Batch TokenDataset::get_batch(const std::vector<int64_t>& indices) const {
  const int64_t batch = static_cast<int64_t>(indices.size());
  const int64_t t = context_length_;
  Batch out;
  out.inputs = at::empty({batch, t}, at::TensorOptions().dtype(at::kLong));
  out.targets = at::empty({batch, t}, at::TensorOptions().dtype(at::kLong));
  const int64_t* src = stream_.data_ptr<int64_t>();
  int64_t* in = out.inputs.data_ptr<int64_t>();
  int64_t* tg = out.targets.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t i = indices[b];
    check_sample_index(i, size_, description_);
    std::memcpy(in + b * t, src + i * t, t * sizeof(int64_t));
    std::memcpy(tg + b * t, src + i * t + 1, t * sizeof(int64_t));
  }
  return out;
}

std::string TokenDataset::describe() const {
  return fmt::format("{}: {} sequences of {} tokens (vocab {}) from a stream of {}", description_,
                     size_, context_length_, vocab_size_, stream_.size(0));
}

}  // namespace dtrain::data
