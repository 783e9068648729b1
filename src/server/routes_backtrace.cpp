// GET /backtrace?thread=TID&all=1&locals=1 — the target's Python stacks (DESIGN.md §4).
#include <cstdlib>

#include "core/log.h"
#include "core/settings.h"
#include "python/frames.h"
#include "python/runtime.h"
#include "server/routes.h"

namespace probing::server {
namespace {

bool flag(const HttpRequest& request, const char* name) {
  auto it = request.query.find(name);
  if (it == request.query.end()) return false;
  const std::string& v = it->second;
  return v.empty() || v == "1" || v == "true" || v == "yes" || v == "on";
}

}  // namespace

HttpResponse handle_backtrace(const HttpRequest& request) {
  python::BacktraceOptions options;
  options.all = flag(request, "all");
  options.locals = flag(request, "locals");
  if (flag(request, "native")) {
    return error_response(
        501, "Unsupported",
        "native frames are read from outside the process, with ptrace: run `probing PID backtrace "
        "--native` on the target's machine");
  }
  if (auto it = request.query.find("thread"); it != request.query.end() && !it->second.empty()) {
    char* end = nullptr;
    long long tid = std::strtoll(it->second.c_str(), &end, 10);
    if (end == nullptr || *end != '\0' || tid <= 0) {
      return error_response(400, "BadRequest", "thread must be a thread id (threading ident or kernel tid)");
    }
    options.thread = tid;
  }
  options.gil_timeout_s = settings().get_double("backtrace.gil_timeout_s");
  Result<python::PythonRuntime*> runtime = python::PythonRuntime::get();
  if (!runtime.is_ok()) return error_response(runtime.status());
  Result<nlohmann::json> result = python::capture_backtrace(**runtime, options);
  if (!result.is_ok()) return error_response(result.status());
  return json_response(*result);
}

}  // namespace probing::server
