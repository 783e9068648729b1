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
};

// The outcome as JSON: {"output", "value", "exception": {"type","message","traceback"} | null,
// "timed_out", "output_truncated"}. A Python exception in the code is a successful result with
// "exception" set. Errors: kTimeout (GIL not had, or the code ran too long and did not stop),
// kUnavailable (shutting down), kInternal.
Result<nlohmann::json> run_eval(PythonRuntime& runtime, const std::string& code,
                                const EvalOptions& options);

}  // namespace probing::python
