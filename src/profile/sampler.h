// The agent's sampling profiler. One thread, probing-sampler, reads every Python thread's stack
// with the GIL-free reader (layout/interpreter_reader.h): no GIL, no signal, no thread stopped. Each
// sample is a row of python.samples (time, thread, GIL, on CPU, stack id) whose stack is interned
// in python.stacks. It always runs at profile.recorder_hz, keeping profile.recorder_s seconds (the
// flight recorder), and faster while a profile session asks for it. The hang detector rides on it
// and writes python.hangs.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "sql/engine.h"

namespace probing::profile {

constexpr double kMaxHz = 1000;
constexpr double kMaxSessionSeconds = 3600;

// python.samples, python.stacks and python.hangs.
Status add_profile_tables(sql::Engine& engine);

// Starts the sampler thread, once per process; needs the tables. In a process whose interpreter
// the reader cannot read, the thread logs why and stops.
void start_sampler();

struct Session {
  long long id = 0;
  double start = 0;  // unix seconds
  double until = 0;
  double hz = 0;
  bool tasks = false;  // asyncio tasks named (profile/tasks.h)
};

// Samples at `hz` (up to kMaxHz) for `seconds` (up to kMaxSessionSeconds) from now, beside the
// recorder; sessions overlap freely, the fastest one sets the rate. `renew`, a live session's id,
// extends that session instead (to `seconds` from now, at `hz`), as `top` does every second;
// an id that has ended starts a new one. `tasks` also notes the coroutines on each stack and takes
// asyncio task snapshots meanwhile, for CollectRequest::tasks. kInvalidArgument out of range;
// kUnavailable past 16 sessions at once, or when the sampler does not run.
Result<Session> start_session(double hz, double seconds, long long renew = 0, bool tasks = false);

enum class Mode { kWall, kCpu, kGil };

struct CollectRequest {
  double since = 0;  // unix seconds, [since, until)
  double until = 0;
  Mode mode = Mode::kWall;
  bool idle = false;  // keep samples of threads that neither ran nor held the GIL
  // A sample that runs an asyncio task ends in the task and the tasks awaiting it; with `idle`,
  // each task snapshot's waiting tasks are samples too. Needs a session with `tasks`.
  bool tasks = false;
  size_t max_samples = 500'000;
};

// The samples of a window that the mode keeps, oldest first, with their stacks and threads, as
// JSON text: the body of GET /profile (docs/profile.md).
Result<std::string> collect(const CollectRequest& request);

// "wall", "cpu", "gil"; kInvalidArgument for anything else.
Result<Mode> parse_mode(const std::string& text);

// {"running", "hz", "recorder_hz", "sessions", "stacks", "error"}: for /health.
nlohmann::json sampler_status();

}  // namespace probing::profile
