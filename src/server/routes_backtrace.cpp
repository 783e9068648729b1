// GET /backtrace?thread=TID&all=1&locals=1&tasks=1 — the target's Python stacks (DESIGN.md §4),
// and with tasks=1 its asyncio tasks.
#include <cstdlib>
#include <set>

#include "core/log.h"
#include "core/settings.h"
#include "profile/tasks.h"
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

// With tasks=1: every running event loop's tasks, under "tasks" (tasks_helpers.py's snapshot), or
// why they could not be read under "tasks_error". The stacks of the threads that run a loop are
// kept beside those asked for (the main thread's by default): a running task's stack is its
// thread's. The snapshot needs the GIL; the stacks, read first, do not: when they were read
// without it, the tasks are not waited for again.
void add_tasks(python::PythonRuntime& runtime, const python::BacktraceOptions& asked,
               nlohmann::json* answer) {
  constexpr double kGilTimeout_s = 1;  // the stacks were read with the GIL: it is let go
  std::set<unsigned long> loop_threads;
  if (answer->value("gil_free", false)) {
    (*answer)["tasks_error"] =
        "the asyncio tasks need the GIL, which was not had within backtrace.gil_timeout_s: the stacks "
        "show which thread holds it";
  } else if (Result<nlohmann::json> tasks = profile::snapshot_tasks_now(runtime, kGilTimeout_s);
             !tasks.is_ok()) {
    (*answer)["tasks_error"] = "the asyncio tasks could not be read: " + tasks.status().message();
  } else {
    for (const auto& loop : tasks->value("loops", nlohmann::json::array()))
      loop_threads.insert(loop.value("thread", 0UL));
    (*answer)["tasks"] = std::move(*tasks);
  }
  if (asked.all || asked.thread != 0 || !answer->contains("threads")) return;
  nlohmann::json kept = nlohmann::json::array();
  for (auto& t : (*answer)["threads"]) {
    const nlohmann::json& id = t.value("thread_id", nlohmann::json());
    if (t.value("is_main", false) || (id.is_number_unsigned() && loop_threads.count(id.get<unsigned long>())))
      kept.push_back(std::move(t));
  }
  (*answer)["threads"] = std::move(kept);
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
  const bool tasks = flag(request, "tasks");
  python::BacktraceOptions capture = options;
  if (tasks && options.thread == 0) capture.all = true;  // the loops' threads, kept by add_tasks
  Result<python::PythonRuntime*> runtime = python::PythonRuntime::get();
  if (!runtime.is_ok()) return error_response(runtime.status());
  Result<nlohmann::json> result = python::capture_backtrace(**runtime, capture);
  if (!result.is_ok()) return error_response(result.status());
  if (tasks) add_tasks(**runtime, options, &*result);
  return json_response(*result);
}

}  // namespace probing::server
