// Unit tests of the checkpoint index and shard manifest: JSON round trips (every field,
// every scalar type, 64-bit checksums) and the validation errors of
// CheckpointIndex::from_json (format name, format version, pieces not tiling, ...).
#include <cstdint>
#include <limits>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "checkpoint/format.h"
#include "checkpoint/index.h"
#include "runtime/base/error.h"
#include "runtime/h5/types.h"
#include "tests/checkpoint/expect.h"

namespace dtrain::checkpoint {
namespace {

using nlohmann::json;

// A two-rank index: a replicated [5, 2] float tensor in two pieces, a 0-d int64, an
// empty tensor, a per-rank RNG state, and one scalar of each type.
CheckpointIndex SampleIndex() {
  CheckpointIndex idx;
  idx.world_size = 2;
  idx.iteration = 4999;
  idx.created = "2026-11-23T13:29:55Z";
  idx.versions = {{"dtrain", "0.1.0"}, {"torch", "1.13.0"}};
  idx.tensors.push_back({"model/fc1.weight",
                         "float32",
                         {5, 2},
                         false,
                         {{0, 0, 3, 24, 0xfedcba9876543210ull, {3, 2}},
                          {1, 3, 2, 16, 0x0123456789abcdefull, {2, 2}}}});
  idx.tensors.push_back(
      {"model/bn.num_batches_tracked", "int64", {}, false, {{1, 0, 1, 8, 42, {}}}});
  idx.tensors.push_back({"extra/empty", "bfloat16", {0, 3}, false, {{0, 0, 0, 0, 0, {0, 3}}}});
  idx.tensors.push_back({"rng/cpu",
                         "uint8",
                         {5056},
                         true,
                         {{0, 0, 5056, 5056, 1, {5056}}, {1, 0, 5056, 5056, 2, {5056}}}});
  idx.scalars["scheduler/last_iter"] = int64_t{-7};
  idx.scalars["extra/lr"] = 0.1;
  idx.scalars["extra/big"] = 1e300;
  idx.scalars["extra/note"] = std::string("quote \" backslash \\ newline \n unicode \u00e9");
  return idx;
}

std::string ErrorOf(const std::string& text) {
  try {
    CheckpointIndex::from_json(text, "ckpt/checkpoint.h5");
  } catch (const CheckpointError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a CheckpointError for:\n" << text;
  return "";
}

// The sample index as JSON, edited by `edit`.
template <typename F>
std::string Edited(F&& edit) {
  json j = json::parse(SampleIndex().to_json());
  edit(j);
  return j.dump();
}

TEST(CheckpointIndexTest, RoundTripsEveryField) {
  const CheckpointIndex a = SampleIndex();
  const CheckpointIndex b = CheckpointIndex::from_json(a.to_json(), "x");
  EXPECT_EQ(b.format_version, kFormatVersion);
  EXPECT_EQ(b.world_size, 2);
  EXPECT_EQ(b.iteration, 4999);
  EXPECT_EQ(b.created, a.created);
  EXPECT_EQ(b.versions, a.versions);
  ASSERT_EQ(b.tensors.size(), a.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const TensorRecord &x = a.tensors[i], &y = b.tensors[i];
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.dtype, y.dtype);
    EXPECT_EQ(x.shape, y.shape);
    EXPECT_EQ(x.per_rank, y.per_rank);
    ASSERT_EQ(x.pieces.size(), y.pieces.size()) << x.name;
    for (size_t p = 0; p < x.pieces.size(); ++p) {
      EXPECT_EQ(x.pieces[p].shard, y.pieces[p].shard);
      EXPECT_EQ(x.pieces[p].row_start, y.pieces[p].row_start);
      EXPECT_EQ(x.pieces[p].row_count, y.pieces[p].row_count);
      EXPECT_EQ(x.pieces[p].bytes, y.pieces[p].bytes);
      EXPECT_EQ(x.pieces[p].xxh64, y.pieces[p].xxh64) << "64-bit checksums survive JSON";
      EXPECT_EQ(x.pieces[p].shape, y.pieces[p].shape);
    }
  }
  ASSERT_EQ(b.scalars.size(), a.scalars.size());
  for (const auto& [k, v] : a.scalars) {
    ASSERT_TRUE(b.scalars.count(k)) << k;
    EXPECT_EQ(v.index(), b.scalars.at(k).index()) << k;
  }
  EXPECT_EQ(std::get<std::string>(b.scalars.at("extra/note")),
            std::get<std::string>(a.scalars.at("extra/note")));
  EXPECT_EQ(std::get<double>(b.scalars.at("extra/big")), 1e300);
  EXPECT_EQ(std::get<int64_t>(b.scalars.at("scheduler/last_iter")), -7);
  EXPECT_EQ(std::get<double>(b.scalars.at("extra/lr")), 0.1) << "doubles round-trip exactly";
  ASSERT_NE(b.find_tensor("rng/cpu"), nullptr);
  EXPECT_TRUE(b.find_tensor("rng/cpu")->per_rank);
  EXPECT_EQ(b.find_tensor("nope"), nullptr);
  // The stored text names the format, so other tools can recognize it.
  const json j = json::parse(a.to_json());
  EXPECT_EQ(j.at("format"), kFormatName);
  EXPECT_EQ(j.at("format_version"), kFormatVersion);
  EXPECT_EQ(j.at("tensors")[0].at("pieces")[0].at("xxh64"), "fedcba9876543210");
}

// to_json writes the text itself: it must say exactly what a json tree of the same
// fields says, names that need escaping included.
TEST(CheckpointIndexTest, ToJsonMatchesAJsonTreeOfTheSameFields) {
  CheckpointIndex idx = SampleIndex();
  idx.tensors[0].name = "model/we\"ird\\name\t\u00e9\x01";
  json expected = {{"format", kFormatName},        {"format_version", idx.format_version},
                   {"world_size", idx.world_size}, {"iteration", idx.iteration},
                   {"created", idx.created},       {"versions", idx.versions}};
  expected["tensors"] = json::array();
  for (const auto& t : idx.tensors) {
    json pieces = json::array();
    for (const auto& p : t.pieces) {
      pieces.push_back({{"shard", p.shard}, {"row_start", p.row_start},
                        {"row_count", p.row_count}, {"bytes", p.bytes},
                        {"xxh64", hex64(p.xxh64)}, {"shape", p.shape}});
    }
    expected["tensors"].push_back({{"name", t.name}, {"dtype", t.dtype}, {"shape", t.shape},
                                   {"per_rank", t.per_rank}, {"pieces", pieces}});
  }
  expected["scalars"] = {{"scheduler/last_iter", {{"type", "int"}, {"value", -7}}},
                         {"extra/lr", {{"type", "float"}, {"value", 0.1}}},
                         {"extra/big", {{"type", "float"}, {"value", 1e300}}},
                         {"extra/note", {{"type", "string"},
                                         {"value", std::get<std::string>(idx.scalars["extra/note"])}}}};
  const std::string text = idx.to_json();
  EXPECT_EQ(json::parse(text), expected) << text;
  EXPECT_EQ(text.find('\n'), std::string::npos) << "one line";
  EXPECT_EQ(CheckpointIndex::from_json(text, "x").tensors[0].name, idx.tensors[0].name);
}

// validate() checks the struct itself (the commit checks the index it built this way,
// without a JSON round trip).
TEST(CheckpointIndexTest, ValidateChecksTheStruct) {
  EXPECT_NO_THROW(SampleIndex().validate("x"));
  CheckpointIndex gap = SampleIndex();
  gap.tensors[0].pieces[1].row_start = 4;
  try {
    gap.validate("index of 'out/model_0000099'");
    FAIL() << "expected a CheckpointError";
  } catch (const CheckpointError& e) {
    EXPECT_EQ(std::string(e.what()),
              "index of 'out/model_0000099': tensor 'model/fc1.weight': pieces do not tile rows "
              "(expected row 3, got 4)");
  }
  CheckpointIndex twice = SampleIndex();
  twice.tensors.push_back(twice.tensors[1]);
  EXPECT_THROW(twice.validate("x"), CheckpointError);
  CheckpointIndex bad_shard = SampleIndex();
  bad_shard.tensors[3].pieces[1].shard = 2;
  EXPECT_THROW(bad_shard.validate("x"), CheckpointError);
}

TEST(CheckpointIndexTest, Helpers) {
  EXPECT_EQ(shard_file_name(3, 8), "shard-00003-of-00008.h5");
  EXPECT_EQ(shard_file_name(0, 1), "shard-00000-of-00001.h5");
  EXPECT_EQ(hex64(0), "0000000000000000");
  EXPECT_EQ(hex64(std::numeric_limits<uint64_t>::max()), "ffffffffffffffff");
}

TEST(CheckpointIndexTest, WrongFormatName) {
  const std::string msg = ErrorOf(Edited([](json& j) { j["format"] = "something-else"; }));
  EXPECT_CONTAINS(msg, "ckpt/checkpoint.h5");
  EXPECT_CONTAINS(msg, "not a dtrain checkpoint index");
  EXPECT_CONTAINS(msg, "something-else");
  EXPECT_CONTAINS(ErrorOf(Edited([](json& j) { j.erase("format"); })), "not a dtrain checkpoint");
}

TEST(CheckpointIndexTest, WrongFormatVersion) {
  const std::string msg = ErrorOf(Edited([](json& j) { j["format_version"] = 2; }));
  EXPECT_CONTAINS(msg, "ckpt/checkpoint.h5");
  EXPECT_CONTAINS(msg, "format version 2");
  EXPECT_CONTAINS(msg, "version 1");
  EXPECT_CONTAINS(ErrorOf(Edited([](json& j) { j["format_version"] = 0; })), "format version 0");
}

TEST(CheckpointIndexTest, PiecesMustTileTheRows) {
  // A gap: the second piece starts at row 4.
  std::string msg = ErrorOf(Edited([](json& j) { j["tensors"][0]["pieces"][1]["row_start"] = 4; }));
  EXPECT_CONTAINS(msg, "model/fc1.weight");
  EXPECT_CONTAINS(msg, "pieces do not tile rows (expected row 3, got 4)");
  // An overlap.
  msg = ErrorOf(Edited([](json& j) { j["tensors"][0]["pieces"][1]["row_start"] = 2; }));
  EXPECT_CONTAINS(msg, "expected row 3, got 2");
  // Rows left uncovered (a piece missing).
  msg = ErrorOf(Edited([](json& j) { j["tensors"][0]["pieces"].erase(1); }));
  EXPECT_CONTAINS(msg, "model/fc1.weight");
  EXPECT_CONTAINS(msg, "pieces cover 3 of 5 rows");
  // Too many rows.
  msg = ErrorOf(Edited([](json& j) {
    j["tensors"][0]["pieces"][1]["row_count"] = 3;
    j["tensors"][0]["pieces"][1]["shape"] = {3, 2};
    j["tensors"][0]["pieces"][1]["bytes"] = 24;
  }));
  EXPECT_CONTAINS(msg, "pieces cover 6 of 5 rows");
  // A 0-d tensor without its piece.
  msg = ErrorOf(Edited([](json& j) { j["tensors"][1]["pieces"] = json::array(); }));
  EXPECT_CONTAINS(msg, "model/bn.num_batches_tracked");
  EXPECT_CONTAINS(msg, "pieces cover 0 of 1 rows");
}

TEST(CheckpointIndexTest, PieceShapeAndBytesMustMatch) {
  std::string msg = ErrorOf(Edited([](json& j) {
    j["tensors"][0]["pieces"][0]["shape"] = {3, 3};
  }));
  EXPECT_CONTAINS(msg, "model/fc1.weight");
  EXPECT_CONTAINS(msg, "records 24 bytes");
  msg = ErrorOf(Edited([](json& j) {
    j["tensors"][0]["pieces"][0]["shape"] = {2, 3};  // right bytes, wrong shape
  }));
  EXPECT_CONTAINS(msg, "has shape [2, 3], expected [3, 2]");
  msg = ErrorOf(Edited([](json& j) { j["tensors"][0]["pieces"][0]["bytes"] = 4; }));
  EXPECT_CONTAINS(msg, "(24 bytes) but records 4 bytes");
}

TEST(CheckpointIndexTest, OtherValidationErrors) {
  EXPECT_CONTAINS(ErrorOf("{not json"), "index is not valid JSON");
  EXPECT_CONTAINS(ErrorOf("{not json"), "ckpt/checkpoint.h5");
  std::string msg = ErrorOf(Edited([](json& j) { j["tensors"][0]["pieces"][1]["shard"] = 2; }));
  EXPECT_CONTAINS(msg, "names shard 2 of a 2-rank checkpoint");
  msg = ErrorOf(Edited([](json& j) { j["tensors"][0]["dtype"] = "complex64"; }));
  EXPECT_CONTAINS(msg, "unknown dtype 'complex64'");
  EXPECT_CONTAINS(msg, "model/fc1.weight");
  msg = ErrorOf(Edited([](json& j) { j["tensors"][1]["name"] = "model/fc1.weight"; }));
  EXPECT_CONTAINS(msg, "tensor 'model/fc1.weight' appears twice");
  msg = ErrorOf(Edited([](json& j) { j["scalars"]["x"] = {{"type", "complex"}, {"value", 1}}; }));
  EXPECT_CONTAINS(msg, "scalar 'x' has unknown type 'complex'");
  msg = ErrorOf(Edited([](json& j) { j.erase("tensors"); }));
  EXPECT_CONTAINS(msg, "malformed index");
  msg = ErrorOf(Edited([](json& j) { j["world_size"] = 0; }));
  EXPECT_CONTAINS(msg, "'world_size' is 0, expected an integer from 1 to 1048576");
  msg = ErrorOf(Edited([](json& j) { j["iteration"] = "seven"; }));
  EXPECT_CONTAINS(msg, "'iteration' is \"seven\", expected an integer");
}

// Hostile indexes: every integer field range-checked (no silent narrowing), arithmetic
// checked, per-rank pieces checked, names HDF5 can store.
TEST(CheckpointIndexTest, IntegersAreRangeCheckedNotNarrowed) {
  // 2^32 + 2 would become 2 through get<int>.
  std::string msg = ErrorOf(Edited([](json& j) { j["world_size"] = (int64_t{1} << 32) + 2; }));
  EXPECT_CONTAINS(msg, "'world_size' is 4294967298, expected an integer from 1 to 1048576");
  msg = ErrorOf(Edited([](json& j) { j["world_size"] = 2147483647; }));
  EXPECT_CONTAINS(msg, "'world_size' is 2147483647");
  msg = ErrorOf(Edited([](json& j) { j["tensors"][0]["pieces"][1]["shard"] = (int64_t{1} << 32) + 1; }));
  EXPECT_CONTAINS(msg, "tensor \"model/fc1.weight\": 'shard' is 4294967297");
  msg = ErrorOf(Edited([](json& j) { j["format_version"] = (int64_t{1} << 32) + 1; }));
  EXPECT_CONTAINS(msg, "'format_version' is 4294967297");
  msg = ErrorOf(Edited([](json& j) { j["iteration"] = std::numeric_limits<uint64_t>::max(); }));
  EXPECT_CONTAINS(msg, "'iteration' is 18446744073709551615");
  msg = ErrorOf(Edited([](json& j) { j["tensors"][0]["pieces"][0]["bytes"] = 24.5; }));
  EXPECT_CONTAINS(msg, "'bytes' is 24.5, expected an integer");
}

TEST(CheckpointIndexTest, RowsMustNotBeNegative) {
  std::string msg = ErrorOf(Edited([](json& j) { j["tensors"][0]["pieces"][0]["row_count"] = -3; }));
  EXPECT_CONTAINS(msg, "'row_count' is -3, expected an integer from 0");
  msg = ErrorOf(Edited([](json& j) { j["tensors"][3]["pieces"][1]["row_start"] = -5; }));
  EXPECT_CONTAINS(msg, "tensor \"rng/cpu\": 'row_start' is -5");
  msg = ErrorOf(Edited([](json& j) { j["tensors"][0]["shape"] = {-5, 2}; }));
  EXPECT_CONTAINS(msg, "shape [-5,2] has an extent that is not an integer >= 0");
}

TEST(CheckpointIndexTest, ShapesThatOverflowAreRefused) {
  // [2^62, 4] float32: numel * element_size overflows int64; bytes 0 must not pass.
  std::string msg = ErrorOf(Edited([](json& j) {
    j["tensors"][2]["shape"] = {int64_t{1} << 62, 4};
    j["tensors"][2]["pieces"][0]["shape"] = {int64_t{1} << 62, 4};
    j["tensors"][2]["pieces"][0]["row_count"] = int64_t{1} << 62;
  }));
  EXPECT_CONTAINS(msg, "tensor 'extra/empty' has shape [4611686018427387904, 4]: a negative "
                       "extent or more than 2^63 bytes");
  CheckpointIndex idx = SampleIndex();
  idx.tensors[2].pieces[0].shape = {int64_t{1} << 61, 2};
  idx.tensors[2].shape = {int64_t{1} << 61, 2};
  EXPECT_CONTAINS(testing::ThrownMessage([&] { idx.validate("x.h5"); }), "more than 2^63 bytes");
}

TEST(CheckpointIndexTest, PerRankPiecesAreChecked) {
  std::string msg = ErrorOf(Edited([](json& j) { j["tensors"][3]["pieces"][1]["row_count"] = 7; }));
  EXPECT_CONTAINS(msg, "piece of shard 1 (a per-rank value of shape [5056]) records rows [0, +7), "
                       "expected [0, +5056)");
  msg = ErrorOf(Edited([](json& j) { j["tensors"][3]["pieces"][1]["shard"] = 0; }));
  EXPECT_CONTAINS(msg, "per-rank tensor 'rng/cpu' has two values for shard 0");
  msg = ErrorOf(Edited([](json& j) { j["tensors"][3]["pieces"][1]["bytes"] = 1; }));
  EXPECT_CONTAINS(msg, "has shape [5056] (5056 bytes) but records 1 bytes");
}

TEST(CheckpointIndexTest, MalformedChecksumsAndNames) {
  std::string msg = ErrorOf(Edited([](json& j) { j["tensors"][0]["pieces"][0]["xxh64"] = "zz"; }));
  EXPECT_CONTAINS(msg, "tensor \"model/fc1.weight\": 'xxh64' is \"zz\", expected 16 hex digits");
  msg = ErrorOf(Edited([](json& j) { j["tensors"][0]["pieces"][0]["xxh64"] = "123456789abcdef01"; }));
  EXPECT_CONTAINS(msg, "expected 16 hex digits");
  msg = ErrorOf(Edited([](json& j) { j["tensors"][0]["name"] = std::string("model/fc1\0.weight", 17); }));
  EXPECT_CONTAINS(msg, "tensor name \"model/fc1\\u0000.weight\" contains a NUL byte");
  for (const char* name : {"model//w", "model/../w", "/model/w", "model/w/", "./w"}) {
    msg = ErrorOf(Edited([&](json& j) { j["tensors"][0]["name"] = name; }));
    EXPECT_CONTAINS(msg, "has an empty, '.' or '..' path component");
  }
}

TEST(ShardManifestTest, RoundTrip) {
  ShardManifest m;
  m.replicated.push_back({"model/w", {1, 4, 3, 48, 0xffffffffffffffffull, {3, 4}}});
  m.replicated.push_back({"optimizer/state/w/step", {1, 0, 1, 8, 7, {}}});
  m.per_rank.emplace_back(TensorMeta{"rng/cpu", at::kByte, {5056}},
                          PieceRecord{1, 0, 5056, 5056, 12345, {5056}});
  const ShardManifest n = ShardManifest::from_json_value(json::parse(m.to_json_value().dump()), "rank 1");
  ASSERT_EQ(n.replicated.size(), 2u);
  EXPECT_EQ(n.replicated[0].tensor, "model/w");
  EXPECT_EQ(n.replicated[0].piece.shard, 1);
  EXPECT_EQ(n.replicated[0].piece.row_start, 4);
  EXPECT_EQ(n.replicated[0].piece.row_count, 3);
  EXPECT_EQ(n.replicated[0].piece.bytes, 48);
  EXPECT_EQ(n.replicated[0].piece.xxh64, 0xffffffffffffffffull);
  EXPECT_EQ(n.replicated[0].piece.shape, (std::vector<int64_t>{3, 4}));
  EXPECT_TRUE(n.replicated[1].piece.shape.empty());
  ASSERT_EQ(n.per_rank.size(), 1u);
  EXPECT_EQ(n.per_rank[0].first.name, "rng/cpu");
  EXPECT_EQ(n.per_rank[0].first.dtype, at::kByte);
  EXPECT_EQ(n.per_rank[0].first.shape, (std::vector<int64_t>{5056}));
  EXPECT_EQ(n.per_rank[0].second.xxh64, 12345u);
  EXPECT_EQ(n.to_json_value(), m.to_json_value());
}

TEST(ShardManifestTest, MalformedNamesOrigin) {
  for (const std::string text : {"[]", "{\"replicated\": 3}", "{}",
                                 "{\"replicated\": [], "
                                 "\"per_rank\": [{\"tensor\": \"a\", \"dtype\": \"float32\"}]}"}) {
    try {
      ShardManifest::from_json_value(json::parse(text), "rank 3");
      ADD_FAILURE() << "expected an error for " << text;
    } catch (const CheckpointError& e) {
      EXPECT_CONTAINS(e.what(), "rank 3: malformed shard manifest");
    }
  }
  try {
    ShardManifest::from_json_value(
        json::parse("{\"replicated\": [], \"per_rank\": [{\"tensor\": \"a\", \"dtype\": \"float7\", "
                   "\"shape\": [], \"piece\": {}}]}"),
        "rank 2");
    ADD_FAILURE() << "expected an error";
  } catch (const CheckpointError& e) {
    EXPECT_CONTAINS(e.what(), "unknown dtype 'float7'");
  }
}

TEST(DtypeNamesTest, EveryCheckpointDtypeRoundTrips) {
  for (const char* name : {"float32", "float64", "float16", "bfloat16", "int8", "int16", "int32",
                           "int64", "uint8", "bool"}) {
    const at::ScalarType t = dtype_from_name(name, "test");
    EXPECT_EQ(h5::dtype_name(t), name);
  }
  try {
    dtype_from_name("float8", "ckpt/x.h5");
    ADD_FAILURE() << "expected an error";
  } catch (const CheckpointError& e) {
    EXPECT_CONTAINS(e.what(), "ckpt/x.h5: unknown dtype 'float8'");
  }
}

}  // namespace
}  // namespace dtrain::checkpoint
