// Lazy HDF5 datasets: samples read on demand through H5RowReader (see h5_lazy.h).
#include "runtime/data/h5_lazy.h"

#include <ATen/ops/empty.h>
#include <fmt/format.h>

#include "runtime/base/error.h"

namespace dtrain::data {
namespace {

std::string mib(int64_t bytes) {
  return bytes % (int64_t{1} << 20) == 0 ? fmt::format("{} MiB", bytes >> 20)
                                         : fmt::format("{} KiB", bytes >> 10);
}

}  // namespace

// ---- H5ClassificationDataset --------------------------------------------------------

H5ClassificationDataset::H5ClassificationDataset(std::unique_ptr<H5RowReader> images,
                                                 at::Tensor labels, int64_t num_classes,
                                                 std::string description,
                                                 ByteNormalization norm)
    : images_(std::move(images)),
      labels_(std::move(labels)),
      num_classes_(num_classes),
      description_(std::move(description)) {
  DTRAIN_CHECK(images_ != nullptr, "{}: no image reader", description_);
  DTRAIN_CHECK(images_->dtype() == at::kFloat || images_->dtype() == at::kByte,
               "{}: inputs must be read as float32 or uint8, got {}", description_,
               c10::toString(images_->dtype()));
  DTRAIN_CHECK(labels_.dim() == 1 && labels_.scalar_type() == at::kLong &&
                   labels_.device().is_cpu() && labels_.is_contiguous(),
               "{}: labels must be a contiguous 1-D int64 CPU tensor", description_);
  DTRAIN_CHECK(labels_.size(0) == images_->num_rows(), "{}: {} inputs but {} labels",
               description_, images_->num_rows(), labels_.size(0));
  DTRAIN_CHECK(num_classes_ >= 1, "{}: num_classes must be >= 1, got {}", description_,
               num_classes_);
  byte_value_ = byte_values(norm, description_);
}

Batch H5ClassificationDataset::get_batch(const std::vector<int64_t>& indices) const {
  const int64_t batch = static_cast<int64_t>(indices.size());
  const int64_t n = size();
  for (int64_t i : indices) check_sample_index(i, n, description_);
  std::vector<int64_t> shape = images_->row_shape();
  shape.insert(shape.begin(), batch);
  const int64_t row = images_->row_elements();

  Batch out;
  out.inputs = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
  out.targets = at::empty({batch}, at::TensorOptions().dtype(at::kLong));
  const int64_t* labels = labels_.data_ptr<int64_t>();
  int64_t* targets = out.targets.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) targets[b] = labels[indices[b]];
  if (images_->dtype() == at::kFloat) {
    images_->gather(indices, 1, out.inputs.data_ptr<float>());
    return out;
  }
  // uint8: gather the bytes, then decode them outside every lock.
  std::vector<uint8_t> bytes(static_cast<size_t>(batch * row));
  images_->gather(indices, 1, bytes.data());
  float* dst = out.inputs.data_ptr<float>();
  for (size_t k = 0; k < bytes.size(); ++k) dst[k] = byte_value_[bytes[k]];
  return out;
}

std::vector<int64_t> H5ClassificationDataset::sample_shape() const {
  return images_->row_shape();
}

float H5ClassificationDataset::padding_value() const {
  return images_->dtype() == at::kByte ? byte_value_[0] : 0.0f;
}

std::string H5ClassificationDataset::describe() const {
  return fmt::format(
      "{}: {} samples of [{}] {}, {} classes, read lazily (blocks of {} samples, cache {})",
      description_, size(), fmt::join(images_->row_shape(), ", "),
      images_->dtype() == at::kByte ? "uint8->float32" : "float32", num_classes_,
      images_->block_rows(), mib(images_->cache().capacity_bytes()));
}

// ---- H5TokenDataset -----------------------------------------------------------------

H5TokenDataset::H5TokenDataset(std::unique_ptr<H5RowReader> tokens, int64_t context_length,
                               int64_t vocab_size, std::string description)
    : tokens_(std::move(tokens)),
      context_length_(context_length),
      vocab_size_(vocab_size),
      description_(std::move(description)) {
  DTRAIN_CHECK(tokens_ != nullptr, "{}: no token reader", description_);
  DTRAIN_CHECK(context_length_ >= 1, "{}: context length must be >= 1, got {}", description_,
               context_length_);
  DTRAIN_CHECK(tokens_->dtype() == at::kLong && tokens_->row_shape().empty(),
               "{}: the token stream must be read as 1-D int64", description_);
  DTRAIN_CHECK(tokens_->num_rows() >= context_length_ + 1,
               "{}: {} tokens, fewer than one sequence of context length + 1 = {}", description_,
               tokens_->num_rows(), context_length_ + 1);
  size_ = (tokens_->num_rows() - 1) / context_length_;
}

Batch H5TokenDataset::get_batch(const std::vector<int64_t>& indices) const {
  const int64_t batch = static_cast<int64_t>(indices.size());
  const int64_t t = context_length_;
  std::vector<int64_t> starts(indices.size());
  for (size_t b = 0; b < indices.size(); ++b) {
    check_sample_index(indices[b], size_, description_);
    starts[b] = indices[b] * t;
  }
  at::Tensor seq = at::empty({batch, t + 1}, at::TensorOptions().dtype(at::kLong));
  tokens_->gather(starts, t + 1, seq.data_ptr<int64_t>());
  Batch out;
  out.inputs = seq.narrow(1, 0, t).contiguous();
  out.targets = seq.narrow(1, 1, t).contiguous();
  return out;
}

std::string H5TokenDataset::describe() const {
  return fmt::format(
      "{}: {} sequences of {} tokens (vocab {}) from a stream of {}, read lazily (blocks of {} "
      "tokens, cache {})",
      description_, size_, context_length_, vocab_size_, tokens_->num_rows(),
      tokens_->block_rows(), mib(tokens_->cache().capacity_bytes()));
}

}  // namespace dtrain::data
