// Key matching (fvcore's prefix strip, detectron2's suffix heuristics) on names of the
// reference models.
#include <gtest/gtest.h>

#include "checkpoint/interop/matching.h"
#include "runtime/base/error.h"
#include "tests/gtest_util.h"

namespace dtrain::interop {
namespace {

using dtrain::testing::ThrownMessage;

KeyShapes Gpt(const std::string& prefix) {
  return {{prefix + "wte.weight", {50, 8}},
          {prefix + "h.0.attn.c_attn.weight", {24, 8}},
          {prefix + "h.0.attn.c_proj.weight", {8, 8}},
          {prefix + "h.1.attn.c_attn.weight", {24, 8}},
          {prefix + "ln_f.weight", {8}}};
}

TEST(MatchingTest, ExactNamesNeedNoHeuristics) {
  KeyMatch m = match_keys(Gpt("transformer."), Gpt("transformer."), false);
  EXPECT_TRUE(m.clean());
  EXPECT_EQ(m.matched.size(), 5u);
  EXPECT_CONTAINS(m.table(), "5 keys matched by name, 0 by suffix");
}

TEST(MatchingTest, SuffixHeuristicsFindTheModelsLongerNamesAndBack) {
  // The file lacks the model's "transformer." prefix: h.0.attn... -> transformer.h.0.attn...
  KeyMatch off = match_keys(Gpt("transformer."), Gpt(""), false);
  EXPECT_EQ(off.unmatched_model.size(), 5u);
  EXPECT_EQ(off.unused_loaded.size(), 5u);
  KeyMatch m = match_keys(Gpt("transformer."), Gpt(""), true);
  EXPECT_TRUE(m.clean()) << m.table();
  ASSERT_EQ(m.matched.size(), 5u);
  EXPECT_EQ(m.matched[1].model_key, "transformer.h.0.attn.c_attn.weight");
  EXPECT_EQ(m.matched[1].loaded_key, "h.0.attn.c_attn.weight");
  EXPECT_CONTAINS(m.table(), "matched    | transformer.h.0.attn.c_attn.weight <- h.0.attn.c_attn.weight");
  // The other way: the file has a longer prefix than the model.
  KeyMatch back = match_keys(Gpt(""), Gpt("backbone.transformer."), true);
  EXPECT_TRUE(back.clean()) << back.table();
}

TEST(MatchingTest, SuffixesMatchOnlyAtDots) {
  KeyMatch m = match_keys({{"fc1.weight", {2}}}, {{"c1.weight", {2}}}, true);
  EXPECT_EQ(m.unmatched_model, std::vector<std::string>{"fc1.weight"});
  EXPECT_EQ(m.unused_loaded, std::vector<std::string>{"c1.weight"});
}

TEST(MatchingTest, TheLongestSuffixWins) {
  KeyMatch m = match_keys({{"roi.box.fc.weight", {2}}},
                          {{"fc.weight", {2}}, {"box.fc.weight", {2}}}, true);
  ASSERT_EQ(m.matched.size(), 1u);
  EXPECT_EQ(m.matched[0].loaded_key, "box.fc.weight");
  EXPECT_EQ(m.unused_loaded, std::vector<std::string>{"fc.weight"});
}

TEST(MatchingTest, ShapeMismatchesAreReportedWithBothShapesAndNotLoaded) {
  KeyMatch m = match_keys({{"fc.weight", {10, 4}}, {"fc.bias", {10}}},
                          {{"fc.weight", {1000, 4}}, {"fc.bias", {10}}}, false);
  ASSERT_EQ(m.shape_mismatch.size(), 1u);
  EXPECT_EQ(m.matched.size(), 1u);
  EXPECT_CONTAINS(m.table(), "shape      | fc.weight <- fc.weight | loaded [1000, 4] vs model [10, 4]");
}

TEST(MatchingTest, DdpModulePrefixIsStrippedWhenEveryKeyHasIt) {
  KeyMatch m = match_keys(Gpt(""), Gpt("module."), false);
  EXPECT_TRUE(m.clean()) << m.table();
  EXPECT_EQ(m.stripped_prefix, "module.");
  EXPECT_CONTAINS(m.table(), "'module.' stripped from every loaded key");
  // Not when only some keys have it.
  KeyShapes mixed = Gpt("module.");
  mixed[0].first = "wte.weight";
  EXPECT_EQ(match_keys(Gpt(""), mixed, false).stripped_prefix, "");
}

TEST(MatchingTest, OneLoadedKeyForTwoModelKeysIsAnError) {
  const std::string msg = ThrownMessage<CheckpointError>([] {
    match_keys({{"a.fc.weight", {2}}, {"b.fc.weight", {2}}}, {{"fc.weight", {2}}}, true);
  });
  EXPECT_CONTAINS(msg, "loaded key 'fc.weight' matches two model keys, 'a.fc.weight' and 'b.fc.weight'");
}

TEST(MatchingTest, EqualSuffixesOfTwoLoadedKeysAreLeftUnmatched) {
  KeyMatch m = match_keys({{"fc.weight", {2}}}, {{"a.fc.weight", {2}}, {"b.fc.weight", {2}}}, true);
  EXPECT_EQ(m.unmatched_model, std::vector<std::string>{"fc.weight"});
}

}  // namespace
}  // namespace dtrain::interop
