// Crash-point sweeps over a FaultInjectionEnv (see sweep.h).
#include "tests/powercut/sweep.h"

#include <cstdlib>
#include <exception>
#include <filesystem>
#include <map>
#include <stdexcept>

#include "tests/test_util.h"

namespace dtrain::powercut {

std::string fresh_dir(const std::string& tag) { return testutil::make_temp_dir("dtrain-powercut-" + tag + "-"); }

std::string run_once(const Scenario& scenario, const Check& check, int64_t cut_at,
                     const DroppedSync& drop, Outcome* outcome) {
  const std::string root = fresh_dir("root");
  const std::string image = fresh_dir("image");
  Outcome o;
  o.cut_at = cut_at;
  std::string problem;
  {
    FaultInjectionEnv env(root);
    env.cut_at(cut_at);
    env.drop_sync(drop.name, drop.nth);
    try {
      scenario(env, root);
    } catch (const std::exception& e) {
      o.error = e.what();
    }
    o.power_cut = env.power_cut();
    o.log = env.log();
    if (!o.power_cut && !o.error.empty()) {
      problem = "the run failed without a power cut: " + o.error;
    } else {
      std::filesystem::remove(image);
      env.write_image(image);
    }
  }
  if (problem.empty()) {
    try {
      problem = check(image, o);
    } catch (const std::exception& e) {
      problem = std::string("the check threw: ") + e.what();
    }
  }
  if (problem.empty() || std::getenv("DTRAIN_POWERCUT_KEEP") == nullptr) {
    std::error_code ec;
    std::filesystem::remove_all(root, ec);
    std::filesystem::remove_all(image, ec);
  } else {
    problem += " (kept: " + root + ", " + image + ")";
  }
  if (outcome != nullptr) *outcome = std::move(o);
  return problem;
}

SweepResult sweep(const Scenario& scenario, const Check& check, int64_t first, const DroppedSync& drop,
                  bool stop_at_first_failure) {
  SweepResult result;
  Outcome reference;
  const std::string uncut = run_once(scenario, check, 0, drop, &reference);
  if (!uncut.empty()) result.failures.push_back({0, "(no cut)", uncut});
  if (!uncut.empty() && stop_at_first_failure) return result;
  result.reference_log = reference.log;
  const int64_t n = static_cast<int64_t>(reference.log.size());
  for (int64_t cut = first; cut <= n + 1; ++cut) {
    Outcome o;
    const std::string problem = run_once(scenario, check, cut, drop, &o);
    ++result.points;
    if (problem.empty()) continue;
    // The mutation that met the cut: this run's next one, as the reference run logged it
    // when this run's order is not at hand (it stopped there).
    const size_t at = static_cast<size_t>(cut - 1);
    result.failures.push_back({cut, at < reference.log.size() ? reference.log[at] : "(after the last)", problem});
    if (stop_at_first_failure) break;
  }
  return result;
}

std::vector<SyncVerdict> drop_each_sync(const Scenario& scenario, const Check& check,
                                        std::vector<std::string>* log) {
  Outcome reference;
  const std::string uncut = run_once(scenario, check, 0, {}, &reference);
  if (!uncut.empty()) throw std::runtime_error("the uncut run fails its check: " + uncut);
  *log = reference.log;
  std::vector<SyncVerdict> verdicts;
  std::map<std::string, int64_t> seen;  // syncs so far, by stable name
  for (size_t at = 0; at < log->size(); ++at) {
    const std::string& m = (*log)[at];
    if (m.rfind("sync ", 0) != 0) continue;
    const std::string name = FaultInjectionEnv::stable_name(m.substr(5));
    const SweepResult r = sweep(scenario, check, 1, {name, ++seen[name]}, /*stop_at_first_failure=*/true);
    SyncVerdict v;
    v.at = at;
    v.caught = !r.failures.empty();
    if (v.caught) v.first = r.failures.front();
    verdicts.push_back(v);
  }
  return verdicts;
}

}  // namespace dtrain::powercut
