// build_dataset: DATASETS.TRAIN / DATASETS.TEST names -> Dataset (see dataset.h).
#include "runtime/data/dataset.h"

#include <fmt/format.h>

#include "runtime/base/error.h"
#include "runtime/data/fashion_mnist.h"
#include "runtime/data/h5_dataset.h"
#include "runtime/data/synthetic.h"

namespace dtrain::data {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The classification model's class count and its key, when MODEL.NAME has one.
std::pair<int64_t, std::string> model_classes(const Config& cfg) {
  const std::string& model = cfg.get_string("MODEL.NAME");
  if (model == "mlp") return {cfg.get_int("MODEL.MLP.NUM_CLASSES"), "MODEL.MLP.NUM_CLASSES"};
  if (model == "cnn") return {cfg.get_int("MODEL.CNN.NUM_CLASSES"), "MODEL.CNN.NUM_CLASSES"};
  if (model == "resnet") {
    return {cfg.get_int("MODEL.RESNET.NUM_CLASSES"), "MODEL.RESNET.NUM_CLASSES"};
  }
  return {0, ""};
}

}  // namespace

void check_sample_index(int64_t index, int64_t size, const std::string& what) {
  DTRAIN_CHECK(index >= 0 && index < size, "{}: sample index {} out of range [0, {})", what, index,
               size);
}

std::vector<int64_t> Dataset::sample_shape() const {
  DTRAIN_CHECK(size() > 0, "{}: no samples", describe());
  const at::Tensor x = get_batch({0}).inputs;
  return std::vector<int64_t>(x.sizes().begin() + 1, x.sizes().end());
}

std::shared_ptr<Dataset> build_dataset(const std::string& name, const Config& cfg, bool train) {
  // SEED is used as given (all ranks agree on it); -1 is the bit pattern 2^64 - 1.
  const uint64_t seed = static_cast<uint64_t>(cfg.get_int("SEED"));
  const int64_t num =
      cfg.get_int(train ? "DATASETS.SYNTHETIC.NUM_TRAIN" : "DATASETS.SYNTHETIC.NUM_TEST");
  const auto [classes, classes_key] = model_classes(cfg);

  if (name == "synthetic_classification") {
    SyntheticClassificationOptions o;
    o.num_samples = num;
    o.input_shape = cfg.get_int_list("DATASETS.SYNTHETIC.INPUT_SHAPE");
    o.num_classes = cfg.get_int("DATASETS.SYNTHETIC.NUM_CLASSES");
    o.noise = cfg.get_float("DATASETS.SYNTHETIC.NOISE");
    o.seed = seed;
    o.train = train;
    DTRAIN_CHECK_T(ConfigError, classes == 0 || o.num_classes <= classes,
                   "synthetic_classification: DATASETS.SYNTHETIC.NUM_CLASSES ({}) exceeds {} ({})",
                   o.num_classes, classes_key, classes);
    return std::make_shared<SyntheticClassification>(o);
  }
  if (name == "synthetic_tokens") {
    SyntheticTokensOptions o;
    o.num_sequences = num;
    o.context_length = cfg.get_int("MODEL.GPT.CONTEXT_LENGTH");
    o.vocab_size = cfg.get_int("MODEL.GPT.VOCAB_SIZE");
    o.seed = seed;
    o.train = train;
    return std::make_shared<SyntheticTokens>(o);
  }
  if (name == "fashion_mnist_train" || name == "fashion_mnist_test") {
    DTRAIN_CHECK_T(ConfigError, classes == 0 || classes >= 10,
                   "{}: 10 classes, but {} is {}", name, classes_key, classes);
    return load_fashion_mnist(cfg.get_string("DATASETS.FASHION_MNIST.ROOT"),
                              name == "fashion_mnist_train");
  }
  if (ends_with(name, ".h5") || ends_with(name, ".hdf5")) {
    H5DatasetOptions o;
    o.context_length = cfg.get_int("MODEL.GPT.CONTEXT_LENGTH");
    o.vocab_size = cfg.get_int("MODEL.GPT.VOCAB_SIZE");
    o.num_classes = classes;
    if (!classes_key.empty()) o.classes_key = classes_key;
    o.in_memory_max_bytes = cfg.get_int("DATASETS.H5.IN_MEMORY_MAX_MB") << 20;
    o.cache_bytes = cfg.get_int("DATASETS.H5.CACHE_MB") << 20;
    return load_h5_dataset(name, o);
  }
  throw ConfigError(
      fmt::format("unknown dataset '{}' in DATASETS.{}: expected synthetic_classification, "
                  "synthetic_tokens, fashion_mnist_train, fashion_mnist_test or a path "
                  "ending in .h5 / .hdf5",
                  name, train ? "TRAIN" : "TEST"));
}

}  // namespace dtrain::data
