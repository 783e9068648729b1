// probing list: the local processes with an agent.
#include <iomanip>
#include <iostream>

#include "cli/common.h"

namespace probing::cli {
namespace {

std::string join_cmdline(const nlohmann::json& cmdline) {
  std::string out;
  if (!cmdline.is_array()) return out;
  for (const auto& a : cmdline) {
    if (!out.empty()) out += ' ';
    out += a.is_string() ? a.get<std::string>() : "";
  }
  return out;
}

int run_list(bool json) {
  nlohmann::json rows = nlohmann::json::array();
  for (pid_t pid : client::list_local_agents()) {
    client::Target t;
    t.kind = client::Target::Kind::kPid;
    t.pid = pid;
    t.text = std::to_string(pid);
    nlohmann::json row = {{"pid", pid}};
    auto c = client::Client::connect(t, 2);
    Result<client::Response> r = c.is_ok() ? (*c)->request("GET", "/health", "", 2) : Result<client::Response>(c.status());
    if (r.is_ok() && r->status == 200 && r->json().is_object()) {
      nlohmann::json h = r->json();
      row["python"] = h.value("python", nlohmann::json());
      row["command"] = join_cmdline(h["cmdline"]);
      row["remote"] = h.value("remote", nlohmann::json());
      row["python_status"] = h.value("python_status", "");
    } else {
      row["error"] = r.is_ok() ? r->error_message() : r.status().message();
    }
    rows.push_back(row);
  }
  if (json) {
    std::cout << rows.dump(2) << "\n";
    return kExitOk;
  }
  if (rows.empty()) {
    std::cout << "no process with a probing agent (start one with `probing launch -- CMD`, or attach with "
                 "`probing PID inject`)\n";
    return kExitOk;
  }
  std::cout << std::left << std::setw(8) << "PID" << std::setw(9) << "PYTHON" << std::setw(22) << "REMOTE"
            << "COMMAND\n";
  for (const auto& row : rows) {
    auto text = [](const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : std::string("-"); };
    std::string command = row.contains("error") ? "(" + text(row["error"]) + ")" : text(row["command"]);
    if (command.size() > 80) command = command.substr(0, 77) + "...";
    std::cout << std::left << std::setw(8) << row["pid"].get<int>() << std::setw(9)
              << text(row.value("python", nlohmann::json())) << std::setw(22)
              << text(row.value("remote", nlohmann::json())) << command << "\n";
  }
  return kExitOk;
}

}  // namespace

void add_list_command(CLI::App& app, Context&) {
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("list", "List the local processes that have a probing agent.");
  cmd->add_flag("--json", *json, "print the list as JSON");
  on_run(cmd, [json] { return run_list(*json); });
}

}  // namespace probing::cli
