// Helpers of the interop tests (see interop_test_util.h).
#include "tests/checkpoint/interop/interop_test_util.h"

#include <cstdlib>
#include <map>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tests/test_util.h"

namespace dtrain::interop::testing {
namespace {

std::string dtype_name(c10::ScalarType t) {
  static const std::map<c10::ScalarType, std::string> names = {
      {c10::kFloat, "float32"}, {c10::kDouble, "float64"}, {c10::kHalf, "float16"},
      {c10::kBFloat16, "bfloat16"}, {c10::kChar, "int8"}, {c10::kShort, "int16"},
      {c10::kInt, "int32"}, {c10::kLong, "int64"}, {c10::kByte, "uint8"}, {c10::kBool, "bool"}};
  auto it = names.find(t);
  return it == names.end() ? std::string(c10::toString(t)) : it->second;
}

}  // namespace

const std::string& torch_files() {
  static const std::string dir = [] {
    const std::string d = testutil::make_temp_dir("dtrain_interop_");
    const std::string cmd = fmt::format("'{}' '{}' '{}' > '{}/make.log' 2>&1", DTRAIN_PYTHON,
                                        DTRAIN_MAKE_TORCH_FILES, d, d);
    return std::system(cmd.c_str()) == 0 ? d : std::string();
  }();
  return dir;
}

std::string tensor_bytes(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

void expect_matches_reference(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                              const std::string& name) {
  const std::string dir = torch_files() + "/ref/" + name;
  const auto manifest = nlohmann::json::parse(testutil::read_file(dir + "/manifest.json"));
  EXPECT_EQ(tensors.size(), manifest.size()) << name;
  for (const auto& [key, t] : tensors) {
    SCOPED_TRACE(name + ": " + key);
    ASSERT_TRUE(manifest.contains(key)) << "unexpected tensor " << key;
    const auto& m = manifest[key];
    EXPECT_EQ(dtype_name(t.scalar_type()), m["dtype"].get<std::string>());
    EXPECT_EQ(t.sizes().vec(), m["shape"].get<std::vector<int64_t>>());
    std::string file = key;
    for (size_t at = file.find('/'); at != std::string::npos; at = file.find('/', at)) {
      file.replace(at, 1, "__");
    }
    std::string expected = testutil::read_file(dir + "/" + file + ".bin");
    EXPECT_TRUE(tensor_bytes(t) == expected) << "bytes differ";
  }
}

}  // namespace dtrain::interop::testing
