#include "torch/torch_trace.h"

#include <link.h>
#include <pthread.h>

#include <atomic>
#include <cstring>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "core/log.h"
#include "core/settings.h"
#include "python/collection.h"
#include "python/helpers.h"
#include "python/ref.h"
#include "python/runtime.h"
#include "sql/engine.h"
#include "bindings/table_binding.h"
#include "torch/hooks.h"

namespace probing::torch {

extern const char kTorchTraceSource[];

namespace {

using python::CApi;
using python::PyObject;
using python::PyRef;

const python::HelperSource kHelpers{kTorchTraceSource, "_probing_torch_trace", kTracerNatives};
constexpr double kWatchIntervalS = 0.5;
constexpr double kApplyTimeoutS = 5;

std::mutex g_apply_mu;  // one apply at a time
std::atomic<bool> g_installed{false};
std::atomic<bool> g_failed{false};  // the tracer switched itself off: wait for the next SET
PyObject* g_appender = nullptr;  // the store's append builtin; made once with the GIL, kept

// REQUIRES: GIL held. Calls torch_trace.py's install or uninstall; its JSON text, or an error.
std::string call_tracer(const CApi& api, bool on, double rate, bool module_backward, std::string* error) {
  init_tracer(api);
  Result<PyObject*> ns = python::helper_namespace(api, kHelpers);
  if (!ns.is_ok()) {
    *error = ns.status().message();
    return {};
  }
  PyObject* fn = api.PyDict_GetItemString(*ns, on ? "install" : "uninstall");  // borrowed
  if (fn == nullptr) {
    *error = "the torch tracer is incomplete";
    return {};
  }
  PyRef text;
  if (on) {
    if (g_appender == nullptr) {
      std::shared_ptr<sql::ColumnStore> store = sql::Engine::get().find_store("python", "torch_trace");
      if (store == nullptr) {
        *error = "python.torch_trace is not registered";
        return {};
      }
      g_appender = bindings::appender_for(store.get());
      if (g_appender == nullptr) {
        *error = "making the appender: " + python::fetch_error_text(api);
        return {};
      }
    }
    PyRef r(api, api.PyFloat_FromDouble(rate));
    PyRef b(api, api.PyLong_FromLongLong(module_backward ? 1 : 0));
    if (!r || !b) {
      *error = python::fetch_error_text(api);
      return {};
    }
    text = PyRef(api, api.PyObject_CallFunctionObjArgs(fn, g_appender, r.get(), b.get(), nullptr));
  } else {
    text = PyRef(api, api.PyObject_CallFunctionObjArgs(fn, nullptr));
  }
  if (!text) {
    *error = python::fetch_error_text(api);
    return {};
  }
  return python::utf8(api, text.get());
}

// Whether PyTorch's extension library is loaded: `import torch` loads it first thing. Checked
// without the GIL, so a process that never imports torch is never asked for it by the watcher.
bool torch_loaded() {
  auto visit = [](dl_phdr_info* info, size_t, void*) -> int {
    return info->dlpi_name != nullptr && std::strstr(info->dlpi_name, "libtorch_python") != nullptr;
  };
  return ::dl_iterate_phdr(visit, nullptr) != 0;
}

// Keeps the tracer as the settings say: installs it once torch is imported, and retries a
// change that could not be applied at once (the GIL was held when SET came). Asks for the GIL
// only when the state differs from the settings.
void watch() noexcept {
  try {
    ::pthread_setname_np(::pthread_self(), "probing-torch");
    for (;; std::this_thread::sleep_for(std::chrono::duration<double>(kWatchIntervalS))) {
      bool wanted = settings().get_bool("torch.trace");
      if (wanted == g_installed.load() || g_failed.load()) continue;
      if (wanted && !torch_loaded()) continue;
      (void)apply_torch_settings();
    }
  } catch (...) {
    log_error("the torch watcher stopped");
  }
}

}  // namespace

Result<nlohmann::json> apply_torch_settings() {
  Result<python::PythonRuntime*> rt = python::PythonRuntime::get();
  if (!rt.is_ok()) return rt.status();
  std::lock_guard<std::mutex> lock(g_apply_mu);
  bool on = settings().get_bool("torch.trace");
  double rate = settings().get_double("torch.sample_rate");
  bool module_backward = settings().get_bool("torch.module_backward");
  auto text = std::make_shared<std::string>();
  auto error = std::make_shared<std::string>();
  auto work = [on, rate, module_backward, text, error](const CApi& api) {
    std::optional<python::CollectionPause> pause;  // install() reads the main thread's frames
    if (on) pause.emplace(api);
    *text = call_tracer(api, on, rate, module_backward, error.get());
  };
  Status st = (*rt)->executor().run(work, python::PythonExecutor::make_limits(kApplyTimeoutS, kApplyTimeoutS),
                                    [](const CApi&) -> PyObject* { return nullptr; });
  if (!st.is_ok()) return st;
  if (!error->empty()) return Status(Code::kInternal, "torch tracing: " + *error);
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status(Code::kInternal, "torch tracing: no status");
  bool installed = j.value("installed", false);
  if (installed != g_installed.exchange(installed)) {
    log_info(std::string("torch tracing ") + (installed ? "on" : "off"));
  }
  if (j.contains("module_backward_error") && j["module_backward_error"].is_string()) {
    log_warn("torch.module_backward stopped itself: " + j["module_backward_error"].get<std::string>());
  }
  if (j.contains("error") && j["error"].is_string()) {
    g_failed.store(true);
    log_warn("torch tracing stopped itself: " + j["error"].get<std::string>());
  } else if (j.contains("declined") && j["declined"].is_string()) {
    g_failed.store(true);  // not asked again until the setting changes
    log_info("torch tracing: " + j["declined"].get<std::string>());
  }
  return j;
}

void start_torch_tracing() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto apply = [](const std::string&, const std::string&) {
      g_failed.store(false);  // a new setting: try again
      Result<nlohmann::json> st = apply_torch_settings();
      if (!st.is_ok() && st.status().code() != Code::kUnavailable) log_warn(st.status().message());
    };
    settings().observe("torch.trace", apply);
    settings().observe("torch.sample_rate", apply);
    settings().observe("torch.module_backward", apply);
    std::thread(watch).detach();
  });
}

}  // namespace probing::torch
