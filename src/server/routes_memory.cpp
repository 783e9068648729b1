// POST /memory {"action": "snapshot"}: now becomes the base python.memory_growth is measured from,
// in a process that traces its allocations. It keeps a copy of every live trace in the target:
// the full right.
#include "server/routes.h"
#include "sql/tables/tables.h"

namespace probing::server {

HttpResponse handle_memory(const HttpRequest& request) {
  nlohmann::json body = nlohmann::json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (!body.is_object() || body.value("action", "") != "snapshot") {
    return error_response(400, "BadRequest", R"(expected {"action": "snapshot"})");
  }
  Result<nlohmann::json> reply = sql::memory_snapshot();
  if (!reply.is_ok()) return error_response(reply.status());
  return json_response(*reply);
}

}  // namespace probing::server
