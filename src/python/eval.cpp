#include "python/eval.h"

#include "python/ref.h"

namespace probing::python {

extern const char kAgentHelpersSource[];

namespace {

// The compiled agent_helpers.py. Created on first use and never freed; every access happens with
// the GIL held, which is what serializes it.
struct Helpers {
  PyRef ns;               // the helpers' globals
  PyObject* run_eval;     // borrowed from ns
  PyObject* timeout_exc;  // borrowed from ns
  PyObject* interrupt_exc;  // borrowed from ns
  PyObject* complete;       // borrowed from ns
};
Helpers* g_helpers = nullptr;

// REQUIRES: GIL held.
Result<Helpers*> helpers(const CApi& api) {
  if (g_helpers != nullptr) return g_helpers;
  Result<PyRef> loaded = run_embedded_source(api, kAgentHelpersSource, "probing._agent");
  if (!loaded.is_ok()) return loaded.status().with_context("loading the agent's Python helpers");
  PyRef ns = std::move(loaded).value();
  PyObject* run = api.PyDict_GetItemString(ns.get(), "run_eval");          // borrowed
  PyObject* timeout = api.PyDict_GetItemString(ns.get(), "ProbingTimeout");  // borrowed
  PyObject* interrupt = api.PyDict_GetItemString(ns.get(), "ProbingInterrupt");  // borrowed
  PyObject* complete = api.PyDict_GetItemString(ns.get(), "complete");           // borrowed
  if (run == nullptr || timeout == nullptr || interrupt == nullptr || complete == nullptr) {
    return Status(Code::kInternal, "the agent's Python helpers are incomplete");
  }
  g_helpers = new Helpers{std::move(ns), run, timeout, interrupt, complete};
  return g_helpers;
}

}  // namespace

Result<nlohmann::json> run_eval(PythonRuntime& runtime, const std::string& code, const EvalOptions& options) {
  // Shared with the work, which may outlive this call when the caller stops waiting.
  struct Outcome {
    std::string json_text;
    std::string error;
  };
  auto outcome = std::make_shared<Outcome>();
  auto work = [outcome, code, limit = options.max_output_bytes, interactive = options.interactive](const CApi& api) {
    Result<Helpers*> h = helpers(api);
    if (!h.is_ok()) {
      outcome->error = h.status().message();
      return;
    }
    PyRef py_code(api, api.PyUnicode_FromStringAndSize(code.data(), static_cast<long>(code.size())));
    PyRef py_limit(api, api.PyLong_FromLongLong(limit));
    PyRef py_interactive(api, api.PyLong_FromLongLong(interactive ? 1 : 0));
    if (!py_code || !py_limit || !py_interactive) {
      outcome->error = "preparing the code: " + fetch_error_text(api);
      return;
    }
    PyRef text(api, api.PyObject_CallFunctionObjArgs((*h)->run_eval, py_code.get(), py_limit.get(),
                                                     py_interactive.get(), nullptr));
    if (!text) {
      // Only an interrupt landing outside run_eval's own handlers gets here.
      outcome->error = "the eval was interrupted: " + fetch_error_text(api);
      return;
    }
    outcome->json_text = utf8(api, text.get());
  };
  PythonExecutor::Limits limits = PythonExecutor::make_limits(options.gil_timeout_s, options.timeout_s);
  auto interrupt_type = [](const CApi&) -> PyObject* { return g_helpers ? g_helpers->timeout_exc : nullptr; };
  bool interrupted = false;
  Status st = runtime.executor().run(work, limits, interrupt_type, &interrupted, options.id);
  if (!st.is_ok()) return st;
  if (!outcome->error.empty()) {
    // An interrupted eval normally reports timed_out itself, with its output so far.
    if (interrupted) return Status(Code::kTimeout, "the code ran past its timeout and was interrupted");
    return Status(Code::kInternal, outcome->error);
  }
  nlohmann::json j = nlohmann::json::parse(outcome->json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status(Code::kInternal, "the eval's result is not valid JSON");
  return j;
}

Status interrupt_eval(PythonRuntime& runtime, const std::string& id) {
  auto type = [](const CApi&) -> PyObject* { return g_helpers ? g_helpers->interrupt_exc : nullptr; };
  return runtime.executor().interrupt_tagged(id, type);
}

Result<nlohmann::json> complete(PythonRuntime& runtime, const std::string& text, const std::string& line,
                                double gil_timeout_s) {
  struct Outcome {
    std::string json_text;
    std::string error;
  };
  auto outcome = std::make_shared<Outcome>();
  auto work = [outcome, text, line](const CApi& api) {
    Result<Helpers*> h = helpers(api);
    if (!h.is_ok()) {
      outcome->error = h.status().message();
      return;
    }
    PyRef py_text(api, api.PyUnicode_FromStringAndSize(text.data(), static_cast<long>(text.size())));
    PyRef py_line(api, api.PyUnicode_FromStringAndSize(line.data(), static_cast<long>(line.size())));
    if (!py_text || !py_line) {
      outcome->error = "preparing the completion: " + fetch_error_text(api);
      return;
    }
    PyRef reply(api, api.PyObject_CallFunctionObjArgs((*h)->complete, py_text.get(), py_line.get(), nullptr));
    if (!reply) {
      outcome->error = "completing: " + fetch_error_text(api);
      return;
    }
    outcome->json_text = utf8(api, reply.get());
  };
  // Completion evaluates at most attribute lookups (rlcompleter); a few seconds is plenty.
  PythonExecutor::Limits limits = PythonExecutor::make_limits(gil_timeout_s, 5.0);
  auto interrupt_type = [](const CApi&) -> PyObject* { return g_helpers ? g_helpers->timeout_exc : nullptr; };
  Status st = runtime.executor().run(work, limits, interrupt_type);
  if (!st.is_ok()) return st;
  if (!outcome->error.empty()) return Status(Code::kInternal, outcome->error);
  nlohmann::json j = nlohmann::json::parse(outcome->json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status(Code::kInternal, "the completion's result is not valid JSON");
  return j;
}

}  // namespace probing::python
