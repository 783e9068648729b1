// POST /memory {"action": "snapshot"}: now becomes the base python.memory_growth is measured from,
// in a process that traces its allocations. It keeps a copy of every live trace in the target:
// the full right. {"action": "cuda-history", "op": "start"|"stop"|"dump", "max_entries": N,
// "path": P}: PyTorch's CUDA allocator history, its snapshot written to P on the target's side.
#include "server/routes.h"
#include "sql/tables/tables.h"

namespace probing::server {

HttpResponse handle_memory(const HttpRequest& request) {
  nlohmann::json body = nlohmann::json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  const std::string action = body.is_object() ? body.value("action", "") : "";
  Result<nlohmann::json> reply = Status(Code::kInvalidArgument, "");
  if (action == "snapshot") {
    reply = sql::memory_snapshot();
  } else if (action == "cuda-history") {
    const std::string op = body.value("op", "");
    const nlohmann::json& n = body.contains("max_entries") ? body["max_entries"] : nlohmann::json(100000);
    const std::string path =
        body.contains("path") && body["path"].is_string() ? body["path"].get<std::string>() : "";
    if ((op != "start" && op != "stop" && op != "dump") || !n.is_number_integer() ||
        n.get<long long>() <= 0 || (op == "dump" && (path.empty() || path[0] != '/'))) {
      return error_response(400, "BadRequest",
                            R"(expected {"action": "cuda-history", "op": "start"|"stop"|"dump", )"
                            R"("max_entries": N > 0, "path": an absolute path for dump})");
    }
    reply = sql::cuda_history(op, n.get<long long>(), path);
  } else {
    return error_response(400, "BadRequest",
                          R"(expected {"action": "snapshot"} or {"action": "cuda-history", ...})");
  }
  if (!reply.is_ok()) return error_response(reply.status());
  return json_response(*reply);
}

}  // namespace probing::server
