// Unit tests of plan_shards: every row of every tensor in exactly one piece, each rank's
// bytes within one row of T/N, 0-d and empty tensors, world sizes 1..7, many tiny
// tensors and one huge tensor.
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "checkpoint/shard_plan.h"
#include "runtime/base/error.h"

namespace dtrain::checkpoint {
namespace {

// Checks every invariant of a plan and returns the bytes each rank writes.
std::vector<int64_t> CheckPlan(const std::vector<TensorMeta>& tensors, int world,
                               const std::vector<Piece>& plan) {
  std::vector<int64_t> per_rank(world, 0);
  int64_t total = 0, max_row = 0;
  for (const auto& t : tensors) {
    total += t.bytes();
    max_row = std::max(max_row, t.row_bytes());
  }
  size_t i = 0;
  int last_shard = 0;  // ownership follows the stream order
  for (size_t ti = 0; ti < tensors.size(); ++ti) {
    const TensorMeta& t = tensors[ti];
    SCOPED_TRACE(::testing::Message() << "tensor " << ti << " '" << t.name << "' world " << world);
    int64_t next_row = 0;
    std::vector<int> shards_seen;
    const size_t first = i;
    while (i < plan.size() && plan[i].tensor == ti) {
      const Piece& p = plan[i];
      EXPECT_EQ(p.row_start, next_row) << "pieces must tile the rows in order";
      EXPECT_GE(p.shard, 0);
      EXPECT_LT(p.shard, world);
      EXPECT_GE(p.shard, last_shard) << "a later piece went to an earlier rank";
      last_shard = p.shard;
      for (int s : shards_seen) EXPECT_NE(s, p.shard) << "two pieces of one tensor on one rank";
      shards_seen.push_back(p.shard);
      EXPECT_EQ(p.bytes, p.row_count * t.row_bytes());
      if (t.rows() > 0 && t.row_bytes() > 0) {
        EXPECT_GT(p.row_count, 0) << "empty piece";
      }
      per_rank[p.shard] += p.bytes;
      next_row += p.row_count;
      ++i;
    }
    EXPECT_GT(i, first) << "tensor has no piece";
    EXPECT_EQ(next_row, t.rows()) << "rows not covered exactly once";
    if (t.rows() == 0 || t.row_bytes() == 0) {
      EXPECT_EQ(i - first, 1u) << "empty tensor: one piece";
    }
  }
  EXPECT_EQ(i, plan.size()) << "pieces out of order or for unknown tensors";
  int64_t sum = 0;
  for (int r = 0; r < world; ++r) {
    sum += per_rank[r];
    const double ideal = static_cast<double>(total) / world;
    EXPECT_LE(std::abs(static_cast<double>(per_rank[r]) - ideal), static_cast<double>(max_row))
        << "rank " << r << " writes " << per_rank[r] << " bytes; T/N = " << ideal
        << ", largest row " << max_row;
  }
  EXPECT_EQ(sum, total);
  return per_rank;
}

// A deterministic mix of shapes and dtypes (a small pseudo-random generator).
std::vector<TensorMeta> MixedTensors(uint32_t seed, int count) {
  static const at::ScalarType kTypes[] = {at::kFloat,    at::kDouble, at::kHalf,
                                          at::kBFloat16, at::kChar,   at::kInt,
                                          at::kLong,     at::kByte,   at::kBool};
  uint32_t s = seed * 2654435761u + 1;
  auto next = [&s](uint32_t mod) {
    s = s * 1664525u + 1013904223u;
    return (s >> 8) % mod;
  };
  std::vector<TensorMeta> out;
  for (int i = 0; i < count; ++i) {
    TensorMeta t{"t" + std::to_string(i), kTypes[next(9)], {}};
    const uint32_t dims = next(4);
    for (uint32_t d = 0; d < dims; ++d) t.shape.push_back(next(7) == 0 ? 0 : 1 + next(40));
    out.push_back(std::move(t));
  }
  return out;
}

TEST(ShardPlanTest, MixedTensorsEveryWorldSize) {
  for (uint32_t seed = 0; seed < 20; ++seed) {
    const auto tensors = MixedTensors(seed, 1 + static_cast<int>(seed % 13) * 3);
    for (int world = 1; world <= 7; ++world) {
      SCOPED_TRACE(::testing::Message() << "seed " << seed);
      CheckPlan(tensors, world, plan_shards(tensors, world));
    }
  }
}

TEST(ShardPlanTest, WorldOfOneIsOnePiecePerTensor) {
  const auto tensors = MixedTensors(3, 30);
  const auto plan = plan_shards(tensors, 1);
  ASSERT_EQ(plan.size(), tensors.size());
  for (size_t i = 0; i < plan.size(); ++i) {
    EXPECT_EQ(plan[i].tensor, i);
    EXPECT_EQ(plan[i].shard, 0);
    EXPECT_EQ(plan[i].row_start, 0);
    EXPECT_EQ(plan[i].row_count, tensors[i].rows());
    EXPECT_EQ(plan[i].bytes, tensors[i].bytes());
  }
}

TEST(ShardPlanTest, ZeroDimAndEmptyTensors) {
  const std::vector<TensorMeta> tensors = {
      {"scalar_f", at::kFloat, {}}, {"empty_rows", at::kFloat, {0, 4}},
      {"w", at::kFloat, {10, 10}},  {"empty_cols", at::kDouble, {3, 0}},
      {"scalar_l", at::kLong, {}},  {"empty_1d", at::kHalf, {0}},
      {"b", at::kFloat, {10}},
  };
  EXPECT_EQ(tensors[0].rows(), 1);
  EXPECT_EQ(tensors[0].row_bytes(), 4);
  EXPECT_EQ(tensors[1].row_bytes(), 0);
  EXPECT_EQ(tensors[3].rows(), 3);
  EXPECT_EQ(tensors[3].row_bytes(), 0);
  for (int world = 1; world <= 7; ++world) {
    const auto plan = plan_shards(tensors, world);
    CheckPlan(tensors, world, plan);
    for (const auto& p : plan) {
      const TensorMeta& t = tensors[p.tensor];
      if (t.shape.empty()) {
        EXPECT_EQ(p.row_start, 0);
        EXPECT_EQ(p.row_count, 1) << t.name << ": a 0-d tensor is one row";
        EXPECT_EQ(p.bytes, t.bytes());
      }
      if (t.bytes() == 0) {
        EXPECT_EQ(p.bytes, 0) << t.name;
      }
    }
  }
  // Only empty tensors: total is 0 and everything still gets a piece.
  const std::vector<TensorMeta> empty = {{"a", at::kFloat, {0}}, {"b", at::kFloat, {2, 0}}};
  for (int world = 1; world <= 7; ++world) CheckPlan(empty, world, plan_shards(empty, world));
  EXPECT_TRUE(plan_shards({}, 4).empty());
}

TEST(ShardPlanTest, ManyTinyTensors) {
  std::vector<TensorMeta> tensors;
  for (int i = 0; i < 1000; ++i) {
    tensors.push_back({"s" + std::to_string(i), i % 2 ? at::kFloat : at::kLong, {}});
  }
  for (int world = 1; world <= 7; ++world) {
    const auto per_rank = CheckPlan(tensors, world, plan_shards(tensors, world));
    for (int r = 0; r < world; ++r) EXPECT_GT(per_rank[r], 0) << "rank " << r << " idle";
  }
}

TEST(ShardPlanTest, OneHugeTensor) {
  // 2^33 rows of 1 KiB: 8 TiB, planned without overflow (only metadata).
  const std::vector<TensorMeta> tensors = {{"huge", at::kFloat, {int64_t{1} << 33, 256}}};
  EXPECT_EQ(tensors[0].bytes(), int64_t{1} << 43);
  for (int world = 1; world <= 7; ++world) {
    const auto plan = plan_shards(tensors, world);
    EXPECT_EQ(plan.size(), static_cast<size_t>(world)) << "one piece per rank";
    CheckPlan(tensors, world, plan);
  }
}

TEST(ShardPlanTest, MoreRanksThanRows) {
  const std::vector<TensorMeta> tensors = {{"w", at::kFloat, {3, 4}}};
  const auto plan = plan_shards(tensors, 7);
  EXPECT_EQ(plan.size(), 3u);
  const auto per_rank = CheckPlan(tensors, 7, plan);
  int busy = 0;
  for (int64_t b : per_rank) busy += b > 0;
  EXPECT_EQ(busy, 3);
}

TEST(ShardPlanTest, UnevenRowsStayWithinOneRow) {
  // Rows of very different sizes: a big-row tensor between tiny ones.
  const std::vector<TensorMeta> tensors = {{"a", at::kFloat, {5}},
                                           {"big", at::kFloat, {7, 1000}},
                                           {"c", at::kFloat, {13, 3}},
                                           {"d", at::kByte, {1}}};
  for (int world = 1; world <= 7; ++world) CheckPlan(tensors, world, plan_shards(tensors, world));
}

TEST(ShardPlanTest, Deterministic) {
  const auto tensors = MixedTensors(11, 40);
  const auto a = plan_shards(tensors, 5), b = plan_shards(tensors, 5);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].tensor, b[i].tensor);
    EXPECT_EQ(a[i].shard, b[i].shard);
    EXPECT_EQ(a[i].row_start, b[i].row_start);
    EXPECT_EQ(a[i].row_count, b[i].row_count);
  }
}

TEST(ShardPlanTest, InvalidWorldSize) {
  try {
    plan_shards({{"a", at::kFloat, {2}}}, 0);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("world size must be >= 1, got 0"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace dtrain::checkpoint
