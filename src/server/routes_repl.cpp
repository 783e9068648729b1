// The routes behind `probing PID repl` (docs/repl.md):
//   POST /complete  {"text": "mod", "line": "x = mod"}  ->  {"matches": ["model", ...]}
//   POST /interrupt {"id": "..."}                       ->  {"interrupted": true}
// An eval started with {"id": "..."} can be interrupted by that id; {"interactive": true} on
// /eval answers {"incomplete": true} without running an unfinished block.
#include "core/log.h"
#include "core/settings.h"
#include "python/eval.h"
#include "python/runtime.h"
#include "server/routes.h"

namespace probing::server {

HttpResponse handle_complete(const HttpRequest& request) {
  nlohmann::json body = nlohmann::json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object() || !body.contains("text") || !body["text"].is_string() ||
      (body.contains("line") && !body["line"].is_string())) {
    return error_response(400, "BadRequest", R"(expected a JSON body {"text": "...", "line": "..."})");
  }
  std::string text = body["text"].get<std::string>();
  std::string line = body.contains("line") ? body["line"].get<std::string>() : text;
  Result<python::PythonRuntime*> runtime = python::PythonRuntime::get();
  if (!runtime.is_ok()) return error_response(runtime.status());
  Result<nlohmann::json> result =
      python::complete(**runtime, text, line, settings().get_double("gil.timeout_s"));
  if (!result.is_ok()) return error_response(result.status());
  return json_response(*result);
}

HttpResponse handle_interrupt(const HttpRequest& request) {
  nlohmann::json body = nlohmann::json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object() || !body.contains("id") || !body["id"].is_string() ||
      body["id"].get<std::string>().empty()) {
    return error_response(400, "BadRequest", R"(expected a JSON body {"id": "the eval's id"})");
  }
  Result<python::PythonRuntime*> runtime = python::PythonRuntime::get();
  if (!runtime.is_ok()) return error_response(runtime.status());
  std::string id = body["id"].get<std::string>();
  log_info("interrupt from " + request.peer.address + ": eval " + id.substr(0, 100));
  pid_t thread = 0;
  Status st = python::interrupt_eval(**runtime, id, &thread);
  if (!st.is_ok()) return error_response(st);
  return json_response({{"interrupted", true}, {"id", id}, {"thread", thread}});
}

}  // namespace probing::server
