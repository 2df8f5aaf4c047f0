// Logging set-up: rank-tagged spdlog default logger.
#include "runtime/base/logging.h"

#include <cstdlib>
#include <string>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace dtrain::log {

void init(int rank, int world_size) {
  auto logger = spdlog::get("dtrain");
  if (!logger) logger = spdlog::stderr_color_mt("dtrain");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern(fmt::format("[dtrain r{}/{} %H:%M:%S %^%l%$] %v", rank, world_size));
  const char* level = std::getenv("DTRAIN_LOG_LEVEL");
  spdlog::set_level(level ? spdlog::level::from_str(level) : spdlog::level::info);
}

}  // namespace dtrain::log
