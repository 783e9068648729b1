// POST /memory {"action": "track", "on": true|false[, "frames": N]} turns tracemalloc on or off;
// {"action": "snapshot"} makes now the base python.memory_growth is measured from. Both change
// the target (tracemalloc slows every allocation; a snapshot keeps its traces): the full right.
#include "server/routes.h"
#include "sql/tables/tables.h"

namespace probing::server {

constexpr int kMaxFrames = 100;

HttpResponse handle_memory(const HttpRequest& request) {
  nlohmann::json body = nlohmann::json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  const std::string action = body.is_object() ? body.value("action", "") : "";
  Result<nlohmann::json> reply = Status(Code::kInternal, "");
  if (action == "track") {
    const nlohmann::json on = body.value("on", nlohmann::json());
    const nlohmann::json frames = body.value("frames", nlohmann::json(1));
    if (!on.is_boolean() || !frames.is_number_integer() || frames.get<int>() < 1 ||
        frames.get<int>() > kMaxFrames) {
      return error_response(400, "BadRequest",
                            "expected {\"action\": \"track\", \"on\": true|false, \"frames\": 1 to 100}");
    }
    reply = sql::memory_track(on.get<bool>(), frames.get<int>());
  } else if (action == "snapshot") {
    reply = sql::memory_snapshot();
  } else {
    return error_response(400, "BadRequest",
                          R"(expected {"action": "track", "on": ...} or {"action": "snapshot"})");
  }
  if (!reply.is_ok()) return error_response(reply.status());
  return json_response(*reply);
}

}  // namespace probing::server
