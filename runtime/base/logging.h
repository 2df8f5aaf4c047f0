// Logging: a thin layer over spdlog with the rank in every line, and detectron2's rule
// that the main process speaks for all: lines every rank would print alike are printed
// once, by rank 0.
//
//   dtrain::log::init(rank, world_size);          // once, by the runtime's init
//   DTRAIN_LOG_INFO("saved {} in {:.2f}s", name, secs);       // rank 0 only
//   DTRAIN_LOG_WARN_RANK("rank {} got signal {}", rank, sig);  // whichever rank calls it
//   DTRAIN_LOG_ERROR("failed: {}", what);                       // every rank
//
// DTRAIN_LOG_INFO / DTRAIN_LOG_WARN: messages that are the same on every rank ("Starting
// training", "Overall training speed", a config warning). Ranks other than 0 drop them.
// DTRAIN_LOG_INFO_RANK / DTRAIN_LOG_WARN_RANK: messages about this rank's own situation
// (a signal it received, a file only its node downloads, state missing for this rank):
// printed by any rank. DTRAIN_LOG_ERROR and DTRAIN_LOG_DEBUG: printed by every rank.
// Before init() every rank prints everything (the rank is not known yet).
//
// The level comes from DTRAIN_LOG_LEVEL (trace|debug|info|warn|error|off, default info).
// Thread-safe (spdlog's multi-threaded sink); init() must not race with logging.
#pragma once

#include <spdlog/spdlog.h>

namespace dtrain::log {

// Installs the default logger with pattern "[dtrain r<rank>/<world> HH:MM:SS] msg" on
// stderr, and the main-process logger that shares its sink. Idempotent: a later call just
// updates rank and world size.
void init(int rank, int world_size);

// The logger of lines every rank would print alike: on rank 0 the default logger's
// levels, on other ranks errors only. The default logger before init().
spdlog::logger& main_logger();

}  // namespace dtrain::log

#define DTRAIN_LOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
#define DTRAIN_LOG_INFO(...) ::dtrain::log::main_logger().info(__VA_ARGS__)
#define DTRAIN_LOG_WARN(...) ::dtrain::log::main_logger().warn(__VA_ARGS__)
#define DTRAIN_LOG_INFO_RANK(...) ::spdlog::info(__VA_ARGS__)
#define DTRAIN_LOG_WARN_RANK(...) ::spdlog::warn(__VA_ARGS__)
#define DTRAIN_LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)
