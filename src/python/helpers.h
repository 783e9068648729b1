// Calls into the agent's embedded Python helpers: a helper source is compiled once into a private
// namespace (never in sys.modules) and its functions are called on an executor worker, with the
// executor's deadlines, returning JSON text. A helper that defines `ProbingTimeout` gets it
// raised when it runs past its deadline.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/status.h"
#include "python/ref.h"
#include "python/runtime.h"

namespace probing::python {

struct HelperSource {
  const char* source;       // the module's text
  const char* module_name;  // its __name__, e.g. "probing._tables"
};

// The helper's namespace (a borrowed dict, compiled on first use and kept for the life of the
// process). REQUIRES: GIL held.
Result<PyObject*> helper_namespace(const CApi& api, const HelperSource& helper);

// Calls `function(*args)`, args being ints, floats, strings or null, and parses the str it
// returns as JSON. Errors: the executor's (kTimeout when the GIL is not had in time), kInternal
// when the helper raised (the message has the exception).
Result<nlohmann::json> call_helper(PythonRuntime& runtime, const HelperSource& helper, const char* function,
                                   const nlohmann::json& args, double gil_timeout_s, double run_timeout_s);

// Makes a helper's arguments on the worker, with the GIL held: Python objects that only native
// code can make. Fails with a Status the call returns.
using MakeArgs = std::function<Result<std::vector<PyRef>>(const CApi&)>;

// The same, with the arguments made by `make_args` (at most 3).
Result<nlohmann::json> call_helper(PythonRuntime& runtime, const HelperSource& helper, const char* function,
                                   MakeArgs make_args, double gil_timeout_s, double run_timeout_s);

}  // namespace probing::python
