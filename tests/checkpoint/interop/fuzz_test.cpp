// Byte flips and truncations of real PyTorch files never crash, hang or allocate without
// bound: each either reads or throws dtrain::CheckpointError. In-process, a few hundred
// cases per file by default; DTRAIN_FUZZ_CASES=N runs N per file (the full sweep,
// docs/INTEROP.md).
#include <cstdlib>
#include <random>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "checkpoint/interop/weights.h"
#include "runtime/base/error.h"
#include "tests/checkpoint/interop/interop_test_util.h"
#include "tests/test_util.h"

namespace dtrain::interop {
namespace {

int Cases() {
  const char* env = std::getenv("DTRAIN_FUZZ_CASES");
  return env ? std::atoi(env) : 400;
}

// Reads `bytes`; counts reads that succeeded and errors; anything else fails the test.
void Try(const std::string& bytes, int* ok, int* refused) {
  try {
    ForeignWeights w = parse_foreign_weights(bytes, "fuzzed");
    ++*ok;
  } catch (const CheckpointError&) {
    ++*refused;
  }
}

TEST(FuzzTest, FlippedAndTruncatedFilesAreReadOrRefused) {
  if (testing::torch_files().empty()) GTEST_SKIP() << "python3-torch could not make the files";
  std::mt19937_64 rng(20261204);
  for (const std::string name :
       {"dtypes_p2.pth", "dtypes_p4.pth", "dtypes_legacy.pth", "d2_model_final.pth", "zoo.pkl"}) {
    const std::string original = testutil::read_file(testing::torch_files() + "/" + name);
    int ok = 0, refused = 0;
    for (int c = 0; c < Cases(); ++c) {
      std::string bytes = original;
      if (c % 4 == 3) {
        bytes.resize(rng() % bytes.size());
      } else {
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int f = 0; f < flips; ++f) {
          bytes[rng() % bytes.size()] ^= static_cast<char>(1u << (rng() % 8));
        }
      }
      Try(bytes, &ok, &refused);
    }
    // Every truncation before the end, byte by byte, for the small plain pickle.
    if (name == "zoo.pkl") {
      for (size_t n = 0; n < original.size(); ++n) Try(original.substr(0, n), &ok, &refused);
    }
    RecordProperty(name, fmt::format("{} read, {} refused", ok, refused));
    EXPECT_GT(refused, 0) << name;
  }
}

}  // namespace
}  // namespace dtrain::interop
