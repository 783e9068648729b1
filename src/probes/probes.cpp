#include "probes/probes.h"

#include <pthread.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "bindings/table_binding.h"
#include "core/clock.h"
#include "core/settings.h"
#include "python/helpers.h"
#include "python/ref.h"
#include "sql/engine.h"

namespace probing::probes {

extern const char kProbeHelpersSource[];

namespace {

using python::CApi;
using python::PyObject;
using python::PyRef;

// CPython's PyTrace_* events.
constexpr int kTraceCall = 0, kTraceLine = 2, kTraceReturn = 3;
// The kinds of entry probe_helpers.py hands over (its _index).
constexpr int kAtLine = 0, kAtCall = 1, kAtReturn = 2;

// ---- 3.9-3.11: the trace function ----
//
// Every thread gets `trace` while a probe is active. It is called for each line, call and return
// of every frame; it compares the frame's code object with the few probed ones and returns, so
// what costs is CPython running in its tracing mode, not this. Everything here runs with the GIL:
// the table is swapped under it, and a hit may swap it (a probe that ends), so a call keeps the
// table it started with. When no probe is left, each thread takes `trace` off itself at its next
// event: only a thread whose trace function is this one ever gets here, so no tracer of the
// program's that was set since is cleared.
struct Entry {
  PyObject* code;  // kept alive by Table::refs
  int line;
  int kind;
  PyObject* probes;  // a tuple of the helper's probes
};

struct Table {
  std::vector<Entry> entries;
  std::vector<PyRef> refs;
  double next_deadline = 0;  // the earliest expiry of an active probe (monotonic s), 0 none
};

std::shared_ptr<const Table>& table() {
  static auto* t = new std::shared_ptr<const Table>;  // never freed: see PyRef
  return *t;
}

PyObject* g_hit = nullptr;          // probe_helpers._hit_all, from its namespace (lives for the process)
PyObject* g_missing = nullptr;      // probe_helpers._MISSING_RETURN
PyObject* g_thread_hook = nullptr;  // the builtin threading.settrace gets while probes are active
PyObject* g_sweep = nullptr;        // probe_helpers._sweep: ends the probes past their expiry
// Events since the clock was last read for an expiry: a probe whose code never runs still ends on
// time, and the clock is read once every kEventsPerClockRead events, not at each.
constexpr unsigned kEventsPerClockRead = 4096;
thread_local unsigned t_events = 0;
// Set in a forked child (a DataLoader worker forked while a probe was active): its thread, which
// inherited the trace function, drops it at its next event, and so do threads it starts.
std::atomic<bool> g_forked{false};

// Takes `trace` (or the threading hook's trampoline) off the calling thread. REQUIRES: GIL.
void untrace_this_thread(const CApi& api) {
  if (api.PyEval_SetTraceOf(api.PyThreadState_Get(), nullptr, nullptr) != 0) api.PyErr_Clear();
}

int trace(PyObject*, PyObject* frame, int what, PyObject* arg) noexcept {
  Result<const CApi*> loaded = python::load_capi();
  if (!loaded.is_ok()) return 0;
  const CApi& api = **loaded;
  std::shared_ptr<const Table> t = table();
  if (g_forked.load(std::memory_order_relaxed) || !t || t->entries.empty()) {
    untrace_this_thread(api);
    return 0;
  }
  if (t->next_deadline > 0 && ++t_events % kEventsPerClockRead == 0 && monotonic_s() > t->next_deadline &&
      g_sweep != nullptr) {
    PyObject* r = api.PyObject_CallFunctionObjArgs(g_sweep, nullptr);  // may swap the table
    if (r != nullptr) {
      api.Py_DecRef(r);
    } else {
      api.PyErr_Clear();
    }
    return 0;
  }
  if (what != kTraceLine && what != kTraceCall && what != kTraceReturn) return 0;
  PyObject* code = api.PyFrame_GetCode(frame);
  if (code == nullptr) {
    api.PyErr_Clear();
    return 0;
  }
  api.Py_DecRef(code);  // the frame keeps it
  const int kind = what == kTraceLine ? kAtLine : what == kTraceCall ? kAtCall : kAtReturn;
  int line = -1;
  for (const Entry& e : t->entries) {
    if (e.code != code || e.kind != kind) continue;
    if (kind == kAtLine) {
      if (line < 0) line = api.PyFrame_GetLineNumber(frame);
      if (e.line != line) continue;
    }
    PyObject* value = kind == kAtReturn ? (arg != nullptr ? arg : api.None) : g_missing;
    PyObject* r = api.PyObject_CallFunctionObjArgs(g_hit, e.probes, frame, value, nullptr);
    if (r == nullptr) {
      // _hit_all keeps every Exception to itself: what reaches here is KeyboardInterrupt and the
      // like, raised in the program's thread while its probe ran, and the program's to handle.
      return api.PyErr_ExceptionMatches(api.exc_exception) ? (api.PyErr_Clear(), 0) : -1;
    }
    api.Py_DecRef(r);
  }
  return 0;
}

bool native_tracing_available(const CApi& api) {
  return api.PyEval_SetTraceOf != nullptr && api.PyInterpreterState_ThreadHead != nullptr &&
         api.PyThreadState_Next != nullptr && api.PyThreadState_Get != nullptr &&
         api.PyFrame_GetCode != nullptr && api.PyFrame_GetLineNumber != nullptr &&
         api.PyInterpreterState_Main != nullptr;
}

// Sets the trace function of every thread of the main interpreter but the caller's (an agent
// worker, adding the first probe: it runs no probed code). REQUIRES: GIL.
void trace_every_thread(const CApi& api) {
  void* me = api.PyThreadState_Get();
  for (void* ts = api.PyInterpreterState_ThreadHead(api.PyInterpreterState_Main()); ts != nullptr;
       ts = api.PyThreadState_Next(ts)) {
    if (ts != me && api.PyEval_SetTraceOf(ts, trace, nullptr) != 0) {
      api.PyErr_Clear();  // an audit hook that refuses sys.settrace: that thread is not probed
    }
  }
}

// threading.settrace's hook while probes are active: a thread started then calls it at its first
// Python call, and it puts `trace` in its place for that thread.
PyObject* thread_hook(PyObject*, PyObject* const*, long) noexcept {
  Result<const CApi*> loaded = python::load_capi();
  if (!loaded.is_ok()) return nullptr;
  const CApi& api = **loaded;
  std::shared_ptr<const Table> t = table();
  if (!g_forked.load() && t && !t->entries.empty()) {
    if (api.PyEval_SetTraceOf(api.PyThreadState_Get(), trace, nullptr) != 0) api.PyErr_Clear();
  } else {
    untrace_this_thread(api);  // else threading's trampoline would call this at every call, for good
  }
  return PyRef::borrow(api, api.None).release();
}

// probe_helpers.set_entries(flat, next_deadline): [code, line, kind, probes, code, ...] of the active
// probes, and their earliest expiry (time.monotonic(), 0 none). Installs the trace function on every
// thread when the first entry comes; when none is left each thread takes it off itself (trace).
// Returns threading's hook to use (None when none is needed).
PyObject* set_entries(PyObject*, PyObject* const* args, long nargs) noexcept {
  Result<const CApi*> loaded = python::load_capi();
  if (!loaded.is_ok()) return nullptr;
  const CApi& api = **loaded;
  if (nargs != 2 || api.PyList_Size(args[0]) < 0) {
    api.PyErr_SetString(api.exc_type_error, "set_entries takes a list and a deadline");
    return nullptr;
  }
  static std::once_flag fork_handler;
  std::call_once(fork_handler, [] { ::pthread_atfork(nullptr, nullptr, [] { g_forked.store(true); }); });
  try {
    auto next = std::make_shared<Table>();
    const long n = api.PyList_Size(args[0]);
    for (long i = 0; i + 3 < n; i += 4) {
      PyObject* code = api.PyList_GetItem(args[0], i);
      PyObject* probes = api.PyList_GetItem(args[0], i + 3);
      next->refs.push_back(PyRef::borrow(api, code));
      next->refs.push_back(PyRef::borrow(api, probes));
      next->entries.push_back(
          Entry{code, static_cast<int>(api.PyLong_AsLongLong(api.PyList_GetItem(args[0], i + 1))),
                static_cast<int>(api.PyLong_AsLongLong(api.PyList_GetItem(args[0], i + 2))), probes});
    }
    next->next_deadline = api.PyFloat_AsDouble(args[1]);
    if (next->next_deadline == -1 && api.PyErr_Occurred() != nullptr) return nullptr;
    const bool was_on = table() && !table()->entries.empty();
    const bool on = !next->entries.empty();
    table() = std::move(next);
    if (on && !was_on) trace_every_thread(api);
    return PyRef::borrow(api, on ? g_thread_hook : api.None).release();
  } catch (...) {
    api.PyErr_SetString(api.exc_value_error, "set_entries: out of memory");
    return nullptr;
  }
}

python::MethodDef g_set_entries_def{"_native_set_entries", reinterpret_cast<void*>(set_entries),
                                    python::kMethFastcall, nullptr};
python::MethodDef g_thread_hook_def{"_native_thread_hook", reinterpret_cast<void*>(thread_hook),
                                    python::kMethFastcall, nullptr};
python::MethodDef* const kNatives[] = {&g_set_entries_def, &g_thread_hook_def, nullptr};
const python::HelperSource kProbeHelpers{kProbeHelpersSource, "probing._probes", kNatives};

// python.probe_hits' and python.exceptions' appends, made once with the GIL and kept.
PyObject* g_append = nullptr;
PyObject* g_exceptions_append = nullptr;

// The append of python.<table>, made in `slot` once. REQUIRES: GIL.
Status make_append(const CApi& api, const char* table, PyObject*& slot) {
  if (slot != nullptr) return Status::ok();
  std::shared_ptr<sql::ColumnStore> store = sql::Engine::get().find_store("python", table);
  if (store == nullptr) return Status(Code::kInternal, std::string("python.") + table + " is not registered");
  slot = bindings::appender_for(store.get());  // the engine keeps the store
  if (slot == nullptr) return Status(Code::kInternal, python::fetch_error_text(api));
  return Status::ok();
}

// Calls a helper function with made arguments; its {"error": ...} answers become `code`.
Result<nlohmann::json> call(python::PythonRuntime& runtime, const char* function, python::MakeArgs args,
                            Code error_code) {
  python::HelperCall how(settings().get_double("gil.timeout_s"), 10);
  Result<nlohmann::json> r = python::call_helper(runtime, kProbeHelpers, function, std::move(args), how);
  if (!r.is_ok()) return r;
  if (r->is_object() && r->contains("error")) return Status(error_code, (*r)["error"].get<std::string>());
  return r;
}

// The helper's natives as this interpreter needs them: on 3.9-3.11 `set_entries` (and the hook
// and markers the trace function calls), else None (sys.monitoring). REQUIRES: GIL.
Result<PyRef> backend(const CApi& api, const layout::PythonVersion& version) {
  if (version.minor >= 12) return PyRef::borrow(api, api.None);
  if (!native_tracing_available(api)) {
    return Status(Code::kUnsupported, "probes need _PyEval_SetTrace on Python " + version.text +
                                          ", which this interpreter does not export");
  }
  Result<PyObject*> ns = python::helper_namespace(api, kProbeHelpers);
  if (!ns.is_ok()) return ns.status();
  g_hit = api.PyDict_GetItemString(*ns, "_hit_all");
  g_missing = api.PyDict_GetItemString(*ns, "_MISSING_RETURN");
  g_thread_hook = api.PyDict_GetItemString(*ns, "_native_thread_hook");
  g_sweep = api.PyDict_GetItemString(*ns, "_sweep");
  PyObject* set = api.PyDict_GetItemString(*ns, "_native_set_entries");
  if (g_hit == nullptr || g_missing == nullptr || g_thread_hook == nullptr || g_sweep == nullptr ||
      set == nullptr) {
    return Status(Code::kInternal, "the probes' helper lacks its natives");
  }
  return PyRef::borrow(api, set);
}

}  // namespace

Result<nlohmann::json> add_probe(python::PythonRuntime& runtime, const ProbeSpec& spec) {
  const layout::PythonVersion version = runtime.version();
  const double max_overhead = settings().get_double("probes.max_overhead");
  python::MakeArgs args = [spec, version, max_overhead](const CApi& api) -> Result<std::vector<PyRef>> {
    for (Status st :
         {make_append(api, "probe_hits", g_append), make_append(api, "exceptions", g_exceptions_append)}) {
      if (!st.is_ok()) return st;
    }
    Result<PyRef> native = backend(api, version);
    if (!native.is_ok()) return native.status();
    auto text = [&api](const std::string& s) {
      return PyRef(api, api.PyUnicode_FromStringAndSize(s.data(), static_cast<long>(s.size())));
    };
    std::vector<PyRef> made;
    made.push_back(text(spec.where));
    made.push_back(text(spec.capture));
    made.push_back(text(spec.when));
    made.emplace_back(api, api.PyLong_FromLongLong(spec.limit));
    made.emplace_back(api, api.PyFloat_FromDouble(spec.expire_s));
    PyRef appends(api, api.PyList_New(0));
    if (!appends || api.PyList_Append(appends.get(), g_append) != 0 ||
        api.PyList_Append(appends.get(), g_exceptions_append) != 0) {
      return Status(Code::kInternal, python::fetch_error_text(api));
    }
    made.push_back(std::move(appends));
    made.emplace_back(api, api.PyFloat_FromDouble(max_overhead));
    for (const PyRef& r : made) {
      if (!r) return Status(Code::kInternal, python::fetch_error_text(api));
    }
    made.push_back(std::move(native).value());
    const char* kind = !spec.catch_types.empty() ? "catch"
                       : spec.watch.empty()      ? "probe"
                       : spec.tensor             ? "tensor"
                                                 : "watch";
    made.push_back(text(kind));
    made.push_back(text(spec.catch_types.empty() ? spec.watch : spec.catch_types));
    for (const PyRef& r : made) {
      if (!r) return Status(Code::kInternal, python::fetch_error_text(api));
    }
    return made;
  };
  return call(runtime, "add", std::move(args), Code::kInvalidArgument);
}

Result<nlohmann::json> list_probes(python::PythonRuntime& runtime) {
  python::MakeArgs none = [](const CApi&) -> Result<std::vector<PyRef>> { return std::vector<PyRef>{}; };
  return call(runtime, "probes", std::move(none), Code::kInternal);
}

Result<nlohmann::json> remove_probes(python::PythonRuntime& runtime, long long id) {
  python::MakeArgs args = [id](const CApi& api) -> Result<std::vector<PyRef>> {
    std::vector<PyRef> made;
    made.emplace_back(api, api.PyLong_FromLongLong(id));
    if (!made.back()) return Status(Code::kInternal, python::fetch_error_text(api));
    return made;
  };
  return call(runtime, "remove", std::move(args), Code::kInvalidArgument);
}

}  // namespace probing::probes
