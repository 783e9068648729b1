#include "python/runtime.h"

#include <mutex>

#include "core/settings.h"

namespace probing::python {

Result<PythonRuntime*> PythonRuntime::get() {
  static std::mutex mu;
  static PythonRuntime* runtime = nullptr;  // leaked on purpose: used by agent threads at exit
  std::lock_guard<std::mutex> lock(mu);
  if (runtime != nullptr) return runtime;
  Result<const CApi*> api = load_capi();
  if (!api.is_ok()) return api.status();
  if (!(*api)->Py_IsInitialized()) {
    return Status(Code::kUnavailable, "the Python interpreter is not initialized yet");
  }
  Result<layout::PythonVersion> version = interpreter_version(**api);
  if (!version.is_ok()) return version.status();
  PROBING_RETURN_IF_ERROR(layout::check_supported(*version));
  PROBING_RETURN_IF_ERROR(layout::check_not_free_threaded(*version, (*api)->free_threaded));
  auto workers = static_cast<int>(settings().get_int("python.max_workers"));
  runtime =
      new PythonRuntime(*api, *version, std::make_unique<PythonExecutor>(**api, workers, /*max_queued=*/64));
  return runtime;
}

std::string PythonRuntime::version_text() {
  Result<const CApi*> api = load_capi();
  if (!api.is_ok()) return "";
  Result<layout::PythonVersion> v = interpreter_version(**api);
  return v.is_ok() ? v->text : "";
}

}  // namespace probing::python
