// POST /query {"sql"} and GET /config, GET|PUT /config/KEY (DESIGN.md §4).
#include "core/log.h"
#include "core/settings.h"
#include "server/routes.h"
#include "sql/engine.h"

namespace probing::server {
namespace {

nlohmann::json setting_json(const SettingInfo& s) {
  return {{"name", s.name}, {"value", s.value}, {"default", s.default_value},
          {"description", s.description}, {"kind", kind_name(s.kind)}};
}

std::optional<SettingInfo> find_setting(const std::string& name) {
  for (SettingInfo& s : settings().list()) {
    if (s.name == name) return s;
  }
  return std::nullopt;
}

HttpResponse unknown_setting(const std::string& name) {
  return error_response(404, "NotFound", settings().unknown_text(name) + " (`probing PID config` lists them)");
}

}  // namespace

HttpResponse handle_query(const HttpRequest& request) {
  nlohmann::json body = nlohmann::json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object() || !body.contains("sql") || !body["sql"].is_string()) {
    return error_response(400, "BadRequest", R"(expected a JSON body {"sql": "..."})");
  }
  Result<sql::QueryResult> result = sql::Engine::get().query(body["sql"].get<std::string>());
  if (!result.is_ok()) {
    if (result.status().code() == Code::kInvalidArgument) return error_response(400, "SQLError", result.status().message());
    return error_response(result.status());
  }
  return json_response(result->to_json());
}

HttpResponse handle_config(const HttpRequest& request) {
  constexpr std::string_view kPrefix = "/config/";
  if (request.path == "/config") {
    if (request.method != "GET") return error_response(405, "BadRequest", "use GET /config or PUT /config/KEY");
    nlohmann::json list = nlohmann::json::array();
    for (const SettingInfo& s : settings().list()) list.push_back(setting_json(s));
    return json_response({{"settings", std::move(list)}});
  }
  std::string name = request.path.substr(kPrefix.size());
  if (request.method == "GET") {
    std::optional<SettingInfo> s = find_setting(name);
    return s ? json_response(setting_json(*s)) : unknown_setting(name);
  }
  if (request.method != "PUT") return error_response(405, "BadRequest", "use GET or PUT /config/KEY");
  nlohmann::json body = nlohmann::json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object() || !body.contains("value") ||
      !(body["value"].is_string() || body["value"].is_number() || body["value"].is_boolean())) {
    return error_response(400, "BadRequest", R"(expected a JSON body {"value": "..."})");
  }
  std::string value = body["value"].is_string() ? body["value"].get<std::string>() : body["value"].dump();
  Status st = settings().change(name, value);
  if (st.code() == Code::kNotFound) return unknown_setting(name);
  if (!st.is_ok()) return error_response(400, "BadRequest", st.message());
  std::optional<SettingInfo> s = find_setting(name);
  log_info("setting " + name + " = " + (s ? s->value : value) + " by " + request.peer.address);
  return json_response(setting_json(*s));
}

}  // namespace probing::server
