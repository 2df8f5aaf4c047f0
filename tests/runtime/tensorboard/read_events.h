// Test helper: every Event of a TensorBoard event file, decoded with the generated
// classes (record CRCs checked by read_records). Not thread-safe.
#pragma once

#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/tensorboard/event.pb.h"
#include "runtime/tensorboard/record.h"

namespace dtrain::tensorboard::testing {

inline std::vector<proto::Event> read_events(const std::string& path) {
  std::vector<proto::Event> out;
  for (const std::string& data : read_records(path)) {
    out.emplace_back();
    DTRAIN_CHECK(out.back().ParseFromString(data), "event file '{}': record {} is no Event", path,
                 out.size() - 1);
  }
  return out;
}

}  // namespace dtrain::tensorboard::testing
