// Tests of dtrain::Config's files and numbers: _BASE_ chains and lists (relative paths,
// cycles, limits), files that are not configs (never quoted), special files, and the
// numeric ranges every key declares.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "runtime/base/config.h"
#include "runtime/base/error.h"
#include "tests/runtime/base/config_test_util.h"
#include "tests/test_util.h"

namespace dtrain {
namespace {

namespace stdfs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using testutil::config_error;
using testutil::override_error;
using testutil::ScopedChdir;
using testutil::TempDir;
using testutil::yaml_error;

// ---- numeric ranges --------------------------------------------------------------------

TEST(ConfigRangeTest, EveryNumericKeyHasARangeHoldingItsDefault) {
  for (const ConfigKeySpec& spec : config_schema()) {
    const bool numeric = spec.type == ConfigType::kInt || spec.type == ConfigType::kFloat ||
                         spec.type == ConfigType::kIntList || spec.type == ConfigType::kFloatList;
    ASSERT_EQ(spec.range.has_value(), numeric) << spec.key;
    if (!numeric) continue;
    // The default goes through the same check as a merged value.
    Config cfg = Config::defaults();
    EXPECT_NO_THROW(cfg.merge_yaml(cfg.to_yaml(), "defaults")) << spec.key;
  }
}

TEST(ConfigRangeTest, OutOfRangeValuesNameKeyValueAndRange) {
  const std::string range = "allowed range (0, 1048576]";
  for (const char* v : {".nan", "-1", "1e30", "0", ".inf"}) {
    EXPECT_THAT(override_error({"DIST.BUCKET_CAP_MB", v}),
                AllOf(HasSubstr("command line: config key 'DIST.BUCKET_CAP_MB' is "),
                      HasSubstr(range)))
        << v;
  }
  EXPECT_THAT(override_error({"DIST.BUCKET_CAP_MB", "1e30"}), HasSubstr("is 1.0e+30, outside"));
  EXPECT_THAT(override_error({"DIST.BUCKET_CAP_MB", ".nan"}), HasSubstr("is .nan, outside"));
  EXPECT_THAT(yaml_error("CHECKPOINT:\n  MAX_TO_KEEP: -1\n"),
              HasSubstr("test.yaml:2: config key 'CHECKPOINT.MAX_TO_KEEP' is -1, outside its "
                        "allowed range [0, 9000000000000000]"));
  EXPECT_THAT(yaml_error("SOLVER:\n  BASE_LR: .nan\n"),
              HasSubstr("'SOLVER.BASE_LR' is .nan, outside its allowed range finite, >= 0"));
  EXPECT_THAT(yaml_error("SOLVER:\n  BASE_LR: .inf\n"), HasSubstr("is .inf, outside"));
  EXPECT_THAT(override_error({"SOLVER.STEPS", "(10, -3)"}),
              HasSubstr("config key 'SOLVER.STEPS' element 1 is -3, outside its allowed range"));
  EXPECT_THAT(override_error({"SOLVER.BETAS", "[0.9, 1]"}),
              HasSubstr("'SOLVER.BETAS' element 1 is 1.0, outside its allowed range [0, 1)"));
  EXPECT_THAT(override_error({"MODEL.MLP.INPUT_DIM", "0"}),
              HasSubstr("'MODEL.MLP.INPUT_DIM' is 0, outside its allowed range [1, 2147483647]"));
  EXPECT_THAT(override_error({"SOLVER.CLIP_GRADIENTS.NORM_TYPE", "-.inf"}),
              HasSubstr("allowed range > 0 or .inf"));
  // Bounds themselves, where inclusive, and infinity where it means something.
  Config cfg = Config::defaults();
  cfg.merge_overrides({"DIST.BUCKET_CAP_MB", "1048576", "CHECKPOINT.MAX_TO_KEEP", "0",
                       "SOLVER.CLIP_GRADIENTS.NORM_TYPE", ".inf", "SEED", "-1",
                       "SYSTEM.NUM_THREADS", "4096"});
  EXPECT_EQ(cfg.get_float("DIST.BUCKET_CAP_MB"), 1048576.0);
  // A refused merge changes nothing.
  Config before = cfg;
  EXPECT_THAT(config_error([&] { cfg.merge_overrides({"SEED", "5", "SYSTEM.NUM_THREADS", "-2"}); }),
              HasSubstr("'SYSTEM.NUM_THREADS' is -2"));
  EXPECT_EQ(cfg, before);
}

TEST(ConfigRangeTest, RangeText) {
  EXPECT_EQ((ConfigRange{0, HUGE_VAL}).text(false), "finite, >= 0");
  EXPECT_EQ((ConfigRange{0, HUGE_VAL}).text(true), ">= 0");
  EXPECT_EQ((ConfigRange{0, HUGE_VAL, true, false, true}).text(false), "> 0 or .inf");
  EXPECT_EQ((ConfigRange{0, 1, false, true}).text(false), "[0, 1)");
  EXPECT_EQ((ConfigRange{-HUGE_VAL, 5}).text(true), "<= 5");
  EXPECT_FALSE((ConfigRange{}).contains(std::nan("")));
  EXPECT_FALSE((ConfigRange{}).contains(HUGE_VAL));
  EXPECT_TRUE((ConfigRange{0, HUGE_VAL, true, false, true}).contains(HUGE_VAL));
  EXPECT_FALSE((ConfigRange{0, HUGE_VAL, true, false, true}).contains(-HUGE_VAL));
}

// ---- files and _BASE_ -----------------------------------------------------------------

TEST(ConfigBaseTest, TwoLevelsOfRelativeBases) {
  TempDir dir;
  dir.write("configs/Base.yaml", "SOLVER:\n  BASE_LR: 0.5\n  MAX_ITER: 10\n  GAMMA: 0.2\n");
  dir.write("configs/sub/mid.yaml",
            "_BASE_: ../Base.yaml\nSOLVER:\n  MAX_ITER: 20\nMODEL:\n  NAME: gpt\n");
  const std::string leaf =
      dir.write("configs/sub/deep/leaf.yaml", "_BASE_: \"../mid.yaml\"\nSOLVER:\n  GAMMA: 0.3\n");
  const Config cfg = Config::from_file(leaf);
  EXPECT_EQ(cfg.get_float("SOLVER.BASE_LR"), 0.5);  // from Base.yaml
  EXPECT_EQ(cfg.get_int("SOLVER.MAX_ITER"), 20);    // mid.yaml overrides Base.yaml
  EXPECT_EQ(cfg.get_float("SOLVER.GAMMA"), 0.3);    // leaf.yaml overrides both
  EXPECT_EQ(cfg.get_string("MODEL.NAME"), "gpt");
  EXPECT_EQ(cfg.get_int("SEED"), 0);
}

TEST(ConfigBaseTest, RelativeFilePathFromWorkingDirectory) {
  TempDir dir;
  dir.write("configs/Base.yaml", "SEED: 5\n");
  dir.write("configs/a.yaml", "_BASE_: Base.yaml\nLOG:\n  PERIOD: 3\n");
  ScopedChdir cd(dir.path());
  const Config cfg = Config::from_file("configs/a.yaml");
  EXPECT_EQ(cfg.get_int("SEED"), 5);
  EXPECT_EQ(cfg.get_int("LOG.PERIOD"), 3);
  // merge_yaml resolves _BASE_ against the working directory.
  Config text_cfg = Config::defaults();
  text_cfg.merge_yaml("_BASE_: configs/Base.yaml\nLOG:\n  PERIOD: 4\n", "inline");
  EXPECT_EQ(text_cfg.get_int("SEED"), 5);
  EXPECT_EQ(text_cfg.get_int("LOG.PERIOD"), 4);
}

TEST(ConfigBaseTest, AbsoluteBasePath) {
  TempDir dir;
  const std::string base = dir.write("elsewhere/base.yaml", "SEED: 11\n");
  const std::string top = dir.write("top/top.yaml", "_BASE_: " + base + "\n");
  EXPECT_EQ(Config::from_file(top).get_int("SEED"), 11);
}

TEST(ConfigBaseTest, MissingBaseNamesBothFiles) {
  TempDir dir;
  const std::string top = dir.write("top.yaml", "_BASE_: missing/nope.yaml\nSEED: 1\n");
  const std::string msg = config_error([&] { Config::from_file(top); });
  EXPECT_THAT(msg, AllOf(HasSubstr(top), HasSubstr("_BASE_ file 'missing/nope.yaml' not found"),
                         HasSubstr(dir / "missing/nope.yaml")));
}

TEST(ConfigBaseTest, MissingTopLevelFile) {
  TempDir dir;
  const std::string path = dir / "absent.yaml";
  EXPECT_THAT(config_error([&] { Config::from_file(path); }),
              HasSubstr("config file '" + path + "' not found"));
}

TEST(ConfigBaseTest, CyclesAreDetected) {
  TempDir dir;
  const std::string a = dir.write("a.yaml", "_BASE_: sub/b.yaml\nSEED: 1\n");
  dir.write("sub/b.yaml", "_BASE_: ../a.yaml\nSEED: 2\n");
  const std::string msg = config_error([&] { Config::from_file(a); });
  EXPECT_THAT(msg, AllOf(HasSubstr("cycle"), HasSubstr("a.yaml -> "), HasSubstr("b.yaml -> ")));
  const std::string self = dir.write("self.yaml", "_BASE_: self.yaml\n");
  EXPECT_THAT(config_error([&] { Config::from_file(self); }),
              AllOf(HasSubstr("cycle"), HasSubstr(self + " -> ")));
}

TEST(ConfigBaseTest, ErrorsInsideABaseNameTheBaseFile) {
  TempDir dir;
  const std::string base = dir.write("base.yaml", "SEED: 1\nSOLVER:\n  MAX_ITER: many\n");
  const std::string top = dir.write("top.yaml", "_BASE_: base.yaml\n");
  EXPECT_THAT(config_error([&] { Config::from_file(top); }),
              AllOf(HasSubstr(base + ":3"), HasSubstr("'SOLVER.MAX_ITER' expects int")));
}

TEST(ConfigBaseTest, BadBaseValues) {
  EXPECT_THAT(yaml_error("_BASE_: {a: 1}\n"),
              AllOf(HasSubstr("test.yaml:1"),
                    HasSubstr("_BASE_ expects the path of a config file or a list of paths")));
  EXPECT_THAT(yaml_error("_BASE_: ''\n"), HasSubstr("_BASE_ expects the path"));
  EXPECT_THAT(yaml_error("_BASE_: [a.yaml, [b.yaml]]\n"),
              AllOf(HasSubstr("test.yaml:1"), HasSubstr("_BASE_ element 1 is not a path")));
  EXPECT_THAT(yaml_error("_BASE_: a.yaml\n_BASE_: b.yaml\n"),
              HasSubstr("duplicate key '_BASE_'"));
}

TEST(ConfigBaseTest, ListOfBasesLaterOverridesEarlierAndTheFileOverridesAll) {
  TempDir dir;
  dir.write("configs/a.yaml", "SEED: 1\nSOLVER:\n  GAMMA: 0.2\n  MAX_ITER: 7\n");
  dir.write("configs/common/Base.yaml", "LOG:\n  PERIOD: 9\nSOLVER:\n  MAX_ITER: 1\n");
  // b.yaml has a base of its own, relative to b.yaml's folder.
  dir.write("configs/sub/b.yaml", "_BASE_: ../common/Base.yaml\nSEED: 2\nSOLVER:\n  EPS: 0.5\n");
  const std::string top = dir.write(
      "configs/top.yaml", "_BASE_: [a.yaml, sub/b.yaml]\nSOLVER:\n  EPS: 0.25\n");
  const Config cfg = Config::from_file(top);
  EXPECT_EQ(cfg.get_int("SEED"), 2);                 // b.yaml overrides a.yaml
  EXPECT_EQ(cfg.get_float("SOLVER.GAMMA"), 0.2);     // only in a.yaml
  EXPECT_EQ(cfg.get_int("SOLVER.MAX_ITER"), 1);      // b's own base comes after a.yaml
  EXPECT_EQ(cfg.get_int("LOG.PERIOD"), 9);           // through b.yaml's base
  EXPECT_EQ(cfg.get_float("SOLVER.EPS"), 0.25);      // the file itself wins over all
  // The same base twice (a diamond) is not a cycle; an empty list merges nothing.
  const std::string twice =
      dir.write("configs/twice.yaml", "_BASE_: [a.yaml, sub/../a.yaml]\nLOG:\n  PERIOD: 4\n");
  EXPECT_EQ(Config::from_file(twice).get_int("SEED"), 1);
  const std::string none = dir.write("configs/none.yaml", "_BASE_: []\nSEED: 6\n");
  EXPECT_EQ(Config::from_file(none).get_int("SEED"), 6);
}

TEST(ConfigBaseTest, ListOfBasesErrors) {
  TempDir dir;
  dir.write("a.yaml", "SEED: 1\n");
  const std::string top = dir.write("top.yaml", "_BASE_: [a.yaml, gone.yaml]\n");
  EXPECT_THAT(config_error([&] { Config::from_file(top); }),
              AllOf(HasSubstr(top), HasSubstr("_BASE_ file 'gone.yaml' not found")));
  // A cycle through a list element.
  const std::string c1 = dir.write("c1.yaml", "_BASE_: [a.yaml, c2.yaml]\n");
  dir.write("c2.yaml", "_BASE_: [c1.yaml]\n");
  EXPECT_THAT(config_error([&] { Config::from_file(c1); }),
              AllOf(HasSubstr("cycle"), HasSubstr("c1.yaml -> "), HasSubstr("c2.yaml -> ")));
  // Fan-out: every file lists the next one twice, 2^10 merges in all.
  for (int i = 0; i < 10; ++i) {
    dir.write(fmt::format("f{}.yaml", i),
              fmt::format("_BASE_: [f{}.yaml, f{}.yaml]\n", i + 1, i + 1));
  }
  dir.write("f10.yaml", "SEED: 3\n");
  EXPECT_THAT(config_error([&] { Config::from_file(dir / "f0.yaml"); }),
              AllOf(HasSubstr("too many config files"), HasSubstr("256")));
  // Depth: a chain of 40 distinct files.
  for (int i = 0; i < 40; ++i) dir.write(fmt::format("d{}.yaml", i), fmt::format("_BASE_: d{}.yaml\n", i + 1));
  dir.write("d40.yaml", "SEED: 3\n");
  EXPECT_THAT(config_error([&] { Config::from_file(dir / "d0.yaml"); }),
              AllOf(HasSubstr("too many config files"), HasSubstr("33 nested")));
}

TEST(ConfigBaseTest, AFileThatIsNotAConfigIsNeverQuoted) {
  TempDir dir;
  // What `_BASE_: /etc/shadow` would find: one plain scalar of secrets.
  const std::string secret = dir.write("shadow", "root:$6$s3cr3tHash:19000:0:99999:7:::\n");
  const std::string top = dir.write("top.yaml", "_BASE_: " + secret + "\n");
  std::string msg = config_error([&] { Config::from_file(top); });
  // It reads as a mapping with one key (the line ends in ':'), which is no key name.
  EXPECT_THAT(msg, AllOf(HasSubstr(secret + ":1: not a config file"),
                         HasSubstr("a top-level key that is no config key name")));
  EXPECT_THAT(msg, Not(HasSubstr("s3cr3t")));
  EXPECT_THAT(msg, Not(HasSubstr("root")));
  // /etc/passwd-like text is one plain scalar.
  const std::string passwd = dir.write("passwd", "root:x:0:0:s3cr3t:/root:/bin/bash\n");
  msg = config_error([&] { Config::from_file(passwd); });
  EXPECT_THAT(msg, AllOf(HasSubstr("expected a mapping of config keys"),
                         HasSubstr("plain text (a YAML scalar)"), Not(HasSubstr("s3cr3t"))));
  // A list, and YAML that does not parse, with the offending text in yaml-cpp's message.
  const std::string list = dir.write("list", "- s3cr3t\n");
  msg = config_error([&] { Config::from_file(list); });
  EXPECT_THAT(msg, AllOf(HasSubstr("got a list"), Not(HasSubstr("s3cr3t"))));
  const std::string bad = dir.write("bad", "key: \"s3cr3t \\q\"\n");
  msg = config_error([&] { Config::from_file(bad); });
  EXPECT_THAT(msg, AllOf(HasSubstr(bad + ":1:"), HasSubstr("malformed YAML: unknown escape character")));
  EXPECT_THAT(msg, Not(HasSubstr("s3cr3t")));
  EXPECT_THAT(msg, Not(HasSubstr(": q")));
}

TEST(ConfigBaseTest, SpecialFilesAreRefused) {
  TempDir dir;
  // Used to end in an uncaught bad_alloc (/dev/zero) or hang (a FIFO).
  EXPECT_THAT(config_error([] { Config::from_file("/dev/zero"); }),
              AllOf(HasSubstr("cannot read config file"),
                    HasSubstr("'/dev/zero' is not a regular file (it is a character device)")));
  const std::string fifo = dir / "fifo.yaml";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string top = dir.write("top.yaml", "_BASE_: fifo.yaml\n");
  EXPECT_THAT(config_error([&] { Config::from_file(top); }),
              AllOf(HasSubstr(top + ": cannot read _BASE_ file"), HasSubstr("(it is a FIFO)")));
  const std::string big = dir.write("big.yaml", "# " + std::string(17 << 20, 'x') + "\n");
  EXPECT_THAT(config_error([&] { Config::from_file(big); }),
              AllOf(HasSubstr("is too large"), HasSubstr("the limit is 16 MiB")));
}

TEST(ConfigBaseTest, RepositoryConfigsLoad) {
  const char* source_dir = std::getenv("DTRAIN_TEST_SOURCE_DIR");
  if (source_dir == nullptr || !stdfs::is_directory(stdfs::path(source_dir) / "configs")) {
    GTEST_SKIP() << "DTRAIN_TEST_SOURCE_DIR/configs not available";
  }
  int loaded = 0;
  for (const auto& entry : stdfs::directory_iterator(stdfs::path(source_dir) / "configs")) {
    if (entry.path().extension() != ".yaml") continue;
    EXPECT_NO_THROW(Config::from_file(entry.path().string())) << entry.path();
    ++loaded;
  }
  EXPECT_GT(loaded, 0);
}

}  // namespace
}  // namespace dtrain
