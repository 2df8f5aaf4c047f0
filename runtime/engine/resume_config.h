// What a resume does with config keys that differ from the checkpoint's config.yaml:
// the keys whose state the checkpoint restores keep the checkpoint's value (as in
// detectron2, "lr will be loaded"), every other key takes this run's value.
//
//   std::string report = describe_config_changes(cfg, saved_yaml, "out/model_0000049");
//   if (!report.empty()) DTRAIN_LOG_WARN("{}", report);
//
// Functions of their arguments only: thread-safe.
#pragma once

#include <string>

#include "runtime/base/config.h"

namespace dtrain::engine {

// Why the checkpoint's value of `key` wins over this run's on resume, or "" when this
// run's value is used.
std::string checkpoint_wins_because(const std::string& key);

// One message listing every key of `run` that differs from the config in `saved_yaml`
// (the checkpoint `origin`'s config.yaml), each with both values and which side wins;
// "" when none differs. A saved config that cannot be read (e.g. from another dtrain
// version) is reported as such instead of failing.
std::string describe_config_changes(const Config& run, const std::string& saved_yaml,
                                    const std::string& origin);

}  // namespace dtrain::engine
