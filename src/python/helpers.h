// Calls into the agent's embedded Python helpers: a helper source is compiled once into a private
// namespace (never in sys.modules) and its functions are called on an executor worker, with the
// executor's deadlines, returning JSON text or plain data. A helper that defines `ProbingTimeout`
// gets it raised when it runs past its deadline.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/status.h"
#include "python/ref.h"
#include "python/runtime.h"

namespace probing::python {

struct HelperSource {
  const char* source;       // the module's text
  const char* module_name;  // its __name__, e.g. "probing._tables"
  // Native functions put in its namespace, under their names, once it is compiled: an array
  // ended by a null, or null.
  MethodDef* const* natives = nullptr;
};

// The helper's namespace (a borrowed dict, compiled on first use, with its natives added, and kept
// for the life of the process). REQUIRES: GIL held.
Result<PyObject*> helper_namespace(const CApi& api, const HelperSource& helper);

// How a helper call runs on the executor.
struct HelperCall {
  HelperCall(double gil_timeout, double run_timeout)
      : gil_timeout_s(gil_timeout), run_timeout_s(run_timeout) {}
  double gil_timeout_s;         // to start: the executor's kTimeout says who holds the GIL
  double run_timeout_s;         // then the helper's ProbingTimeout is raised in it
  std::string tag;              // names the call for PythonExecutor::interrupt_tagged; may be ""
  bool* interrupted = nullptr;  // set when it ran past run_timeout_s and stopped on the interrupt
  // The helper reads other threads' frames: it runs under a CollectionPause (collection.h says why).
  bool reads_other_threads = false;
};

// A name the helper defines, borrowed from its namespace (which lives for the process); nullptr
// when it lacks the name or has not been loaded yet (this never loads it: it runs no Python code,
// so it never lets the GIL go). For an executor's InterruptType. REQUIRES: GIL held.
PyObject* helper_attribute(const CApi& api, const HelperSource& helper, const char* name);

// Makes a helper's arguments on the worker, with the GIL held: Python objects that only native
// code can make. Fails with a Status the call returns.
using MakeArgs = std::function<Result<std::vector<PyRef>>(const CApi&)>;

// Calls `function(*args)` (at most 8 arguments, made by `make_args`) on an executor worker and
// parses the str it returns as JSON, or reads any other result natively as plain data (dicts with
// str keys, lists, tuples, str, int, float, bool, None; a helper that returns these needs no
// `json`). Errors: the executor's (kTimeout when the GIL is not had
// in time), kInternal when the helper raised (the message is the exception's text).
Result<nlohmann::json> call_helper(PythonRuntime& runtime, const HelperSource& helper, const char* function,
                                   MakeArgs make_args, const HelperCall& call);

// The same, args being ints, floats, strings or null.
Result<nlohmann::json> call_helper(PythonRuntime& runtime, const HelperSource& helper, const char* function,
                                   const nlohmann::json& args, const HelperCall& call);

}  // namespace probing::python
