// Loading HDF5 dataset files, layouts A (images + labels) and B (tokens); see h5_dataset.h.
#include "runtime/data/h5_dataset.h"

#include <algorithm>
#include <optional>

#include <fmt/format.h>

#include "checkpoint/h5/h5.h"
#include "runtime/base/error.h"
#include "runtime/data/in_memory.h"

namespace dtrain::data {
namespace {

namespace h5 = checkpoint::h5;

std::string dims_str(const std::vector<int64_t>& dims) {
  return fmt::format("({})", fmt::join(dims, ", "));
}

// The file's root attribute `name` as an int, when present.
std::optional<int64_t> optional_int_attr(const h5::File& f, const std::string& name) {
  if (!f.has_attr(name)) return std::nullopt;
  return f.get_int_attr(name);
}

// Reads 1-D integer dataset `name` as int64, checking its rank and type.
at::Tensor read_int_vector(const h5::File& f, const std::string& name) {
  h5::Dataset d = f.open_dataset(name);
  const std::vector<int64_t> dims = d.shape();
  DTRAIN_CHECK_T(ConfigError, dims.size() == 1, "'{}': '{}' must be 1-D, got shape {}",
                 f.file_name(), name, dims_str(dims));
  h5::DataType type = d.type();
  DTRAIN_CHECK_T(ConfigError, type.type_class() == H5T_INTEGER,
                 "'{}': '{}' must hold integers, got {}", f.file_name(), name, type.describe());
  return d.read(at::kLong);
}

// Checks that every value of `values` (int64) lies in [0, limit); `limit_name` says
// where the limit comes from.
void check_range(const at::Tensor& values, int64_t limit, const std::string& file,
                 const std::string& dataset, const std::string& what,
                 const std::string& limit_name) {
  const int64_t* v = values.data_ptr<int64_t>();
  const int64_t n = values.numel();
  for (int64_t i = 0; i < n; ++i) {
    DTRAIN_CHECK_T(ConfigError, v[i] >= 0 && (limit <= 0 || v[i] < limit),
                   "'{}': {} {} at index {} of '{}' is outside [0, {}) ({})", file, what, v[i], i,
                   dataset, limit <= 0 ? std::string("inf") : std::to_string(limit), limit_name);
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

std::shared_ptr<Dataset> load_classification(const h5::File& f, const H5DatasetOptions& o) {
  const std::string& file = f.file_name();
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
  at::Tensor labels = read_int_vector(f, "labels");
  DTRAIN_CHECK_T(ConfigError, labels.size(0) == dims[0],
                 "'{}': 'images' has {} samples but 'labels' has {}", file, dims[0],
                 labels.size(0));

  const std::optional<int64_t> attr = optional_int_attr(f, "num_classes");
  if (attr) {
    DTRAIN_CHECK_T(ConfigError, *attr >= 1, "'{}': attribute num_classes must be >= 1, got {}",
                   file, *attr);
    check_range(labels, *attr, file, "labels", "label", "the file's num_classes attribute");
  }
  check_range(labels, o.num_classes, file, "labels", "label", o.classes_key);
  const int64_t classes = o.num_classes > 0 ? o.num_classes
                          : attr            ? *attr
                                            : std::max<int64_t>(1, max_value(labels) + 1);
  at::Tensor inputs = images.read(is_float ? at::kFloat : at::kByte);
  return std::make_shared<ClassificationDataset>(std::move(inputs), std::move(labels), classes,
                                                 description_of(f));
}

std::shared_ptr<Dataset> load_tokens(const h5::File& f, const H5DatasetOptions& o) {
  const std::string& file = f.file_name();
  at::Tensor tokens = read_int_vector(f, "tokens");
  DTRAIN_CHECK_T(ConfigError, tokens.size(0) >= o.context_length + 1,
                 "'{}': 'tokens' holds {} tokens, fewer than one sequence of "
                 "CONTEXT_LENGTH + 1 = {}",
                 file, tokens.size(0), o.context_length + 1);
  const std::optional<int64_t> attr = optional_int_attr(f, "vocab_size");
  if (attr) {
    DTRAIN_CHECK_T(ConfigError, *attr >= 1, "'{}': attribute vocab_size must be >= 1, got {}", file,
                   *attr);
    check_range(tokens, *attr, file, "tokens", "token", "the file's vocab_size attribute");
  }
  check_range(tokens, o.vocab_size, file, "tokens", "token", o.vocab_key);
  const int64_t vocab = o.vocab_size > 0 ? o.vocab_size
                        : attr           ? *attr
                                         : std::max<int64_t>(1, max_value(tokens) + 1);
  return std::make_shared<TokenDataset>(std::move(tokens), o.context_length, vocab,
                                        description_of(f));
}

}  // namespace

std::shared_ptr<Dataset> load_h5_dataset(const std::string& path, const H5DatasetOptions& options) {
  DTRAIN_CHECK_T(ConfigError, options.context_length >= 1,
                 "loading '{}': context length must be >= 1, got {}", path, options.context_length);
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
