// The routes behind `probing PID probe` (docs/probes.md):
//   GET  /probes                                     -> {"probes": [...]}
//   POST /probes {"action": "add", "where": "train.py:88", "capture": "loss.item(), lr",
//                 "when": "step % 100 == 0", "limit": 50, "expire_s": 600}  -> {"probe": {...}}
//   POST /probes {"action": "add", "watch": "trainer.lr", "where": "train.py:train", "limit": 50}
//                 (a watch: "where" names the function, "" the main loop's; "tensor": true for a
//                 tensor's in-place updates)                                  -> {"probe": {...}}
//   POST /probes {"action": "add", "catch": "ValueError", "when": "...", "limit": 10}
//                 (raises of these classes into python.exceptions; 3.12+)    -> {"probe": {...}}
//   POST /probes {"action": "remove", "id": 3}  (0: every probe)            -> {"removed": [...]}
// Listing needs the read right; adding and removing run the caller's expressions in the program:
// the full right (routes.cpp says which needs what).
#include "core/log.h"
#include "probes/probes.h"
#include "server/routes.h"

namespace probing::server {

HttpResponse handle_probes(const HttpRequest& request) {
  Result<python::PythonRuntime*> runtime = python::PythonRuntime::get();
  if (!runtime.is_ok()) return error_response(runtime.status());
  if (request.method == "GET") {
    Result<nlohmann::json> r = probes::list_probes(**runtime);
    return r.is_ok() ? json_response(*r) : error_response(r.status());
  }
  if (request.method != "POST") return error_response(405, "MethodNotAllowed", "GET or POST /probes");
  nlohmann::json body = nlohmann::json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  const std::string action = body.is_object() ? body.value("action", "") : "";
  auto text = [&body](const char* key) {
    return body.contains(key) && body[key].is_string() ? body[key].get<std::string>() : std::string();
  };
  auto number_ok = [&body](const char* key) {
    return !body.contains(key) || (body[key].is_number() && body[key].get<double>() >= 0);
  };
  Result<nlohmann::json> r = Status(Code::kInvalidArgument, "");
  if (action == "add") {
    probes::ProbeSpec spec;
    spec.where = text("where");
    spec.capture = text("capture");
    spec.when = text("when");
    spec.watch = text("watch");
    spec.tensor = body.contains("tensor") && body["tensor"].is_boolean() && body["tensor"].get<bool>();
    spec.catch_types = text("catch");
    if ((spec.where.empty() && spec.watch.empty() && spec.catch_types.empty()) || !number_ok("limit") ||
        !number_ok("expire_s")) {
      return error_response(400, "BadRequest",
                            R"(expected {"action": "add", "where": "FILE:LINE", "capture": "a, b", )"
                            R"("when": "...", "limit": N >= 0, "expire_s": S >= 0}, or a "watch": "EXPR", )"
                            R"(or a "catch": "ValueError")");
    }
    spec.limit = body.value("limit", 0LL);
    spec.expire_s = body.value("expire_s", 0.0);
    log_info("probe from " + request.peer.address + ": " + spec.where.substr(0, 200) + " capture " +
             spec.capture.substr(0, 200) + (spec.watch.empty() ? "" : " watch " + spec.watch.substr(0, 200)) +
             (spec.catch_types.empty() ? "" : " catch " + spec.catch_types.substr(0, 200)));
    r = probes::add_probe(**runtime, spec);
  } else if (action == "remove") {
    if (!body.contains("id") || !body["id"].is_number_integer() || body["id"].get<long long>() < 0) {
      return error_response(400, "BadRequest", R"(expected {"action": "remove", "id": N} (0: every probe))");
    }
    r = probes::remove_probes(**runtime, body["id"].get<long long>());
  } else {
    return error_response(400, "BadRequest",
                          R"(expected {"action": "add", ...} or {"action": "remove", "id": N})");
  }
  return r.is_ok() ? json_response(*r) : error_response(r.status());
}

}  // namespace probing::server
