// probing TARGET config [KEY[=VALUE]] [--json]
#include <cctype>
#include <iostream>

#include "cli/common.h"
#include "cli/format.h"

namespace probing::cli {
namespace {

struct ConfigArgs {
  std::string setting;  // "", KEY, or KEY=VALUE
  bool json = false;
};

// `key` as one URL path segment: bytes outside [A-Za-z0-9._~-] percent-encoded.
std::string path_segment(const std::string& key) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : key) {
    if (std::isalnum(c) != 0 || c == '.' || c == '_' || c == '-' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  return out;
}

std::string text_of(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  return v.is_null() ? "" : v.dump();
}

nlohmann::json member(const nlohmann::json& object, const char* key) {
  return object.is_object() && object.contains(key) ? object[key] : nlohmann::json();
}

// {"settings": [...]} as a reply format_table reads: name, value, default, description.
nlohmann::json settings_table(const nlohmann::json& j) {
  nlohmann::json table = {{"columns", {"name", "value", "default", "description"}},
                          {"rows", nlohmann::json::array()}};
  nlohmann::json settings = member(j, "settings");
  if (!settings.is_array()) return table;
  for (const auto& s : settings) {
    table["rows"].push_back(
        {member(s, "name"), member(s, "value"), member(s, "default"), member(s, "description")});
  }
  return table;
}

int run_config(const Context& ctx, const ConfigArgs& args) {
  std::string method = "GET";
  std::string path = "/config";
  std::string body;
  size_t eq = args.setting.find('=');
  if (!args.setting.empty()) {
    std::string key = args.setting.substr(0, eq);
    if (key.empty()) {
      return fail(Status(Code::kInvalidArgument, "config expects KEY or KEY=VALUE, got '" + args.setting + "'"));
    }
    path += "/" + path_segment(key);
    if (eq != std::string::npos) {
      method = "PUT";
      body = nlohmann::json{{"value", args.setting.substr(eq + 1)}}.dump();
    }
  }
  auto client = connect_target(ctx);
  if (!client.is_ok()) return fail(client.status());
  Result<client::Response> reply = (*client)->request(method, path, body, 15);
  if (!reply.is_ok()) return fail(reply.status());
  if (reply->status / 100 != 2) return fail(reply->error_message());
  nlohmann::json j = reply->json();
  if (j.is_discarded() || !j.is_object())
    return fail("the agent sent a reply that is not JSON: " + reply->body.substr(0, 200));
  if (args.json) {
    std::cout << j.dump(2) << "\n";
  } else if (args.setting.empty()) {
    std::cout << format_table(settings_table(j), terminal_width(), /*row_count=*/false);
  } else if (eq == std::string::npos) {
    std::cout << text_of(member(j, "value")) << "\n";
  } else {
    std::cout << text_of(member(j, "name")) << " = " << text_of(member(j, "value")) << "\n";
  }
  return kExitOk;
}

}  // namespace

void add_config_command(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<ConfigArgs>();
  CLI::App* cmd = app.add_subcommand(
      "config",
      "Show or change the agent's settings in the target.\n"
      "No argument: every setting with its value, default and description.\n"
      "KEY: just that setting's value. KEY=VALUE: sets it and prints KEY = VALUE as the agent\n"
      "now holds it. Exits 1 for an unknown setting or a value it refuses.");
  cmd->add_option("setting", args->setting, "KEY to show or KEY=VALUE to set");
  cmd->add_flag("--json", args->json, "print the agent's reply as JSON");
  cmd->footer(
      "Examples:\n"
      "  probing 1234 config\n"
      "  probing 1234 config eval.timeout_s\n"
      "  probing 1234 config eval.timeout_s=10\n"
      "  probing 1234 query \"SET eval.timeout_s = 10\"   # the same, in SQL");
  on_run(cmd, [&ctx, args] { return run_config(ctx, *args); });
}

}  // namespace probing::cli
