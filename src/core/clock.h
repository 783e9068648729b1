// Unix time as the agent records it: seconds since the epoch, as a double (the `time` columns, the
// windows of GET /profile and /metrics).
#pragma once

#include <chrono>

namespace probing {

inline double unix_now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Seconds on a clock that never steps back (for intervals and ages, not for rows).
inline double monotonic_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace probing
