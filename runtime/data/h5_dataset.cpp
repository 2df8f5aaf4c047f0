// Loading HDF5 dataset files, layouts A (images + labels) and B (tokens), into memory or
// lazily; see h5_dataset.h.
#include "runtime/data/h5_dataset.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>

#include <fmt/format.h>

#include "runtime/base/error.h"
#include "runtime/data/h5_lazy.h"
#include "runtime/data/in_memory.h"
#include "runtime/h5/h5.h"

namespace dtrain::data {
namespace {

std::string dims_str(const std::vector<int64_t>& dims) {
  return fmt::format("({})", fmt::join(dims, ", "));
}

// The file's root attribute `name` as an int, when present.
std::optional<int64_t> optional_int_attr(const h5::File& f, const std::string& name) {
  if (!f.has_attr(name)) return std::nullopt;
  return f.get_int_attr(name);
}

// Opens 1-D integer dataset `name`, checking its rank and type.
h5::Dataset open_int_vector(const h5::File& f, const std::string& name) {
  h5::Dataset d = f.open_dataset(name);
  const std::vector<int64_t> dims = d.shape();
  DTRAIN_CHECK_T(ConfigError, dims.size() == 1, "'{}': '{}' must be 1-D, got shape {}",
                 f.file_name(), name, dims_str(dims));
  DTRAIN_CHECK_T(ConfigError, dims[0] >= 0, "'{}': '{}' has an extent beyond 2^63", f.file_name(),
                 name);
  h5::DataType type = d.type();
  DTRAIN_CHECK_T(ConfigError, type.type_class() == H5T_INTEGER,
                 "'{}': '{}' must hold integers, got {}", f.file_name(), name, type.describe());
  return d;
}

// "'f.h5': token 256 at index 256 of 'tokens' is outside [0, 256) (MODEL.GPT.VOCAB_SIZE)"
// unless every value of `values` (int64; the first at `offset` in the dataset) lies in
// [0, limit) (limit <= 0: no upper bound).
void check_range(const at::Tensor& values, int64_t offset, int64_t limit, const std::string& file,
                 const std::string& dataset, const std::string& what,
                 const std::string& limit_name) {
  const int64_t* v = values.data_ptr<int64_t>();
  const int64_t n = values.numel();
  for (int64_t i = 0; i < n; ++i) {
    DTRAIN_CHECK_T(ConfigError, v[i] >= 0 && (limit <= 0 || v[i] < limit),
                   "'{}': {} {} at index {} of '{}' is outside [0, {}) ({})", file, what, v[i],
                   offset + i, dataset,
                   limit <= 0 ? std::string("inf") : std::to_string(limit), limit_name);
  }
}

int64_t max_value(const at::Tensor& values) {
  const int64_t* v = values.data_ptr<int64_t>();
  return values.numel() == 0 ? -1 : *std::max_element(v, v + values.numel());
}

std::string description_of(const h5::File& f) {
  if (!f.has_attr("description")) return f.file_name();
  return fmt::format("{} ({})", f.file_name(), f.get_string_attr("description"));
}

// `rows` rows of `row_bytes` bytes each, saturating at int64's maximum.
int64_t total_bytes(int64_t rows, int64_t row_bytes) {
  if (row_bytes > 0 && rows > std::numeric_limits<int64_t>::max() / row_bytes) {
    return std::numeric_limits<int64_t>::max();
  }
  return rows * row_bytes;
}

// The uint8 normalization of the root attributes mean (default 0) and std (default 1).
ByteNormalization normalization_of(const h5::File& f, bool bytes, const std::string& stored) {
  const bool has_mean = f.has_attr("mean"), has_std = f.has_attr("std");
  ByteNormalization norm;
  if (!has_mean && !has_std) return norm;
  DTRAIN_CHECK_T(ConfigError, bytes,
                 "'{}': attributes mean/std normalize uint8 images, but 'images' holds {} "
                 "(normalize float data before writing it, or drop the attributes)",
                 f.file_name(), stored);
  const double mean = has_mean ? f.get_float_attr("mean") : 0.0;
  const double std = has_std ? f.get_float_attr("std") : 1.0;
  const float mean_f = static_cast<float>(mean), std_f = static_cast<float>(std);
  DTRAIN_CHECK_T(ConfigError, std::isfinite(mean_f) && std::isfinite(std_f) && std_f > 0,
                 "'{}': attributes mean = {} and std = {} must be finite float32 values, std > 0",
                 f.file_name(), mean, std);
  norm.mean = mean_f;
  norm.std = std_f;
  return norm;
}

std::shared_ptr<Dataset> load_classification(h5::File& f, const H5DatasetOptions& o) {
  const std::string file = f.file_name();
  h5::Dataset images = f.open_dataset("images");
  const std::vector<int64_t> dims = images.shape();
  DTRAIN_CHECK_T(ConfigError, dims.size() >= 2,
                 "'{}': 'images' must have shape (N, ...) with at least 2 axes, got {}", file,
                 dims_str(dims));
  h5::DataType type = images.type();
  const std::optional<at::ScalarType> stored = h5::scalar_type_for(type);
  const bool is_float = stored == at::kFloat || stored == at::kHalf || stored == at::kDouble;
  DTRAIN_CHECK_T(ConfigError, is_float || stored == at::kByte,
                 "'{}': 'images' holds {}; expected float32 or uint8 (float16/float64 are "
                 "converted to float32)",
                 file, type.describe());
  const at::ScalarType as = is_float ? at::kFloat : at::kByte;
  const int64_t row_bytes =
      checked_row_bytes(dims, static_cast<int64_t>(c10::elementSize(as)), file, "images");
  const ByteNormalization norm = normalization_of(f, !is_float, type.describe());

  at::Tensor labels;
  {
    h5::Dataset labels_ds = open_int_vector(f, "labels");  // closed at the end of the block
    const int64_t num_labels = labels_ds.shape()[0];
    DTRAIN_CHECK_T(ConfigError, num_labels == dims[0],
                   "'{}': 'images' has {} samples but 'labels' has {}", file, dims[0], num_labels);
    DTRAIN_CHECK_T(ConfigError, num_labels <= kMaxLabels,
                   "'{}': 'labels' has {} entries, more than the {} a dataset file may hold", file,
                   num_labels, kMaxLabels);
    labels = labels_ds.read(at::kLong);
  }

  const std::optional<int64_t> attr = optional_int_attr(f, "num_classes");
  if (attr) {
    DTRAIN_CHECK_T(ConfigError, *attr >= 1, "'{}': attribute num_classes must be >= 1, got {}",
                   file, *attr);
    check_range(labels, 0, *attr, file, "labels", "label", "the file's num_classes attribute");
  }
  check_range(labels, 0, o.num_classes, file, "labels", "label", o.classes_key);
  const int64_t classes = o.num_classes > 0 ? o.num_classes
                          : attr            ? *attr
                                            : std::max<int64_t>(1, max_value(labels) + 1);
  const std::string description = description_of(f);
  if (total_bytes(dims[0], row_bytes) <= o.in_memory_max_bytes) {
    at::Tensor inputs = images.read(as);
    return std::make_shared<ClassificationDataset>(std::move(inputs), std::move(labels), classes,
                                                   description, norm);
  }
  H5RowsOptions rows;
  rows.cache_bytes = o.cache_bytes;
  auto reader = std::make_unique<H5RowReader>(std::move(f), std::move(images), as, rows);
  return std::make_shared<H5ClassificationDataset>(std::move(reader), std::move(labels), classes,
                                                   description, norm);
}

// The largest token of `tokens` (read in blocks of 1 Mi tokens), checking that none is
// negative: a lazily read file's vocabulary when neither the model nor the file gives one.
int64_t scan_max_token(const h5::Dataset& tokens, int64_t length, const std::string& file) {
  constexpr int64_t kScanTokens = int64_t{1} << 20;
  int64_t max = -1;
  for (int64_t start = 0; start < length; start += kScanTokens) {
    at::Tensor block = tokens.read_rows(start, std::min(kScanTokens, length - start), at::kLong);
    check_range(block, start, 0, file, "tokens", "token", "no vocabulary size given");
    max = std::max(max, max_value(block));
  }
  return max;
}

std::shared_ptr<Dataset> load_tokens(h5::File& f, const H5DatasetOptions& o) {
  const std::string file = f.file_name();
  h5::Dataset tokens = open_int_vector(f, "tokens");
  const int64_t length = tokens.shape()[0];
  DTRAIN_CHECK_T(ConfigError, length >= o.context_length + 1,
                 "'{}': 'tokens' holds {} tokens, fewer than one sequence of "
                 "CONTEXT_LENGTH + 1 = {}",
                 file, length, o.context_length + 1);
  const std::optional<int64_t> attr = optional_int_attr(f, "vocab_size");
  if (attr) {
    DTRAIN_CHECK_T(ConfigError, *attr >= 1, "'{}': attribute vocab_size must be >= 1, got {}", file,
                   *attr);
  }
  // One check for both paths: at load for a stream read whole, as each block is read
  // (thrown by get_batch, with the same message) for a lazy one.
  const int64_t attr_limit = attr ? *attr : 0;
  const int64_t model_limit = o.vocab_size;
  const std::string key = o.vocab_key;
  auto validate = [file, attr_limit, model_limit, key](int64_t first, const at::Tensor& block) {
    if (attr_limit > 0) {
      check_range(block, first, attr_limit, file, "tokens", "token",
                  "the file's vocab_size attribute");
    }
    check_range(block, first, model_limit, file, "tokens", "token", key);
  };
  // The model's vocabulary, else the file's, else the largest token + 1 (`max_token` is
  // only called then).
  auto vocab_of = [&](const std::function<int64_t()>& max_token) {
    return o.vocab_size > 0 ? o.vocab_size : attr ? *attr : std::max<int64_t>(1, max_token() + 1);
  };
  const std::string description = description_of(f);
  if (total_bytes(length, sizeof(int64_t)) <= o.in_memory_max_bytes) {
    at::Tensor stream = tokens.read(at::kLong);
    validate(0, stream);
    const int64_t vocab = vocab_of([&] { return max_value(stream); });
    return std::make_shared<TokenDataset>(std::move(stream), o.context_length, vocab, description);
  }
  const int64_t vocab = vocab_of([&] { return scan_max_token(tokens, length, file); });
  H5RowsOptions rows;
  rows.cache_bytes = o.cache_bytes;
  auto reader =
      std::make_unique<H5RowReader>(std::move(f), std::move(tokens), at::kLong, rows, validate);
  return std::make_shared<H5TokenDataset>(std::move(reader), o.context_length, vocab, description);
}

}  // namespace

std::shared_ptr<Dataset> load_h5_dataset(const std::string& path, const H5DatasetOptions& options) {
  DTRAIN_CHECK_T(ConfigError, options.context_length >= 1,
                 "loading '{}': context length must be >= 1, got {}", path, options.context_length);
  DTRAIN_CHECK_T(ConfigError, options.in_memory_max_bytes >= 0 && options.cache_bytes >= 0,
                 "loading '{}': in-memory limit and cache size must be >= 0, got {} and {}", path,
                 options.in_memory_max_bytes, options.cache_bytes);
  try {
    h5::File f = h5::File::open(path);
    const bool images = f.kind("images") == h5::ObjectKind::kDataset;
    const bool labels = f.kind("labels") == h5::ObjectKind::kDataset;
    const bool tokens = f.kind("tokens") == h5::ObjectKind::kDataset;
    DTRAIN_CHECK_T(ConfigError, !(tokens && (images || labels)),
                   "'{}' has both 'tokens' and 'images'/'labels'; a dataset file holds one "
                   "layout (see docs/DATASETS.md)",
                   path);
    if (images && labels) return load_classification(f, options);
    if (tokens) return load_tokens(f, options);
    DTRAIN_CHECK_T(ConfigError, !images, "'{}' has 'images' but no 'labels' dataset", path);
    DTRAIN_CHECK_T(ConfigError, !labels, "'{}' has 'labels' but no 'images' dataset", path);
    const std::vector<std::string> names = f.list();
    throw ConfigError(fmt::format(
        "'{}' has neither 'images'+'labels' nor 'tokens' (it holds: {}; see docs/DATASETS.md)",
        path, names.empty() ? std::string("nothing") : fmt::format("{}", fmt::join(names, ", "))));
  } catch (const ConfigError&) {
    throw;
  } catch (const Error& e) {
    throw ConfigError(fmt::format("loading dataset file '{}': {}", path, e.what()));
  }
}

}  // namespace dtrain::data
