#include "cli/common.h"

#include <sys/stat.h>
#include <unistd.h>

#include <iostream>

#include "core/settings.h"

namespace probing::cli {

Result<std::unique_ptr<client::Client>> connect_target(const Context& ctx, double timeout_s) {
  if (ctx.target.empty()) {
    return Status(Code::kInvalidArgument,
                  "no target: give a pid, host:port or unix:PATH, e.g. probing 1234 eval 1+1");
  }
  Result<client::Target> target = client::parse_target(ctx.target);
  if (!target.is_ok()) return target.status();
  return client::Client::connect(*target, timeout_s, ctx.connect);
}

// What the agent knows of each thread (name, daemon) by kernel tid; empty when no agent answers.
std::map<long, nlohmann::json> agent_threads(const Context& ctx, std::vector<std::string>* notes) {
  std::map<long, nlohmann::json> threads;
  auto client = connect_target(ctx, 2);
  Result<client::Response> reply = client.is_ok() ? (*client)->request("GET", "/backtrace?all=1", "", 5)
                                                  : Result<client::Response>(client.status());
  nlohmann::json j = reply.is_ok() && reply->status == 200 ? reply->json() : nlohmann::json();
  if (!j.is_object()) {
    notes->push_back("no agent answered, so thread names are the kernel's (" +
                     (reply.is_ok() ? reply->error_message() : reply.status().message()) + ")");
    return threads;
  }
  for (const auto& t : j.value("threads", nlohmann::json::array())) {
    if (t.value("native_thread_id", nlohmann::json()).is_number())
      threads[t["native_thread_id"].get<long>()] = t;
  }
  return threads;
}

// A local pid for the reads from outside; an error that says why for any other target.
Result<nlohmann::json> agent_json(client::Client& client, const std::string& method, const std::string& path,
                                  const std::string& body, double timeout_s, const std::string& too_old) {
  Result<client::Response> reply = client.request(method, path, body, timeout_s);
  if (!reply.is_ok()) return reply.status();
  if (reply->status == 404) return Status(Code::kUnsupported, too_old);
  if (reply->status / 100 != 2) return Status(Code::kUnavailable, reply->error_message());
  nlohmann::json j = reply->json();
  if (j.is_discarded() || !j.is_object()) return Status(Code::kInternal, "the agent's reply is not JSON");
  return j;
}

std::vector<nlohmann::json> rows_as_objects(const nlohmann::json& reply) {
  std::vector<nlohmann::json> out;
  const nlohmann::json& columns = reply.value("columns", nlohmann::json::array());
  for (const nlohmann::json& row : reply.value("rows", nlohmann::json::array())) {
    nlohmann::json o = nlohmann::json::object();
    for (size_t i = 0; i < columns.size() && i < row.size(); ++i) o[columns[i].get<std::string>()] = row[i];
    out.push_back(std::move(o));
  }
  return out;
}

Result<pid_t> local_pid(const Context& ctx, const char* what) {
  Result<client::Target> target = client::parse_target(ctx.target);
  if (!target.is_ok()) return target.status();
  if (target->kind != client::Target::Kind::kPid) {
    return Status(Code::kInvalidArgument, std::string(what) +
                                              " reads the process from outside with ptrace: run " +
                                              "it on the target's machine and give its pid");
  }
  return target->pid;
}

int fail(const std::string& message) {
  std::cerr << "probing: " << message << "\n";
  return kExitFailed;
}

int fail(const Status& status) {
  fail(status.message());
  return status.code() == Code::kInvalidArgument ? kExitUsage : kExitFailed;
}

Result<std::string> agent_library_path() {
  if (const char* env = ::getenv("PROBING_LIBRARY"); env != nullptr && env[0] != '\0') {
    if (::access(env, R_OK) != 0)
      return Status(Code::kNotFound, std::string("PROBING_LIBRARY=") + env + " is not readable");
    return std::string(env);
  }
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return errno_status("readlink(/proc/self/exe)");
  std::string exe(buf, static_cast<size_t>(n));
  std::string dir = exe.substr(0, exe.rfind('/'));
  std::string path = dir + "/../lib/probing/libprobing.so";
  char resolved[PATH_MAX];
  if (::realpath(path.c_str(), resolved) == nullptr || ::access(resolved, R_OK) != 0) {
    return Status(Code::kNotFound, "the agent library is not at " + path + "; set PROBING_LIBRARY");
  }
  return std::string(resolved);
}

Result<std::pair<std::string, std::string>> parse_define(const std::string& text) {
  size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    return Status(Code::kInvalidArgument, "-D expects key=value, got '" + text + "'");
  }
  std::string key = text.substr(0, eq);
  std::string value = text.substr(eq + 1);
  Settings s;
  declare_builtin_settings(s);
  PROBING_RETURN_IF_ERROR(s.set(key, value));
  return std::make_pair(key, value);
}

void on_run(CLI::App* command, std::function<int()> fn) {
  command->callback([fn = std::move(fn)] {
    int rc = fn();
    if (rc != kExitOk) throw CLI::RuntimeError(rc);
  });
}

}  // namespace probing::cli
