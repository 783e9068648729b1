// Probes: breakpoints that record and go on (docs/probes.md). A probe at a line, or at a
// function's call or return, evaluates a condition and a list of expressions in the program's
// frame each time that code runs there, and writes a python.probe_hits row; the program never
// stops. probe_helpers.py (embedded) keeps the probes; on CPython 3.12+ it instruments the probed
// code objects only, with sys.monitoring, and on 3.9-3.11 this layer's trace function, set on every
// thread while a probe is active, calls it at the probed lines only.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "core/status.h"
#include "python/runtime.h"

namespace probing::probes {

struct ProbeSpec {
  std::string where;    // FILE:LINE, FILE:FUNCTION (its call) or FILE:FUNCTION:return
  std::string capture;  // "a, b.c()": expressions recorded at each hit
  std::string when;     // a condition; "" always
  long long limit = 0;  // hits, then the probe ends; 0 none
  double expire_s = 0;  // seconds, then the probe ends; 0 never
  // A watch: this expression, read at each line of the function `where` names (FILE:FUNCTION;
  // "" for the one of __main__'s file the main thread runs), recorded when it changes; with
  // `tensor`, a tensor's in-place updates (its version counter) are changes too.
  std::string watch;
  bool tensor = false;
  // A catch (CPython 3.12+): the exception classes ("ValueError, mod.Error") whose raises are
  // recorded in python.exceptions, caught or not; `where` and `capture` unused.
  std::string catch_types;
};

// Adds a probe (a watch, a catch); its description (id, file, line, function, event, state ...).
// kInvalidArgument saying what is wrong when the place, a capture or the condition is not right; kUnsupported
// where this interpreter lacks what probes need.
Result<nlohmann::json> add_probe(python::PythonRuntime& runtime, const ProbeSpec& spec);

// Every probe, ended ones too (with why they ended), until removed.
Result<nlohmann::json> list_probes(python::PythonRuntime& runtime);

// Removes probe `id` (0: all), putting the code back as it was; the descriptions of those removed.
// kInvalidArgument when there is no such probe (a 404 would read as an agent without the route).
Result<nlohmann::json> remove_probes(python::PythonRuntime& runtime, long long id);

}  // namespace probing::probes
