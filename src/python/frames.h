// Backtraces of the target's threads. The live path runs backtrace_helpers.py with the GIL (full
// detail: names, daemon flags, locals, source lines); when the GIL cannot be had by the deadline
// it falls back to the GIL-free reader (gil_free.h, layout/interpreter_reader.h) and says so in the answer.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>

#include "core/status.h"
#include "python/runtime.h"

namespace probing::python {

// Whether the request the calling thread serves may run the target's own code to show a local
// (a class's __repr__): the full right may, the read right may not. True unless a
// ScopedUserReprs on this thread says otherwise; the router sets one per request.
bool user_reprs_allowed() noexcept;

class ScopedUserReprs {
 public:
  explicit ScopedUserReprs(bool allowed) noexcept;
  ~ScopedUserReprs();
  ScopedUserReprs(const ScopedUserReprs&) = delete;
  ScopedUserReprs& operator=(const ScopedUserReprs&) = delete;

 private:
  bool saved_;
};

struct BacktraceOptions {
  long long thread = 0;       // threading ident or kernel tid; 0 = the main thread
  bool all = false;           // every thread
  bool locals = false;
  double gil_timeout_s = 0.5;  // then the GIL-free reader answers
  double run_timeout_s = 2;   // a capture (reprs of locals) past this is interrupted
  double locals_budget_s = 1.5;  // reprs of locals past this show "<not shown: time budget spent>"
  int max_depth = 4096;
  int repr_chars = 200;
  // false: locals whose type is not built in show as <module.Type at 0x...> (no __repr__ runs).
  bool user_reprs = user_reprs_allowed();
};

// {"threads": [{"thread_id", "native_thread_id", "name", "daemon", "is_main", "holds_gil",
//   "frames": [{"depth", "func", "file", "lineno", "source", "frame_type", "locals"?}],
//   "truncated", "note"?}], "gil_free": bool, "gil_holder": {...} | null, "notes": [...],
//   "python": "3.11.7"}
// kNotFound when `thread` names no thread; kUnsupported when neither path can read this
// interpreter. Never blocks past gil_timeout_s + run_timeout_s + 1 s.
Result<nlohmann::json> capture_backtrace(PythonRuntime& runtime, const BacktraceOptions& options);

// Compiles the backtrace helper now, if it is not yet, waiting at most gil_timeout_s for the GIL
// (kTimeout otherwise: ask again later). The agent does it once the program has run a while, so
// that the first backtrace of a process that is stuck later needs the GIL for well under a
// millisecond instead of the 5-9 ms of CPU that compiling the helper takes. `kept` lives as long
// as the work does (run, or dropped by a worker that never got the GIL).
Status load_backtrace_helper(PythonRuntime& runtime, double gil_timeout_s, std::shared_ptr<void> kept);

// The GIL-free reader's answer in the same shape (used by capture_backtrace; exposed for tests).
Result<nlohmann::json> capture_backtrace_gil_free(const BacktraceOptions& options, const std::string& why);

}  // namespace probing::python
