// eval: runs Python source in the target's __main__ namespace on an agent thread.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "python/runtime.h"

namespace probing::python {

struct EvalOptions {
  double timeout_s = 30;                    // then the code is interrupted
  double gil_timeout_s = 5;                 // to get the GIL at all
  long long max_output_bytes = 1 << 20;     // printed output kept
  bool interactive = false;  // an unfinished block is not run: the result has "incomplete": true
  std::string id;            // the client's name for this eval, for interrupt_eval(); may be ""
};

// The outcome as JSON: {"output", "value", "exception": {"type","message","traceback"} | null,
// "timed_out", "output_truncated"}. A Python exception in the code is a successful result with
// "exception" set. Errors: kTimeout (GIL not had, or the code ran too long and did not stop),
// kUnavailable (shutting down), kInternal.
Result<nlohmann::json> run_eval(PythonRuntime& runtime, const std::string& code,
                                const EvalOptions& options);

// Whether `code` is an unfinished block (a REPL wants more lines), decided by the target's
// codeop as code.InteractiveConsole decides it; nothing of it runs. Errors as run_eval's.
Result<bool> is_unfinished_block(PythonRuntime& runtime, const std::string& code, double gil_timeout_s);

// Raises KeyboardInterrupt in the running eval whose EvalOptions::id is `id`; returns at once
// (the GIL is taken on another thread). kNotFound when no such eval is running. `*thread`, when
// given, is set to the kernel thread id of the thread that runs it.
Status interrupt_eval(PythonRuntime& runtime, const std::string& id, pid_t* thread = nullptr);

// Completions in __main__ of `text`, the word before the cursor, `line` being the input up to the
// cursor: {"matches": [...]}. Names, attributes (rlcompleter) and keys after `x["`.
// Errors as run_eval's.
Result<nlohmann::json> complete(PythonRuntime& runtime, const std::string& text, const std::string& line,
                                double gil_timeout_s);

}  // namespace probing::python
