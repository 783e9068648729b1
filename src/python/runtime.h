// PythonRuntime: the agent's view of the interpreter it lives in, made once Python is
// initialized: the resolved API, the version (checked against the supported range), and the
// executor that runs Python work on agent threads.
#pragma once

#include <memory>

#include "core/status.h"
#include "python/capi.h"
#include "layout/version.h"
#include "python/executor.h"

namespace probing::python {

class PythonRuntime {
 public:
  // The process's runtime. kUnavailable before Py_Initialize or in a process without Python;
  // kUnsupported for a version outside 3.9-3.13. Cheap after the first success.
  static Result<PythonRuntime*> get();

  const CApi& api() const { return *api_; }
  const layout::PythonVersion& version() const { return version_; }
  PythonExecutor& executor() { return *executor_; }

  // The version text of the interpreter even when unsupported, or "" when unknown.
  static std::string version_text();

 private:
  PythonRuntime(const CApi* api, layout::PythonVersion v, std::unique_ptr<PythonExecutor> e)
      : api_(api), version_(std::move(v)), executor_(std::move(e)) {}
  const CApi* api_;
  layout::PythonVersion version_;
  std::unique_ptr<PythonExecutor> executor_;
};

}  // namespace probing::python
