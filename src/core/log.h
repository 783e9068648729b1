// The agent's log: lines go to stderr (prefixed "[probing]") when at or above the level set by
// PROBING_LOG (error, warn, info, debug; default error, so that
// the target's own stderr stays as it was), and the last kLogRingLines lines at any
// level are kept in memory for the agent to show. Thread-safe. Never throws.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace probing {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

constexpr std::size_t kLogRingLines = 256;

// Parses "error", "warn", "info", "debug" (any case); anything else gives `fallback`.
LogLevel parse_log_level(const std::string& text, LogLevel fallback) noexcept;

// Reads PROBING_LOG once. Safe to call again.
void init_logging_from_env() noexcept;
void set_log_level(LogLevel level) noexcept;
LogLevel log_level() noexcept;

void log(LogLevel level, const std::string& message) noexcept;

// The most recent lines, oldest first, each "time level message".
std::vector<std::string> recent_log_lines();

inline void log_error(const std::string& m) noexcept { log(LogLevel::kError, m); }
inline void log_warn(const std::string& m) noexcept { log(LogLevel::kWarn, m); }
inline void log_info(const std::string& m) noexcept { log(LogLevel::kInfo, m); }
inline void log_debug(const std::string& m) noexcept { log(LogLevel::kDebug, m); }

}  // namespace probing
