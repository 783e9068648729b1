#include "core/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <deque>
#include <mutex>
#include <strings.h>

namespace probing {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kError)};

const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kError: return "error";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kInfo: return "info";
    case LogLevel::kDebug: return "debug";
  }
  return "?";
}

// Leaked on purpose: the log may be written from agent threads while the host runs its static
// destructors at exit.
struct Ring {
  std::mutex mu;
  std::deque<std::string> lines;
};
Ring& ring() {
  static Ring* r = new Ring;
  return *r;
}

}  // namespace

LogLevel parse_log_level(const std::string& text, LogLevel fallback) noexcept {
  const char* s = text.c_str();
  if (strcasecmp(s, "error") == 0) return LogLevel::kError;
  if (strcasecmp(s, "warn") == 0 || strcasecmp(s, "warning") == 0) return LogLevel::kWarn;
  if (strcasecmp(s, "info") == 0) return LogLevel::kInfo;
  if (strcasecmp(s, "debug") == 0) return LogLevel::kDebug;
  return fallback;
}

void init_logging_from_env() noexcept {
  const char* v = std::getenv("PROBING_LOG");
  if (v != nullptr) set_log_level(parse_log_level(v, LogLevel::kError));
}

void set_log_level(LogLevel level) noexcept { g_level.store(static_cast<int>(level)); }
LogLevel log_level() noexcept { return static_cast<LogLevel>(g_level.load()); }

void log(LogLevel level, const std::string& message) noexcept {
  try {
    std::time_t now = std::time(nullptr);
    std::tm tm_now{};
    gmtime_r(&now, &tm_now);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm_now);
    std::string line = std::string(stamp) + " " + level_name(level) + " " + message;
    {
      Ring& r = ring();
      std::lock_guard<std::mutex> lock(r.mu);
      if (r.lines.size() >= kLogRingLines) r.lines.pop_front();
      r.lines.push_back(line);
    }
    if (static_cast<int>(level) <= g_level.load()) {
      std::string out = "[probing " + std::to_string(getpid()) + "] " + level_name(level) + ": " +
                        message + "\n";
      // One write(2) per line so lines from several threads do not interleave.
      ssize_t ignored = ::write(STDERR_FILENO, out.data(), out.size());
      (void)ignored;
    }
  } catch (...) {
    // Logging must never fail its caller.
  }
}

std::vector<std::string> recent_log_lines() {
  Ring& r = ring();
  std::lock_guard<std::mutex> lock(r.mu);
  return {r.lines.begin(), r.lines.end()};
}

}  // namespace probing
