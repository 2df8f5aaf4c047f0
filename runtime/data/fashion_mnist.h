// Fashion-MNIST (Zalando; Debian's dataset-fashion-mnist) as a ClassificationDataset:
// 60,000 training and 10,000 test 28x28 grey images of 10 clothing classes.
//
//   auto train = load_fashion_mnist("/usr/share/datasets/fashion-mnist", /*train=*/true);
//
// A sample is float32 [1, 28, 28] = (pixel / 255 - 0.2860) / 0.3530 (the training set's
// mean and standard deviation), its label an int64 in [0, 10). Immutable after loading,
// so get_batch is thread-safe; loading shares no state between calls (reentrant).
#pragma once

#include <memory>
#include <string>

#include "runtime/data/in_memory.h"

namespace dtrain::data {

inline constexpr const char* kFashionMnistRoot = "/usr/share/datasets/fashion-mnist";
inline constexpr float kFashionMnistMean = 0.2860f;
inline constexpr float kFashionMnistStd = 0.3530f;

// Reads {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz from `root`. Throws dtrain::Error
// naming the file for a missing, truncated or wrong file, or images and labels that do
// not match (counts, 28x28, labels >= 10).
std::shared_ptr<ClassificationDataset> load_fashion_mnist(const std::string& root, bool train);

}  // namespace dtrain::data
