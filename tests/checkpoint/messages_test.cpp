// Unit tests of the checkpointer's messages between ranks (checkpoint/messages.h):
// exact round trips, and a clear error naming the rank for bytes that are not one.
#include <string>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "checkpoint/messages.h"
#include "tests/gtest_util.h"

namespace dtrain::checkpoint {
namespace {

TEST(Messages, ShardReportRoundTrips) {
  ShardReport report;
  report.write_seconds = 0.125;
  ShardManifest m;
  m.replicated.push_back({"model/w", {3, 4, 2, 32, 0xfedcba9876543210ull, {2, 4}}});
  m.per_rank.emplace_back(TensorMeta{"rng/cpu", at::kByte, {16}}, PieceRecord{3, 0, 16, 16, 99, {16}});
  report.shards[3] = m;
  report.shards[5] = ShardManifest{};
  const ShardReport back = ShardReport::decode(report.encode(), 3);
  EXPECT_EQ(back.error, "");
  EXPECT_EQ(back.write_seconds, 0.125);
  ASSERT_EQ(back.shards.size(), 2u);
  EXPECT_EQ(back.shards.at(3).to_json_value(), m.to_json_value());
  ShardReport failed;
  failed.error = "disk full: 'x/shard-00001-of-00002.h5'\nsecond line";
  EXPECT_EQ(ShardReport::decode(failed.encode(), 1).error, failed.error);
}

TEST(Messages, TensorPackRoundTripsBitwise) {
  TensorPack pack;
  pack.tensors.emplace_back("rng/cpu", at::arange(5, at::kByte));
  pack.tensors.emplace_back("rng/scalar", at::scalar_tensor(int64_t{-7}, at::kLong));
  pack.tensors.emplace_back("rng/empty", at::empty({0, 3}, at::kFloat));
  pack.tensors.emplace_back("rng/nan", at::full({2}, std::nan(""), at::kDouble));
  const TensorPack back = TensorPack::decode(pack.encode(), 2);
  ASSERT_EQ(back.tensors.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(back.tensors[i].first, pack.tensors[i].first);
    EXPECT_EQ(back.tensors[i].second.scalar_type(), pack.tensors[i].second.scalar_type());
    EXPECT_EQ(back.tensors[i].second.sizes(), pack.tensors[i].second.sizes());
    const size_t n = pack.tensors[i].second.nbytes();
    ASSERT_EQ(back.tensors[i].second.nbytes(), n);
    // Bytes, so that NaN compares equal to itself; an empty tensor has no data pointer.
    if (n > 0) {
      EXPECT_EQ(0, std::memcmp(back.tensors[i].second.data_ptr(), pack.tensors[i].second.data_ptr(), n));
    }
  }
  EXPECT_TRUE(TensorPack::decode(TensorPack{}.encode(), 0).tensors.empty());
}

TEST(Messages, VisibilityAndNameListRoundTrip) {
  const Visibility v = Visibility::decode(Visibility{true, "boot 1:2\nrng:p;"}.encode(), 0);
  EXPECT_TRUE(v.readable);
  EXPECT_EQ(v.files, "boot 1:2\nrng:p;");
  const NameList names{{"/a/model_0000009", "/a/model final", ""}};
  EXPECT_EQ(NameList::decode(names.encode(), 0).names, names.names);
}

TEST(Messages, MalformedBytesNameTheMessageAndTheRank) {
  EXPECT_CONTAINS(testing::ThrownMessage<CheckpointError>([] { ShardReport::decode("+0.5\n", 3); }),
                  "internal: malformed shard report message from rank 3");
  EXPECT_CONTAINS(testing::ThrownMessage<CheckpointError>([] {
                    TensorPack::decode(R"([{"name":"x","dtype":"float32","shape":[4]}])" "\nab", 1);
                  }),
                  "malformed tensor pack message from rank 1: too short for 'x'");
  // The manifests are JSON objects inside the report: a malformed one names its shard.
  EXPECT_CONTAINS(testing::ThrownMessage<CheckpointError>([] {
                    ShardReport::decode(R"({"error":"","write_seconds":0,"shards":{"5":{"per_rank":[]}}})", 3);
                  }),
                  "malformed shard report message from rank 3: rank 3 (shard 5): malformed shard manifest");
  EXPECT_CONTAINS(testing::ThrownMessage<CheckpointError>([] { Visibility::decode("", 2); }),
                  "malformed visibility message from rank 2");
}

}  // namespace
}  // namespace dtrain::checkpoint
