// Power cuts at every crash point of `dtrain ckpt import`'s write (write_checkpoint_dir,
// launcher/ckpt_command.h), in-process over a FaultInjectionEnv: a new checkpoint
// directory is there whole or not at all; with --force, the old one or the new one is
// there whole, never neither, once the old one had been written.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "checkpoint/inspect.h"
#include "launcher/ckpt_command.h"
#include "tests/powercut/sweep.h"

namespace dtrain::powercut {
namespace {

using Tensors = std::vector<std::pair<std::string, at::Tensor>>;

// What an import of generation `g` writes: model tensors and per-rank state of 2 ranks.
struct Imported {
  Tensors replicated;
  std::vector<Tensors> per_rank;
  StateDict scalars;
};

Imported generation(int g) {
  Imported w;
  w.replicated = {{"model/fc.weight", at::arange(g, g + 12 * 7, at::kFloat).reshape({12, 7})},
                  {"model/fc.bias", at::full({12}, 0.5 * g, at::kDouble)},
                  {"model/step", at::scalar_tensor(g, at::kLong)}};
  w.per_rank = {{{"rng/cpu", at::arange(5, at::kByte) + g}}, {{"rng/cpu", at::arange(5, at::kByte) * g}}};
  w.scalars = {{"extra/iteration", int64_t{100 * g}}, {"extra/note", std::string("generation ") + std::to_string(g)}};
  return w;
}

void write(const std::string& dir, int g, bool replace, Env& env) {
  const Imported w = generation(g);
  launcher::write_checkpoint_dir(dir, 2, w.replicated, w.per_rank, w.scalars, 100 * g, "", replace, env);
}

// Which generation `dir` holds (0: none), or a problem: it must verify and hold exactly
// one generation's tensors.
std::string generation_in(const std::string& dir, int* g) {
  *g = 0;
  if (Env::posix().type_of(dir) == FileType::kMissing) return "";
  const auto problems = checkpoint::verify_checkpoint(dir);
  if (!problems.empty()) return "'" + dir + "' does not verify: " + problems.front();
  const auto index = checkpoint::load_index(dir);
  const int found = static_cast<int>(index.iteration / 100);
  const auto all = checkpoint::read_all_tensors(dir);
  const Imported w = generation(found);
  for (const auto& [name, t] : w.replicated) {
    if (!all.count(name) || !at::equal(all.at(name), t)) return fmt::format("'{}': tensor '{}' differs", dir, name);
  }
  *g = found;
  return "";
}

TEST(ImportSweep, ANewCheckpointIsThereWholeOrNotAtAll) {
  bool returned = false;
  const SweepResult r = sweep(
      [&](Env& env, const std::string& root) {
        returned = false;
        write(root + "/weights/imported", 1, false, env);
        returned = true;
      },
      [&](const std::string& image, const Outcome&) -> std::string {
        int g = 0;
        if (std::string p = generation_in(image + "/weights/imported", &g); !p.empty()) return p;
        if (returned && g != 1) return "the import had returned, but its checkpoint is gone";
        return "";
      });
  EXPECT_GE(r.reference_log.size(), 8u);
  EXPECT_TRUE(r.failures.empty()) << r.failures.front().cut_at << " (" << r.failures.front().mutation
                                  << "): " << r.failures.front().problem;
  std::cout << fmt::format("[ sweep    ] import: {} crash points, {} failed\n", r.points, r.failures.size());
}

TEST(ImportSweep, ForceReplacesTheOldCheckpointInOneStep) {
  int committed = 0;
  const SweepResult r = sweep(
      [&](Env& env, const std::string& root) {
        committed = 0;
        write(root + "/imported", 1, false, env);
        committed = 1;
        write(root + "/imported", 2, true, env);
        committed = 2;
      },
      [&](const std::string& image, const Outcome&) -> std::string {
        int g = 0;
        if (std::string p = generation_in(image + "/imported", &g); !p.empty()) return p;
        if (g < committed) return fmt::format("holds generation {}, but generation {} had been written", g, committed);
        return "";
      });
  const bool exchanged = std::any_of(r.reference_log.begin(), r.reference_log.end(),
                                     [](const std::string& m) { return m.rfind("exchange ", 0) == 0; });
  EXPECT_TRUE(exchanged) << "--force did not swap the directories in one step";
  EXPECT_TRUE(r.failures.empty()) << r.failures.front().cut_at << " (" << r.failures.front().mutation
                                  << "): " << r.failures.front().problem;
  std::cout << fmt::format("[ sweep    ] import --force: {} crash points, {} failed\n", r.points, r.failures.size());
}

}  // namespace
}  // namespace dtrain::powercut
