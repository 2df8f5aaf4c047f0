// Tests of dtrain::Config: YAML merging, command-line overrides, type checks, freezing,
// error messages, to_yaml round trips and help_text (files, _BASE_ and ranges:
// config_files_test.cpp).
#include "runtime/base/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "runtime/base/error.h"
#include "tests/runtime/base/config_test_util.h"
#include "tests/test_util.h"

namespace dtrain {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using IL = std::vector<int64_t>;
using FL = std::vector<double>;
using SL = std::vector<std::string>;
using testutil::config_error;
using testutil::override_error;
using testutil::TempDir;
using testutil::yaml_error;

// ---- schema and defaults --------------------------------------------------------------

TEST(ConfigTest, DefaultsHoldEverySchemaDefault) {
  const Config cfg = Config::defaults();
  for (const ConfigKeySpec& spec : config_schema()) {
    EXPECT_EQ(cfg.get(spec.key), spec.default_value) << spec.key;
    EXPECT_TRUE(Config::has_key(spec.key)) << spec.key;
  }
  EXPECT_EQ(cfg.get_string("MODEL.NAME"), "mlp");
  EXPECT_EQ(cfg.get_string("MODEL.WEIGHTS"), "");
  EXPECT_EQ(cfg.get_int("MODEL.MLP.INPUT_DIM"), 784);
  EXPECT_EQ(cfg.get_int_list("MODEL.MLP.HIDDEN_DIMS"), (IL{2048, 2048}));
  EXPECT_DOUBLE_EQ(cfg.get_float("SOLVER.BASE_LR"), 0.01);
  EXPECT_EQ(cfg.get_float_list("SOLVER.BETAS"), (FL{0.9, 0.999}));
  EXPECT_EQ(cfg.get_int_list("SOLVER.STEPS"), IL{});
  EXPECT_EQ(cfg.get_string_list("DATASETS.TRAIN"), SL{"synthetic_classification"});
  EXPECT_TRUE(cfg.get_bool("DATALOADER.DROP_LAST"));
  EXPECT_FALSE(cfg.get_bool("CHECKPOINT.ASYNC"));
  EXPECT_FALSE(cfg.frozen());
}

TEST(ConfigTest, SchemaKeysAreUniqueAndDefaultsMatchTheirType) {
  std::set<std::string> seen;
  for (const ConfigKeySpec& spec : config_schema()) {
    EXPECT_TRUE(seen.insert(spec.key).second) << "duplicate " << spec.key;
    EXPECT_EQ(spec.default_value.index(), static_cast<size_t>(spec.type)) << spec.key;
    EXPECT_FALSE(spec.doc.empty()) << spec.key;
  }
  EXPECT_FALSE(Config::has_key("SOLVER"));
  EXPECT_FALSE(Config::has_key("SOLVER.NOPE"));
}

TEST(ConfigTest, TypeNames) {
  EXPECT_STREQ(config_type_name(ConfigType::kBool), "bool");
  EXPECT_STREQ(config_type_name(ConfigType::kInt), "int");
  EXPECT_STREQ(config_type_name(ConfigType::kFloat), "float");
  EXPECT_STREQ(config_type_name(ConfigType::kString), "string");
  EXPECT_STREQ(config_type_name(ConfigType::kIntList), "list of int");
  EXPECT_STREQ(config_type_name(ConfigType::kFloatList), "list of float");
  EXPECT_STREQ(config_type_name(ConfigType::kStringList), "list of string");
}

// ---- merging YAML ---------------------------------------------------------------------

TEST(ConfigTest, MergeYamlSetsNestedKeysOfEveryType) {
  Config cfg = Config::defaults();
  cfg.merge_yaml(R"(
MODEL:
  NAME: resnet
  RESNET:
    DEPTH: 34
DATASETS:
  TRAIN: [a.h5, b.h5]
  SYNTHETIC:
    INPUT_SHAPE:
      - 3
      - 32
      - 32
SOLVER:
  BASE_LR: 0.25
  BETAS: [0.5, 0.75]
  NESTEROV: true
  STEPS: [10, 30]
  CLIP_GRADIENTS:
    ENABLED: yes
    CLIP_VALUE: 2.5e-3
SEED: 7
)",
                 "test.yaml");
  EXPECT_EQ(cfg.get_string("MODEL.NAME"), "resnet");
  EXPECT_EQ(cfg.get_int("MODEL.RESNET.DEPTH"), 34);
  EXPECT_EQ(cfg.get_string_list("DATASETS.TRAIN"), (SL{"a.h5", "b.h5"}));
  EXPECT_EQ(cfg.get_int_list("DATASETS.SYNTHETIC.INPUT_SHAPE"), (IL{3, 32, 32}));
  EXPECT_EQ(cfg.get_float("SOLVER.BASE_LR"), 0.25);
  EXPECT_EQ(cfg.get_float_list("SOLVER.BETAS"), (FL{0.5, 0.75}));
  EXPECT_TRUE(cfg.get_bool("SOLVER.NESTEROV"));
  EXPECT_EQ(cfg.get_int_list("SOLVER.STEPS"), (IL{10, 30}));
  EXPECT_TRUE(cfg.get_bool("SOLVER.CLIP_GRADIENTS.ENABLED"));
  EXPECT_EQ(cfg.get_float("SOLVER.CLIP_GRADIENTS.CLIP_VALUE"), 2.5e-3);
  EXPECT_EQ(cfg.get_int("SEED"), 7);
  // Keys not named keep their previous values.
  EXPECT_EQ(cfg.get_int("MODEL.RESNET.WIDTH"), 64);
  EXPECT_EQ(cfg.get_string("SOLVER.OPTIMIZER"), "SGD");
}

TEST(ConfigTest, LaterMergesOverrideEarlierOnes) {
  Config cfg = Config::defaults();
  cfg.merge_yaml("SOLVER:\n  MAX_ITER: 5\n  GAMMA: 0.5\n", "a.yaml");
  cfg.merge_yaml("SOLVER:\n  MAX_ITER: 9\n", "b.yaml");
  EXPECT_EQ(cfg.get_int("SOLVER.MAX_ITER"), 9);
  EXPECT_EQ(cfg.get_float("SOLVER.GAMMA"), 0.5);
}

TEST(ConfigTest, NumericConversions) {
  Config cfg = Config::defaults();
  cfg.merge_yaml(R"(
SOLVER:
  BASE_LR: 2
  BETAS: [0, 0.5]
  EPS: 1e-6
  GAMMA: .5
  MAX_ITER: +12
  CLIP_GRADIENTS:
    NORM_TYPE: .inf
DIST:
  BUCKET_CAP_MB: 64
OUTPUT_DIR: 123
MODEL:
  WEIGHTS: 1.50
)",
                 "test.yaml");
  EXPECT_EQ(cfg.get_float("SOLVER.BASE_LR"), 2.0);
  EXPECT_EQ(cfg.get_float_list("SOLVER.BETAS"), (FL{0.0, 0.5}));
  EXPECT_EQ(cfg.get_float("SOLVER.EPS"), 1e-6);
  EXPECT_EQ(cfg.get_float("SOLVER.GAMMA"), 0.5);
  EXPECT_EQ(cfg.get_int("SOLVER.MAX_ITER"), 12);
  EXPECT_EQ(cfg.get_float("DIST.BUCKET_CAP_MB"), 64.0);  // an int for a float key
  EXPECT_EQ(cfg.get_float("SOLVER.CLIP_GRADIENTS.NORM_TYPE"),
            std::numeric_limits<double>::infinity());
  // A string key given a number keeps its text exactly as written.
  EXPECT_EQ(cfg.get_string("OUTPUT_DIR"), "123");
  EXPECT_EQ(cfg.get_string("MODEL.WEIGHTS"), "1.50");
}

TEST(ConfigTest, BoolsFollowYamlSpellingsQuotedOrNot) {
  const std::vector<std::pair<std::string, bool>> cases = {
      {"true", true},   {"false", false}, {"True", true}, {"FALSE", false}, {"yes", true},
      {"no", false},    {"on", true},     {"off", false}, {"'true'", true}, {"\"false\"", false}};
  for (const auto& [text, expected] : cases) {
    Config cfg = Config::defaults();
    cfg.merge_yaml("SOLVER:\n  NESTEROV: " + text + "\nDATALOADER:\n  SHUFFLE: " + text + "\n",
                   "test.yaml");
    EXPECT_EQ(cfg.get_bool("SOLVER.NESTEROV"), expected) << text;
    EXPECT_EQ(cfg.get_bool("DATALOADER.SHUFFLE"), expected) << text;
  }
}

TEST(ConfigTest, EmptyListFitsEveryListType) {
  Config cfg = Config::defaults();
  cfg.merge_yaml("MODEL:\n  MLP:\n    HIDDEN_DIMS: []\nSOLVER:\n  BETAS: []\nDATASETS:\n"
                 "  TRAIN: []\n",
                 "test.yaml");
  EXPECT_EQ(cfg.get_int_list("MODEL.MLP.HIDDEN_DIMS"), IL{});
  EXPECT_EQ(cfg.get_float_list("SOLVER.BETAS"), FL{});
  EXPECT_EQ(cfg.get_string_list("DATASETS.TRAIN"), SL{});
}

TEST(ConfigTest, EmptyDocumentsAndEmptySectionsChangeNothing) {
  Config cfg = Config::defaults();
  cfg.merge_yaml("", "empty.yaml");
  cfg.merge_yaml("# only a comment\n", "comment.yaml");
  cfg.merge_yaml("MODEL:\n  # NAME: resnet\nSOLVER:\n", "sections.yaml");
  EXPECT_EQ(cfg, Config::defaults());
}

TEST(ConfigTest, DottedKeysInsideYamlAreAccepted) {
  Config cfg = Config::defaults();
  cfg.merge_yaml("SOLVER.BASE_LR: 0.5\nMODEL:\n  MLP.NUM_CLASSES: 3\n", "test.yaml");
  EXPECT_EQ(cfg.get_float("SOLVER.BASE_LR"), 0.5);
  EXPECT_EQ(cfg.get_int("MODEL.MLP.NUM_CLASSES"), 3);
}

TEST(ConfigTest, FailedMergeLeavesConfigUnchanged) {
  Config cfg = Config::defaults();
  EXPECT_THROW(cfg.merge_yaml("SOLVER:\n  MAX_ITER: 7\n  BASE_LR: fast\n", "test.yaml"),
               ConfigError);
  EXPECT_EQ(cfg.get_int("SOLVER.MAX_ITER"), 100);
  EXPECT_THROW(cfg.merge_overrides({"SEED", "3", "SOLVER.MAX_ITER", "x"}), ConfigError);
  EXPECT_EQ(cfg.get_int("SEED"), 0);
  EXPECT_EQ(cfg, Config::defaults());
}

// ---- bad YAML input -------------------------------------------------------------------

TEST(ConfigErrorTest, UnknownKeyNamesFullKeyFileLineAndSuggestion) {
  const std::string msg = yaml_error("MODEL:\n  NAME: mlp\nSOLVER:\n  BASE_LRR: 0.1\n");
  EXPECT_THAT(msg, AllOf(HasSubstr("test.yaml:4"), HasSubstr("unknown config key 'SOLVER.BASE_LRR'"),
                         HasSubstr("did you mean 'SOLVER.BASE_LR'?")));
}

TEST(ConfigErrorTest, UnknownSectionNamesItsFirstKeyAndSuggestion) {
  const std::string msg = yaml_error("SEED: 1\nSOLVR:\n  BASE_LR: 0.1\n  MAX_ITER: 3\n");
  EXPECT_THAT(msg, AllOf(HasSubstr("test.yaml:2"), HasSubstr("'SOLVR.BASE_LR'"),
                         HasSubstr("did you mean 'SOLVER.BASE_LR'?")));
}

TEST(ConfigErrorTest, UnknownTopLevelKeysAndEmptySections) {
  EXPECT_THAT(yaml_error("SEEDS: 3\n"),
              AllOf(HasSubstr("unknown config key 'SEEDS'"), HasSubstr("did you mean 'SEED'?")));
  EXPECT_THAT(yaml_error("BASE_LR: 0.1\n"), HasSubstr("did you mean 'SOLVER.BASE_LR'?"));
  EXPECT_THAT(yaml_error("SOLVR: {}\n"),
              AllOf(HasSubstr("unknown config key 'SOLVR'"), HasSubstr("did you mean 'SOLVER'?")));
  // A name closer to a section than to any key suggests the section.
  EXPECT_THAT(yaml_error("SOLVER:\n  CLIP_GRADIENT: true\n"),
              HasSubstr("unknown config key 'SOLVER.CLIP_GRADIENT'; did you mean "
                        "'SOLVER.CLIP_GRADIENTS'?"));
  EXPECT_THAT(yaml_error("SOLVER:\n  _BASE_: x.yaml\n"),
              HasSubstr("unknown config key 'SOLVER._BASE_'"));
}

TEST(ConfigErrorTest, FloatForIntKey) {
  const std::string msg = yaml_error("SOLVER:\n  MAX_ITER: 1.5\n");
  EXPECT_THAT(msg, AllOf(HasSubstr("test.yaml:2"), HasSubstr("'SOLVER.MAX_ITER'"),
                         HasSubstr("expects int"), HasSubstr("'1.5'")));
}

TEST(ConfigErrorTest, WrongTypesNameKeyTypeAndValue) {
  EXPECT_THAT(yaml_error("SOLVER:\n  NESTEROV: maybe\n"),
              AllOf(HasSubstr("'SOLVER.NESTEROV' expects bool"), HasSubstr("'maybe'")));
  EXPECT_THAT(yaml_error("SOLVER:\n  BASE_LR: fast\n"),
              AllOf(HasSubstr("'SOLVER.BASE_LR' expects float"), HasSubstr("'fast'")));
  EXPECT_THAT(yaml_error("SOLVER:\n  BASE_LR: true\n"), HasSubstr("expects float, got 'true'"));
  EXPECT_THAT(yaml_error("SEED: 99999999999999999999\n"), HasSubstr("'SEED' expects int"));
  EXPECT_THAT(yaml_error("SOLVER:\n  STEPS: [10, 2.5]\n"),
              AllOf(HasSubstr("'SOLVER.STEPS' expects list of int"), HasSubstr("[10, 2.5]"),
                    HasSubstr("(element 1, '2.5', is not an int)")));
  EXPECT_THAT(yaml_error("SOLVER:\n  STEPS: 10\n"),
              HasSubstr("expects list of int, got '10'; write a list such as [10]"));
  EXPECT_THAT(yaml_error("DATASETS:\n  TRAIN: data.h5\n"),
              HasSubstr("got 'data.h5'; write a list such as [data.h5]"));
  EXPECT_THAT(yaml_error("DATASETS:\n  TRAIN: [[a]]\n"),
              HasSubstr("expects list of string, got a list [[a]]"));
  EXPECT_THAT(yaml_error("MODEL:\n  NAME: [mlp]\n"),
              HasSubstr("'MODEL.NAME' expects string, got a list [mlp]"));
  EXPECT_THAT(yaml_error("MODEL:\n  NAME: {a: 1}\n"), HasSubstr("expects string, got a mapping"));
  EXPECT_THAT(yaml_error("MODEL:\n  WEIGHTS:\n"),
              AllOf(HasSubstr("'MODEL.WEIGHTS' expects string, got null"), HasSubstr("''")));
}

TEST(ConfigErrorTest, NonMappingWhereSectionExpected) {
  EXPECT_THAT(yaml_error("MODEL: 3\n"),
              AllOf(HasSubstr("test.yaml:1"), HasSubstr("'MODEL' is a section"),
                    HasSubstr("expects a mapping"), HasSubstr("'3'")));
  EXPECT_THAT(yaml_error("MODEL:\n  MLP: [1, 2]\n"),
              AllOf(HasSubstr("'MODEL.MLP' is a section"), HasSubstr("a list [1, 2]")));
  EXPECT_THAT(yaml_error("- SEED\n- 3\n"), HasSubstr("expected a mapping of config keys"));
  EXPECT_THAT(yaml_error("just text\n"), HasSubstr("expected a mapping of config keys"));
}

TEST(ConfigErrorTest, MalformedYamlNamesFileAndLine) {
  TempDir dir;
  const std::string path = dir.write("bad.yaml", "SOLVER:\n  BASE_LR: 0.1\n MAX_ITER: 3\n");
  Config cfg = Config::defaults();
  const std::string msg = config_error([&] { cfg.merge_file(path); });
  EXPECT_THAT(msg, AllOf(HasSubstr(path + ":3:"), HasSubstr("malformed YAML")));
  EXPECT_THAT(yaml_error("SOLVER:\n  STEPS: [1, 2\nSEED: 3\n"),
              AllOf(HasSubstr("test.yaml:3:5: malformed YAML")));
}

TEST(ConfigErrorTest, DuplicateAndNonScalarKeys) {
  EXPECT_THAT(yaml_error("SEED: 1\nSEED: 2\n"),
              AllOf(HasSubstr("test.yaml:2"), HasSubstr("duplicate key 'SEED'"),
                    HasSubstr("first at line 1")));
  EXPECT_THAT(yaml_error("SOLVER:\n  GAMMA: 1\nSOLVER:\n  GAMMA: 2\n"),
              HasSubstr("duplicate key 'SOLVER'"));
  EXPECT_THAT(yaml_error("? [a, b]\n: 1\n"), HasSubstr("config keys must be names"));
}

// ---- command-line overrides -----------------------------------------------------------

TEST(ConfigOverrideTest, ValuesOfEveryType) {
  Config cfg = Config::defaults();
  cfg.merge_overrides({"SOLVER.BASE_LR", "0.1",
                       "SOLVER.MAX_ITER", "+5",
                       "SEED", "-1",
                       "SOLVER.GAMMA", "2.5e-1",
                       "SOLVER.WEIGHT_DECAY", "0",
                       "MODEL.NAME", "resnet",
                       "SOLVER.NESTEROV", "True",
                       "DATALOADER.SHUFFLE", "false",
                       "SOLVER.STEPS", "[10, 30]",
                       "MODEL.MLP.HIDDEN_DIMS", "(10, 30)",
                       "DATASETS.SYNTHETIC.INPUT_SHAPE", " ( 1, +2 ) ",
                       "SOLVER.BETAS", "(0, 0.5)",
                       "DATASETS.TRAIN", "(a, 'b c')",
                       "CHECKPOINT.PREEMPT_SIGNALS", "[SIGINT]"});
  EXPECT_EQ(cfg.get_float("SOLVER.BASE_LR"), 0.1);
  EXPECT_EQ(cfg.get_int("SOLVER.MAX_ITER"), 5);
  EXPECT_EQ(cfg.get_int("SEED"), -1);
  EXPECT_EQ(cfg.get_float("SOLVER.GAMMA"), 0.25);
  EXPECT_EQ(cfg.get_float("SOLVER.WEIGHT_DECAY"), 0.0);
  EXPECT_EQ(cfg.get_string("MODEL.NAME"), "resnet");
  EXPECT_TRUE(cfg.get_bool("SOLVER.NESTEROV"));
  EXPECT_FALSE(cfg.get_bool("DATALOADER.SHUFFLE"));
  EXPECT_EQ(cfg.get_int_list("SOLVER.STEPS"), (IL{10, 30}));
  EXPECT_EQ(cfg.get_int_list("MODEL.MLP.HIDDEN_DIMS"), (IL{10, 30}));
  EXPECT_EQ(cfg.get_int_list("DATASETS.SYNTHETIC.INPUT_SHAPE"), (IL{1, 2}));
  EXPECT_EQ(cfg.get_float_list("SOLVER.BETAS"), (FL{0.0, 0.5}));
  EXPECT_EQ(cfg.get_string_list("DATASETS.TRAIN"), (SL{"a", "b c"}));
  EXPECT_EQ(cfg.get_string_list("CHECKPOINT.PREEMPT_SIGNALS"), SL{"SIGINT"});
}

TEST(ConfigOverrideTest, TupleEdgeCases) {
  Config cfg = Config::defaults();
  cfg.merge_overrides({"SOLVER.STEPS", "(7,)", "MODEL.MLP.HIDDEN_DIMS", "()",
                       "DATASETS.TRAIN", "[]"});
  EXPECT_EQ(cfg.get_int_list("SOLVER.STEPS"), IL{7});
  EXPECT_EQ(cfg.get_int_list("MODEL.MLP.HIDDEN_DIMS"), IL{});
  EXPECT_EQ(cfg.get_string_list("DATASETS.TRAIN"), SL{});
}

TEST(ConfigOverrideTest, StringValuesAreKeptVerbatimWhereYamlWouldLoseThem) {
  Config cfg = Config::defaults();
  cfg.merge_overrides({"MODEL.WEIGHTS", "https://host:8080/m.pth", "OUTPUT_DIR", ""});
  EXPECT_EQ(cfg.get_string("MODEL.WEIGHTS"), "https://host:8080/m.pth");
  EXPECT_EQ(cfg.get_string("OUTPUT_DIR"), "");
  cfg.merge_overrides({"OUTPUT_DIR", "#run1", "MODEL.WEIGHTS", "'quoted path'"});
  EXPECT_EQ(cfg.get_string("OUTPUT_DIR"), "#run1");
  EXPECT_EQ(cfg.get_string("MODEL.WEIGHTS"), "quoted path");
  cfg.merge_overrides({"OUTPUT_DIR", "42", "MODEL.NAME", "{oops"});
  EXPECT_EQ(cfg.get_string("OUTPUT_DIR"), "42");
  EXPECT_EQ(cfg.get_string("MODEL.NAME"), "{oops");
}

TEST(ConfigOverrideTest, LaterPairsWinAndEmptyListOfTokensIsFine) {
  Config cfg = Config::defaults();
  cfg.merge_overrides({});
  cfg.merge_overrides({"SEED", "1", "SEED", "2"});
  EXPECT_EQ(cfg.get_int("SEED"), 2);
}

TEST(ConfigOverrideTest, OddTokenCountNamesUnpairedToken) {
  EXPECT_THAT(override_error({"SEED", "1", "SOLVER.BASE_LR"}),
              AllOf(HasSubstr("command line"), HasSubstr("KEY VALUE pairs"),
                    HasSubstr("'SOLVER.BASE_LR' (token 3 of 3) has no value")));
}

TEST(ConfigOverrideTest, Errors) {
  EXPECT_THAT(override_error({"SOLVER.BASE_LRR", "0.1"}),
              AllOf(HasSubstr("command line"), HasSubstr("unknown config key 'SOLVER.BASE_LRR'"),
                    HasSubstr("did you mean 'SOLVER.BASE_LR'?")));
  EXPECT_THAT(override_error({"SOLVER", "0.1"}),
              AllOf(HasSubstr("'SOLVER' is a config section"), HasSubstr("'SOLVER.OPTIMIZER'")));
  EXPECT_THAT(override_error({"SOLVER.MAX_ITER", "1.5"}),
              HasSubstr("command line: config key 'SOLVER.MAX_ITER' expects int, got '1.5'"));
  EXPECT_THAT(override_error({"SOLVER.STEPS", "(10, x)"}),
              AllOf(HasSubstr("'SOLVER.STEPS' expects list of int"), HasSubstr("element 1")));
  EXPECT_THAT(override_error({"SOLVER.STEPS", "10"}), HasSubstr("expects list of int, got '10'"));
  EXPECT_THAT(override_error({"SOLVER.NESTEROV", "2"}), HasSubstr("expects bool, got '2'"));
  EXPECT_THAT(override_error({"SOLVER.STEPS", "[1, 2"}),
              AllOf(HasSubstr("command line"), HasSubstr("cannot parse the value '[1, 2'"),
                    HasSubstr("SOLVER.STEPS")));
  EXPECT_THAT(override_error({"MODEL.NAME", "[a, b]"}), HasSubstr("expects string, got a list"));
}

// ---- set, get, freeze -----------------------------------------------------------------

TEST(ConfigSetTest, SetIsTypeChecked) {
  Config cfg = Config::defaults();
  cfg.set("SOLVER.MAX_ITER", int64_t{7});
  cfg.set("SOLVER.BASE_LR", int64_t{2});  // an int is accepted for a float key
  cfg.set("SOLVER.BETAS", IL{1, 2});      // and an int list for a float list
  cfg.set("DATASETS.TEST", IL{});         // an empty list fits any list type
  cfg.set("MODEL.NAME", "gpt");
  cfg.set("SOLVER.NESTEROV", true);
  EXPECT_EQ(cfg.get_int("SOLVER.MAX_ITER"), 7);
  EXPECT_EQ(cfg.get_float("SOLVER.BASE_LR"), 2.0);
  EXPECT_EQ(cfg.get_float_list("SOLVER.BETAS"), (FL{1.0, 2.0}));
  EXPECT_EQ(cfg.get_string_list("DATASETS.TEST"), SL{});
  EXPECT_EQ(cfg.get_string("MODEL.NAME"), "gpt");
  EXPECT_TRUE(cfg.get_bool("SOLVER.NESTEROV"));

  EXPECT_THAT(config_error([&] { cfg.set("SOLVER.MAX_ITER", 1.5); }),
              AllOf(HasSubstr("'SOLVER.MAX_ITER' expects int, got float 1.5")));
  EXPECT_THAT(config_error([&] { cfg.set("MODEL.NAME", int64_t{3}); }),
              HasSubstr("'MODEL.NAME' expects string, got int 3"));
  EXPECT_THAT(config_error([&] { cfg.set("SOLVER.STEPS", SL{"a"}); }),
              HasSubstr("expects list of int, got list of string [a]"));
  EXPECT_THAT(config_error([&] { cfg.set("SOLVER.BASE_LRR", 1.0); }),
              HasSubstr("did you mean 'SOLVER.BASE_LR'?"));
  EXPECT_EQ(cfg.get_int("SOLVER.MAX_ITER"), 7);
}

TEST(ConfigGetTest, GettersCheckKeyAndType) {
  const Config cfg = Config::defaults();
  EXPECT_THAT(config_error([&] { cfg.get_int("SOLVER.BASE_LR"); }),
              HasSubstr("config key 'SOLVER.BASE_LR' is float, not int"));
  EXPECT_THAT(config_error([&] { cfg.get_float("SOLVER.MAX_ITER"); }),
              HasSubstr("'SOLVER.MAX_ITER' is int, not float"));
  EXPECT_THAT(config_error([&] { cfg.get_string_list("SOLVER.STEPS"); }),
              HasSubstr("is list of int, not list of string"));
  EXPECT_THAT(config_error([&] { cfg.get_bool("SOLVER.NESTROV"); }),
              AllOf(HasSubstr("unknown config key 'SOLVER.NESTROV'"),
                    HasSubstr("did you mean 'SOLVER.NESTEROV'?")));
  EXPECT_THAT(config_error([&] { cfg.get("MODEL.MLP"); }),
              HasSubstr("'MODEL.MLP' is a config section, not a key"));
}

TEST(ConfigFreezeTest, FrozenConfigRejectsEveryMutation) {
  TempDir dir;
  const std::string file = dir.write("a.yaml", "SEED: 3\n");
  Config cfg = Config::defaults();
  cfg.freeze();
  EXPECT_TRUE(cfg.frozen());
  EXPECT_THAT(config_error([&] { cfg.set("SEED", int64_t{1}); }),
              AllOf(HasSubstr("cannot set 'SEED'"), HasSubstr("frozen")));
  EXPECT_THAT(config_error([&] { cfg.merge_yaml("SEED: 1\n", "x.yaml"); }),
              AllOf(HasSubstr("x.yaml"), HasSubstr("frozen")));
  EXPECT_THAT(config_error([&] { cfg.merge_file(file); }),
              AllOf(HasSubstr(file), HasSubstr("frozen")));
  EXPECT_THAT(config_error([&] { cfg.merge_overrides({"SEED", "1"}); }),
              AllOf(HasSubstr("command line"), HasSubstr("frozen")));
  EXPECT_EQ(cfg.get_int("SEED"), 0);  // reads still work

  const Config copy = cfg;
  EXPECT_TRUE(copy.frozen());
  cfg.defrost();
  cfg.merge_file(file);
  EXPECT_EQ(cfg.get_int("SEED"), 3);
}

// ---- to_yaml, help_text, closest_key --------------------------------------------------

TEST(ConfigYamlTest, DumpIsNestedWithFlowListsAndFloatSpellings) {
  const std::string yaml = Config::defaults().to_yaml();
  EXPECT_EQ(yaml.rfind("MODEL:\n  NAME: mlp\n  WEIGHTS: \"\"\n  DEVICE: cpu\n  MLP:\n"
                       "    INPUT_DIM: 784\n    HIDDEN_DIMS: [2048, 2048]\n",
                       0),
            0u)
      << yaml;
  EXPECT_THAT(yaml, HasSubstr("\n  TRAIN: [synthetic_classification]\n  TEST: []\n"));
  EXPECT_THAT(yaml, HasSubstr("\n  BASE_LR: 0.01\n"));
  EXPECT_THAT(yaml, HasSubstr("\n  EPS: 1.0e-08\n"));
  EXPECT_THAT(yaml, HasSubstr("\n  BETAS: [0.9, 0.999]\n"));
  EXPECT_THAT(yaml, HasSubstr("\n  CLIP_GRADIENTS:\n    ENABLED: false\n    CLIP_TYPE: value\n"
                              "    CLIP_VALUE: 1.0\n    NORM_TYPE: 2.0\n"));
  EXPECT_THAT(yaml, HasSubstr("\n  BASE_LR_END: 0.0\n"));
  EXPECT_THAT(yaml, HasSubstr("\nOUTPUT_DIR: ./output\nSEED: 0\n"));
  EXPECT_THAT(yaml, HasSubstr("\n  PREEMPT_SIGNALS: [SIGTERM, SIGUSR1]\n"));

  // Every section appears once, as a nested mapping YAML itself can read.
  const YAML::Node root = YAML::Load(yaml);
  EXPECT_TRUE(root["SOLVER"]["CLIP_GRADIENTS"].IsMap());
  EXPECT_EQ(root["SOLVER"]["STEPS"].size(), 0u);
  EXPECT_EQ(root["MODEL"]["MLP"]["HIDDEN_DIMS"][1].as<int>(), 2048);
}

TEST(ConfigYamlTest, DefaultsRoundTrip) {
  const Config cfg = Config::defaults();
  Config reloaded = Config::defaults();
  reloaded.merge_overrides({"SEED", "9", "SOLVER.BASE_LR", "3"});
  reloaded.merge_yaml(cfg.to_yaml(), "config.yaml");
  EXPECT_EQ(reloaded, cfg);
}

TEST(ConfigYamlTest, TrickyValuesRoundTripExactly) {
  Config cfg = Config::defaults();
  cfg.set("SOLVER.BASE_LR", 0.1 + 0.2);
  cfg.set("SOLVER.GAMMA", 1.0 / 3.0);
  cfg.set("SOLVER.EPS", 5e-324);
  cfg.set("SOLVER.WEIGHT_DECAY", 1e21);
  cfg.set("SOLVER.BASE_LR_END", 1.7976931348623157e308);
  cfg.set("SOLVER.CLIP_GRADIENTS.NORM_TYPE", std::numeric_limits<double>::infinity());
  cfg.set("SOLVER.WARMUP_FACTOR", 123456789.0);
  cfg.set("SOLVER.BETAS", FL{2.2250738585072014e-308, 0.9999999999999999});
  cfg.set("SEED", -1);
  cfg.set("SOLVER.STEPS", IL{9000000000000000, 0});
  cfg.set("OUTPUT_DIR", "dir with \"quotes\", a \\ backslash, a: colon # and hash\n\ttab");
  cfg.set("MODEL.WEIGHTS", "caf\xc3\xa9/\x01.pt");
  cfg.set("MODEL.NAME", "true");
  cfg.set("MODEL.DEVICE", "null");
  cfg.set("SOLVER.OPTIMIZER", "-1.5");
  cfg.set("SOLVER.LR_SCHEDULER_NAME", ".inf");
  cfg.set("SOLVER.WARMUP_METHOD", "  spaced  ");
  cfg.set("DATASETS.TRAIN", SL{"a, b", "[c]", "", "~", "yes", "x'y", "{d}"});
  cfg.set("DATASETS.TEST", SL{"0x10", "2020-01-01", "- item"});
  const std::string yaml = cfg.to_yaml();
  EXPECT_THAT(yaml, HasSubstr("\n  WARMUP_FACTOR: 123456789.0\n"));
  EXPECT_THAT(yaml, HasSubstr("\n  WEIGHT_DECAY: 1.0e+21\n"));
  EXPECT_THAT(yaml, HasSubstr("\n    NORM_TYPE: .inf\n"));
  EXPECT_THAT(yaml, HasSubstr("\n  NAME: \"true\"\n"));

  Config reloaded = Config::defaults();
  reloaded.merge_yaml(yaml, "config.yaml");
  EXPECT_EQ(reloaded, cfg) << yaml;
  EXPECT_EQ(reloaded.get_float("SOLVER.BASE_LR"), 0.1 + 0.2);
  EXPECT_EQ(reloaded.get_string("OUTPUT_DIR"), cfg.get_string("OUTPUT_DIR"));
  EXPECT_EQ(reloaded.get_string_list("DATASETS.TRAIN"), cfg.get_string_list("DATASETS.TRAIN"));
  EXPECT_EQ(reloaded.to_yaml(), yaml);
}

TEST(ConfigYamlTest, OutOfRangeValuesAreWrittenButNotReadBack) {
  // set() checks types only; the dump still spells every value, and merging it refuses
  // the ones outside their range.
  Config cfg = Config::defaults();
  cfg.set("SOLVER.MOMENTUM", -0.5);
  cfg.set("DIST.BUCKET_CAP_MB", std::numeric_limits<double>::infinity());
  cfg.set("SEED", std::numeric_limits<int64_t>::min());
  const std::string yaml = cfg.to_yaml();
  EXPECT_THAT(yaml, HasSubstr("\n  MOMENTUM: -0.5\n"));
  EXPECT_THAT(yaml, HasSubstr("\n  BUCKET_CAP_MB: .inf\n"));
  EXPECT_THAT(yaml, HasSubstr("\nSEED: -9223372036854775808\n"));
  Config reloaded = Config::defaults();
  EXPECT_THAT(config_error([&] { reloaded.merge_yaml(yaml, "config.yaml"); }),
              HasSubstr("config key 'SOLVER.MOMENTUM' is -0.5, outside its allowed range [0, 1]"));
  EXPECT_EQ(reloaded, Config::defaults());  // all or nothing
}

TEST(ConfigYamlTest, FileRoundTripThroughMergeFile) {
  TempDir dir;
  Config cfg = Config::defaults();
  cfg.merge_overrides({"MODEL.NAME", "gpt", "SOLVER.STEPS", "(10, 30)", "SOLVER.BASE_LR", "1"});
  const std::string path = dir.write("config.yaml", cfg.to_yaml());
  EXPECT_EQ(Config::from_file(path), cfg);
}

TEST(ConfigHelpTest, ListsEveryKeyWithTypeDefaultAndDocInSchemaOrder) {
  const std::string help = Config::help_text();
  size_t previous = 0;
  for (const ConfigKeySpec& spec : config_schema()) {
    const size_t at = help.find("  " + spec.key + " ");
    ASSERT_NE(at, std::string::npos) << spec.key;
    EXPECT_GT(at, previous) << spec.key << " out of schema order";
    previous = at;
    const std::string entry = help.substr(at, help.find('\n', help.find('\n', at) + 1) - at);
    EXPECT_THAT(entry, HasSubstr(config_type_name(spec.type))) << spec.key;
    EXPECT_THAT(entry, HasSubstr(spec.doc)) << spec.key;
  }
  EXPECT_THAT(help, HasSubstr("\nSOLVER:\n"));
  EXPECT_THAT(help, HasSubstr("\nMODEL:\n"));
  EXPECT_THAT(help, HasSubstr("SOLVER.BASE_LR"));
  EXPECT_THAT(help, HasSubstr("0.01\n      base learning rate\n"));
  EXPECT_THAT(help, HasSubstr("[2048, 2048]\n      mlp: width of each hidden layer\n"
                              "      allowed: each element [1, 2147483647]\n"));
  EXPECT_THAT(help, HasSubstr("      base learning rate\n      allowed: finite, >= 0\n"));
  EXPECT_THAT(help, HasSubstr("      gradient all-reduce bucket size in MiB\n"
                              "      allowed: (0, 1048576]\n"));
  EXPECT_THAT(help, HasSubstr("norm clipping\n      allowed: > 0 or .inf\n"));
}

TEST(ConfigClosestKeyTest, FindsTheNearestDeclaredKey) {
  for (const ConfigKeySpec& spec : config_schema()) {
    EXPECT_EQ(Config::closest_key(spec.key), spec.key);
  }
  EXPECT_EQ(Config::closest_key("SOLVER.BASE_LRR"), "SOLVER.BASE_LR");
  EXPECT_EQ(Config::closest_key("SOLVER.BAES_LR"), "SOLVER.BASE_LR");  // transposition
  EXPECT_EQ(Config::closest_key("solver.base_lr"), "SOLVER.BASE_LR");  // case
  EXPECT_EQ(Config::closest_key("SOLVR.BASE_LR"), "SOLVER.BASE_LR");
  EXPECT_EQ(Config::closest_key("BASE_LR"), "SOLVER.BASE_LR");  // section left out
  EXPECT_EQ(Config::closest_key("MLP.HIDEN_DIMS"), "MODEL.MLP.HIDDEN_DIMS");
  EXPECT_EQ(Config::closest_key("MODEL.MLP.HIDEN_DIMS"), "MODEL.MLP.HIDDEN_DIMS");
  EXPECT_EQ(Config::closest_key("SED"), "SEED");
  EXPECT_EQ(Config::closest_key("OUTPUTDIR"), "OUTPUT_DIR");
  EXPECT_EQ(Config::closest_key("CHECKPOINT.MAX_KEEP"), "CHECKPOINT.MAX_TO_KEEP");
}

}  // namespace
}  // namespace dtrain
