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
};
Helpers* g_helpers = nullptr;

// REQUIRES: GIL held.
Result<Helpers*> helpers(const CApi& api) {
  if (g_helpers != nullptr) return g_helpers;
  PyRef ns(api, api.PyDict_New());
  PyRef builtins(api, api.PyImport_ImportModule("builtins"));
  if (!ns || !builtins) return Status(Code::kInternal, fetch_error_text(api));
  if (api.PyDict_SetItemString(ns.get(), "__builtins__", builtins.get()) != 0 ||
      api.PyDict_SetItemString(ns.get(), "__name__",
                               PyRef(api, api.PyUnicode_FromStringAndSize("probing._agent", 14)).get()) != 0) {
    return Status(Code::kInternal, fetch_error_text(api));
  }
  PyRef done(api, api.PyRun_StringFlags(kAgentHelpersSource, kPyFileInput, ns.get(), ns.get(), nullptr));
  if (!done) return Status(Code::kInternal, "loading the agent's Python helpers: " + fetch_error_text(api));
  PyObject* run = api.PyDict_GetItemString(ns.get(), "run_eval");          // borrowed
  PyObject* timeout = api.PyDict_GetItemString(ns.get(), "ProbingTimeout");  // borrowed
  if (run == nullptr || timeout == nullptr) {
    return Status(Code::kInternal, "the agent's Python helpers are incomplete");
  }
  g_helpers = new Helpers{std::move(ns), run, timeout};
  return g_helpers;
}

std::chrono::steady_clock::duration seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

}  // namespace

std::string fetch_error_text(const CApi& api) {
  if (api.PyErr_Occurred() == nullptr) return "unknown Python error";
  PyObject *type = nullptr, *value = nullptr, *tb = nullptr;
  api.PyErr_Fetch(&type, &value, &tb);
  PyRef t(api, type), v(api, value), b(api, tb);
  std::string text = "Python error";
  if (v) {
    PyRef s(api, api.PyObject_Str(v.get()));
    if (s) text = utf8(api, s.get());
    api.PyErr_Clear();
  }
  return text;
}

std::string utf8(const CApi& api, PyObject* str) {
  long size = 0;
  const char* data = api.PyUnicode_AsUTF8AndSize(str, &size);
  if (data == nullptr) {
    api.PyErr_Clear();
    return {};
  }
  return {data, static_cast<size_t>(size)};
}

Result<nlohmann::json> run_eval(PythonRuntime& runtime, const std::string& code, const EvalOptions& options) {
  // Shared with the work, which may outlive this call when the caller stops waiting.
  struct Outcome {
    std::string json_text;
    std::string error;
  };
  auto outcome = std::make_shared<Outcome>();
  auto work = [outcome, code, limit = options.max_output_bytes](const CApi& api) {
    Result<Helpers*> h = helpers(api);
    if (!h.is_ok()) {
      outcome->error = h.status().message();
      return;
    }
    PyRef py_code(api, api.PyUnicode_FromStringAndSize(code.data(), static_cast<long>(code.size())));
    PyRef py_limit(api, api.PyLong_FromLongLong(limit));
    if (!py_code || !py_limit) {
      outcome->error = "preparing the code: " + fetch_error_text(api);
      return;
    }
    PyRef text(api, api.PyObject_CallFunctionObjArgs((*h)->run_eval, py_code.get(), py_limit.get(), nullptr));
    if (!text) {
      // Only an interrupt landing outside run_eval's own handlers gets here.
      outcome->error = "the eval was interrupted: " + fetch_error_text(api);
      return;
    }
    outcome->json_text = utf8(api, text.get());
  };
  PythonExecutor::Limits limits{seconds(options.gil_timeout_s), seconds(options.timeout_s), seconds(1.0)};
  auto interrupt_type = [](const CApi&) -> PyObject* { return g_helpers ? g_helpers->timeout_exc : nullptr; };
  bool interrupted = false;
  Status st = runtime.executor().run(work, limits, interrupt_type, &interrupted);
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

}  // namespace probing::python
