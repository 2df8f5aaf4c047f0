// Logging: a thin layer over spdlog with the rank in every line.
//
//   dtrain::log::init(rank, world_size);         // once, by the runtime's init
//   DTRAIN_LOG_INFO("saved {} in {:.2f}s", name, secs);
//   if (rank == 0) DTRAIN_LOG_WARN(...);           // rank-0-only lines are the caller's choice
//
// The level comes from DTRAIN_LOG_LEVEL (trace|debug|info|warn|error|off, default info).
// Thread-safe (spdlog's multi-threaded sink).
#pragma once

#include <spdlog/spdlog.h>

namespace dtrain::log {

// Installs the default logger with pattern "[dtrain r<rank>/<world> HH:MM:SS] msg" on
// stderr. Idempotent: a later call just updates rank and world size.
void init(int rank, int world_size);

}  // namespace dtrain::log

#define DTRAIN_LOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
#define DTRAIN_LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define DTRAIN_LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define DTRAIN_LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)
