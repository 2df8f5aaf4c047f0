// Every checkpoint dtype (float32/64, float16, bfloat16, int8/16/32/64, uint8, bool)
// round-trips bit for bit through Checkpointer save/load, as user extras of awkward
// shapes (0-d, empty, 1-D, 3-D, with -0.0, +-inf and NaN) and as model parameters and
// buffers; the shard datasets and the virtual datasets carry the right HDF5 types.
#include <filesystem>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "checkpoint/checkpointer.h"
#include "checkpoint/format.h"
#include "checkpoint/inspect.h"
#include "runtime/dist/local_communicator.h"
#include "runtime/h5/h5.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint {
namespace {

using namespace testing;  // NOLINT: test helpers

// A module with one parameter and one buffer of `dtype` (parameters only for floating
// dtypes) plus buffers of every other dtype.
struct AllDtypesNet : torch::nn::Module {
  AllDtypesNet(at::ScalarType param_dtype, uint64_t seed) {
    register_parameter("w", pattern_tensor({4, 3}, param_dtype, seed));
    register_parameter("s", pattern_tensor({}, param_dtype, seed + 1));
    uint64_t k = seed + 10;
    for (at::ScalarType t : all_dtypes()) {
      register_buffer(std::string("buf_") + c10::toString(t), pattern_tensor({9, 2}, t, ++k));
    }
  }
};

class DtypeTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = make_temp_dir("dtype"); }
  void TearDown() override {
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }
  std::string dir_;
  dist::LocalCommunicator comm_;
};

TEST_F(DtypeTest, PatternsHaveSpecialValues) {
  // The patterns really hold what the round trips claim to cover.
  at::Tensor f = pattern_tensor({37}, at::kFloat, 1);
  EXPECT_TRUE(f[0].item<float>() == 0.0f && std::signbit(f[0].item<float>()));
  EXPECT_TRUE(std::isinf(f[1].item<float>()));
  EXPECT_TRUE(std::isnan(f[3].item<float>()));
  EXPECT_TRUE(pattern_tensor({37}, at::kBool, 1).any().item<bool>());
  EXPECT_FALSE(pattern_tensor({37}, at::kBool, 1).all().item<bool>());
  EXPECT_LT(pattern_tensor({37}, at::kChar, 1).min().item<int64_t>(), 0);
}

TEST_F(DtypeTest, ExtrasOfEveryDtypeRoundTripBitwise) {
  auto model = make_tiny_net(1);
  const StateDict extras = sample_extras(5, 42);
  Checkpointer(model, dir_, comm_).save("model_0000042", extras);

  auto fresh = make_tiny_net(2);
  Checkpointer loader(fresh, dir_, comm_);
  const StateDict got = loader.load(dir_ + "/model_0000042");
  const auto diff = state_diff(extras, got);
  EXPECT_TRUE(diff.empty()) << ::testing::PrintToString(diff);
  EXPECT_TRUE(state_diff(ModuleState(model).state_dict(), ModuleState(fresh).state_dict()).empty());

  // Stored types: shard datasets map back to the tensor dtype; the virtual datasets in
  // checkpoint.h5 read back bit for bit with the h5 layer too.
  h5::File shard = h5::File::open(dir_ + "/model_0000042/" + shard_file_name(0, 1));
  h5::File index = h5::File::open(dir_ + "/model_0000042/checkpoint.h5");
  for (at::ScalarType t : all_dtypes()) {
    for (const char* shape : {"scalar", "vector", "cube", "empty"}) {
      const std::string name = std::string("extra/tensors/") + c10::toString(t) + "/" + shape;
      SCOPED_TRACE(name);
      EXPECT_EQ(shard.open_dataset(name).dtype(), t);
      h5::Dataset vds = index.open_dataset(name);
      EXPECT_EQ(vds.dtype(), t);
      EXPECT_EQ(vds.get_string_attr("dtype"), h5::dtype_name(t));
      EXPECT_TRUE(bitwise_equal(vds.read(), std::get<at::Tensor>(extras.at(name.substr(6)))));
    }
  }
}

TEST_F(DtypeTest, ModelParametersAndBuffersOfEveryDtype) {
  for (at::ScalarType param : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(param));
    const std::string name = std::string("m_") + c10::toString(param);
    auto a = std::make_shared<AllDtypesNet>(param, 3);
    auto b = std::make_shared<AllDtypesNet>(param, 300);
    ASSERT_FALSE(state_diff(ModuleState(a).state_dict(), ModuleState(b).state_dict()).empty());
    Checkpointer(a, dir_, comm_).save(name);
    Checkpointer(b, dir_, comm_).load(dir_ + "/" + name);
    const auto diff = state_diff(ModuleState(a).state_dict(), ModuleState(b).state_dict());
    EXPECT_TRUE(diff.empty()) << ::testing::PrintToString(diff);
    EXPECT_TRUE(verify_checkpoint(dir_ + "/" + name).empty());
  }
}

TEST_F(DtypeTest, BFloat16IsStoredAsATruncatedFloat32) {
  // The decision recorded for docs/FORMAT.md: bfloat16 is an HDF5 floating-point type
  // of 16 bits with bfloat16's layout (sign bit 15, 8-bit exponent at bit 7 with bias
  // 127, 7-bit mantissa at bit 0), so h5py reads it as float32 (exactly), and HDF5
  // converts it to float32 for any reader.
  auto model = make_tiny_net(1);
  // Every one of the 65536 bit patterns.
  at::Tensor all = at::arange(65536, at::kInt).to(at::kShort).view(at::kBFloat16);
  Checkpointer(model, dir_, comm_).save("bf16", {{"all", all}});
  h5::File index = h5::File::open(dir_ + "/bf16/checkpoint.h5");
  h5::Dataset d = index.open_dataset("extra/all");
  h5::DataType type = d.type();
  EXPECT_EQ(type.type_class(), H5T_FLOAT);
  EXPECT_EQ(type.size(), 2u);
  {
    h5::ApiScope scope;
    size_t spos, epos, esize, mpos, msize;
    ASSERT_GE(H5Tget_fields(type.id(), &spos, &epos, &esize, &mpos, &msize), 0);
    EXPECT_EQ(spos, 15u);
    EXPECT_EQ(epos, 7u);
    EXPECT_EQ(esize, 8u);
    EXPECT_EQ(mpos, 0u);
    EXPECT_EQ(msize, 7u);
    EXPECT_EQ(H5Tget_ebias(type.id()), 127u);
  }
  EXPECT_TRUE(bitwise_equal(d.read(), all));
  // HDF5's own conversion to float32 equals PyTorch's, NaN aside.
  at::Tensor as_f32 = d.read(at::kFloat);
  at::Tensor want = all.to(at::kFloat);
  at::Tensor nan = want.isnan();
  EXPECT_TRUE(at::equal(as_f32.isnan(), nan));
  EXPECT_TRUE(bitwise_equal(as_f32.masked_select(~nan), want.masked_select(~nan)));
  // The round trip through the checkpointer is exact.
  StateDict got = Checkpointer(model, dir_, comm_).load(dir_ + "/bf16");
  EXPECT_TRUE(bitwise_equal(std::get<at::Tensor>(got.at("all")), all));
}

TEST_F(DtypeTest, NonContiguousAndSlicedTensorsAreSavedByValue) {
  auto model = make_tiny_net(1);
  at::Tensor base = pattern_tensor({6, 5}, at::kDouble, 9);
  const StateDict extras = {{"t", base.t()},
                            {"slice", base.narrow(1, 1, 2)},
                            {"expanded", pattern_tensor({1, 3}, at::kInt, 4).expand({4, 3})}};
  Checkpointer(model, dir_, comm_).save("nc", extras);
  StateDict got = Checkpointer(model, dir_, comm_).load(dir_ + "/nc");
  for (const auto& [k, v] : extras) {
    const at::Tensor& want = std::get<at::Tensor>(v);
    const at::Tensor& have = std::get<at::Tensor>(got.at(k));
    EXPECT_TRUE(bitwise_equal(have, want.contiguous())) << k;
  }
}

}  // namespace
}  // namespace dtrain::checkpoint
