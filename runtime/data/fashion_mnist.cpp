// Fashion-MNIST from its IDX files (see fashion_mnist.h).
#include "runtime/data/fashion_mnist.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "runtime/base/error.h"
#include "runtime/data/idx.h"

namespace dtrain::data {

std::shared_ptr<ClassificationDataset> load_fashion_mnist(const std::string& root, bool train) {
  const std::string prefix = root + "/" + (train ? "train" : "t10k");
  const std::string images_path = prefix + "-images-idx3-ubyte.gz";
  const std::string labels_path = prefix + "-labels-idx1-ubyte.gz";
  IdxArray images = read_idx(images_path, 3);
  IdxArray labels = read_idx(labels_path, 1);
  DTRAIN_CHECK(images.dims[1] == 28 && images.dims[2] == 28,
               "'{}': images are {}x{}, expected 28x28 (not Fashion-MNIST?)", images_path,
               images.dims[1], images.dims[2]);
  DTRAIN_CHECK(images.dims[0] == labels.dims[0], "'{}' holds {} images but '{}' {} labels",
               images_path, images.dims[0], labels_path, labels.dims[0]);
  const int64_t max_label = labels.data.max().item<int64_t>();
  DTRAIN_CHECK(max_label < 10, "'{}': label {} is not one of the 10 classes", labels_path,
               max_label);
  return std::make_shared<ClassificationDataset>(
      images.data.unsqueeze(1).contiguous(), labels.data.to(at::kLong), 10,
      fmt::format("fashion_mnist_{}({})", train ? "train" : "test", root),
      ByteNormalization{kFashionMnistMean, kFashionMnistStd});
}

}  // namespace dtrain::data
