// Logging set-up: rank-tagged spdlog default logger plus the rank-0-only main logger.
#include "runtime/base/logging.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace dtrain::log {
namespace {

constexpr const char* kName = "dtrain";
constexpr const char* kMainName = "dtrain.main";

// Set by init(); the registry keeps the logger alive.
std::atomic<spdlog::logger*> g_main{nullptr};

}  // namespace

void init(int rank, int world_size) {
  auto logger = spdlog::get(kName);
  if (!logger) logger = spdlog::stderr_color_mt(kName);
  spdlog::set_default_logger(logger);
  auto main = spdlog::get(kMainName);
  if (!main) {
    main = std::make_shared<spdlog::logger>(kMainName, logger->sinks().begin(),
                                            logger->sinks().end());
    spdlog::register_logger(main);
  }
  spdlog::set_pattern(fmt::format("[dtrain r{}/{} %H:%M:%S %^%l%$] %v", rank, world_size));
  const char* env = std::getenv("DTRAIN_LOG_LEVEL");
  const spdlog::level::level_enum level = env ? spdlog::level::from_str(env) : spdlog::level::info;
  logger->set_level(level);
  main->set_level(rank == 0 ? level : std::max(level, spdlog::level::err));
  g_main = main.get();
}

spdlog::logger& main_logger() {
  spdlog::logger* main = g_main.load();
  return main ? *main : *spdlog::default_logger_raw();
}

}  // namespace dtrain::log
