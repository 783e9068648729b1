// probing mcp [--allow-eval]: a Model Context Protocol server on standard input and output, for
// LLM agents. Each tool runs this same probing executable as a child (the command a person would
// type), so that a tool answers exactly as the CLI does and takes nothing from this process's
// state. Read-only unless started with --allow-eval: every tool but eval runs with --read-only,
// and the agent itself then grants the read right only (no SET, no eval, locals without the
// target's reprs), whatever the connection would allow.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "build_info.h"
#include "cli/common.h"

extern char** environ;

namespace probing::cli {
namespace {

constexpr size_t kMaxOutput = 256 << 10;  // bytes of a tool's answer
constexpr double kMaxProfileSeconds = 60;
const char* const kProtocolVersions[] = {"2025-06-18", "2025-03-26", "2024-11-05"};

struct McpArgs {
  bool allow_eval = false;
};

struct ChildResult {
  int status = -1;  // exit code; -1 when it was killed or could not start
  std::string out, err;
  bool timed_out = false;
};

// Runs this executable with `args` and the environment plus `env`, for at most `timeout_s`,
// keeping the first kMaxOutput bytes of each stream.
ChildResult run_self(const std::vector<std::string>& args, const std::vector<std::string>& env,
                     double timeout_s) {
  ChildResult r;
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return r;
  if (::pipe2(err, O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    return r;
  }
  std::vector<std::string> envs;
  for (char** e = environ; *e != nullptr; ++e) envs.emplace_back(*e);
  envs.insert(envs.end(), env.begin(), env.end());
  std::vector<char*> argv{const_cast<char*>("probing")}, envp;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const std::string& e : envs) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(err[1], STDERR_FILENO);
    const int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, STDIN_FILENO);
    ::execve("/proc/self/exe", argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  if (pid < 0) {
    ::close(out[0]);
    ::close(err[0]);
    r.err = std::string("cannot start probing: ") + std::strerror(errno);
    return r;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string* sinks[2] = {&r.out, &r.err};
  int open_fds = 2;
  while (open_fds > 0) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      r.timed_out = true;
      ::kill(pid, SIGINT);  // a profile writes what it has; then it is killed
      break;
    }
    if (::poll(fds, 2, static_cast<int>(left.count())) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      char buf[8192];
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        if (sinks[i]->size() < kMaxOutput)
          sinks[i]->append(buf, std::min<size_t>(n, kMaxOutput - sinks[i]->size()));
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  int status = 0;
  if (r.timed_out) {
    for (int i = 0; i < 20 && ::waitpid(pid, &status, WNOHANG) == 0; ++i) ::usleep(100'000);
    ::kill(pid, SIGKILL);
  }
  ::waitpid(pid, &status, 0);
  for (pollfd& f : fds) {
    if (f.fd >= 0) ::close(f.fd);
  }
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (r.out.size() >= kMaxOutput || r.err.size() >= kMaxOutput) r.err += "\n(the answer was cut at 256 KiB)";
  return r;
}

nlohmann::json schema(nlohmann::json properties, std::vector<std::string> required) {
  return {{"type", "object"}, {"properties", std::move(properties)}, {"required", std::move(required)}};
}

const nlohmann::json kTarget = {{"type", "string"},
                                {"description", "the process: a local pid, host:port, or unix:PATH"}};

nlohmann::json tools(bool allow_eval) {
  auto tool = [](const char* name, const char* description, nlohmann::json input, bool read_only = true) {
    return nlohmann::json{{"name", name},
                          {"description", description},
                          {"inputSchema", std::move(input)},
                          {"annotations", {{"readOnlyHint", read_only}, {"openWorldHint", false}}}};
  };
  nlohmann::json list = nlohmann::json::array({
      tool("list_processes",
           "The local processes that have a probing agent: pid, Python version, command line. Start here.",
           schema(nlohmann::json::object(), {})),
      tool("backtrace",
           "Every thread's Python stack in a running process, innermost frame first, with the source line; "
           "says which thread holds the GIL and what each waits on. The first thing to look at when a job "
           "is stuck.",
           schema({{"target", kTarget},
                   {"all", {{"type", "boolean"}, {"description", "every thread, not only the main one"}}},
                   {"locals",
                    {{"type", "boolean"}, {"description", "each frame's variables (built-in values only)"}}},
                   {"native", {{"type", "boolean"}, {"description", "C/C++ frames too (a local pid)"}}},
                   {"tasks",
                    {{"type", "boolean"},
                     {"description",
                      "asyncio: each event loop's tasks, where each waits, which awaits which"}}}},
                  {"target"})),
      tool("query",
           "SQL (SQLite) over what the process is and recorded: python.backtrace, python.threads, "
           "python.torch_trace (module timings per step), python.hangs, python.exceptions (threads that "
           "died, with their locals), python.samples, process.memory, "
           "process.metrics, ... SELECT * FROM information_schema.tables lists them all. Read-only.",
           schema(
               {{"target", kTarget}, {"sql", {{"type", "string"}, {"description", "one SELECT statement"}}}},
               {"target", "sql"})),
      tool("settings", "The agent's settings in the process, with values, defaults and what each does.",
           schema({{"target", kTarget}}, {"target"})),
      tool(
          "profile",
          "Where the time goes: samples every Python thread for some seconds without stopping it and answers "
          "the hottest functions (own and total time).",
          schema(
              {{"target", kTarget},
               {"seconds", {{"type", "number"}, {"description", "how long to sample, 1 to 60 (default 5)"}}},
               {"idle", {{"type", "boolean"}, {"description", "count waiting threads too"}}},
               {"async", {{"type", "boolean"}, {"description", "asyncio programs: by task"}}}},
              {"target"})),
  });
  if (allow_eval) {
    list.push_back(
        tool("eval",
             "Runs Python code in the process's __main__ and answers what it prints (and the value "
             "of a final expression). Changes the process: use with care.",
             schema({{"target", kTarget},
                     {"code", {{"type", "string"}}},
                     {"timeout", {{"type", "number"}, {"description", "seconds (default 30)"}}}},
                    {"target", "code"}),
             false));
  }
  return list;
}

struct ToolError {
  std::string message;
};

std::string string_arg(const nlohmann::json& args, const char* name) {
  if (!args.contains(name)) throw ToolError{std::string("missing argument '") + name + "'"};
  const nlohmann::json& v = args[name];
  if (v.is_number_integer()) return std::to_string(v.get<long long>());
  if (!v.is_string()) throw ToolError{std::string("'") + name + "' must be a string"};
  return v.get<std::string>();
}

bool flag_arg(const nlohmann::json& args, const char* name) {
  return args.contains(name) && args[name].is_boolean() && args[name].get<bool>();
}

double number_arg(const nlohmann::json& args, const char* name, double fallback, double lo, double hi) {
  if (!args.contains(name)) return fallback;
  if (!args[name].is_number()) throw ToolError{std::string("'") + name + "' must be a number"};
  return std::clamp(args[name].get<double>(), lo, hi);
}

class Server {
 public:
  Server(const Context& ctx, const McpArgs& args) : ctx_(ctx), args_(args) {}

  // The reply to one message; null for a notification.
  nlohmann::json handle(const nlohmann::json& msg) {
    if (!msg.is_object() || !msg.contains("method") || !msg["method"].is_string()) {
      return error(msg.value("id", nlohmann::json()), -32600, "not a JSON-RPC request");
    }
    const std::string method = msg["method"].get<std::string>();
    if (!msg.contains("id")) return nullptr;  // a notification: initialized, cancelled, ...
    const nlohmann::json id = msg["id"];
    const nlohmann::json params = msg.value("params", nlohmann::json::object());
    if (method == "initialize") return result(id, initialize(params));
    if (method == "ping") return result(id, nlohmann::json::object());
    if (method == "tools/list") return result(id, {{"tools", tools(args_.allow_eval)}});
    if (method == "tools/call") {
      const std::string name = params.value("name", "");
      const nlohmann::json arguments = params.value("arguments", nlohmann::json::object());
      bool known = false;
      for (const auto& t : tools(args_.allow_eval)) known = known || t["name"] == name;
      if (!known) {
        return error(id, -32602,
                     name == "eval" ? "eval is off: start `probing mcp --allow-eval` to let clients run code"
                                    : "no tool '" + name + "'");
      }
      return result(id, call(name, arguments));
    }
    return error(id, -32601, "no method '" + method + "'");
  }

 private:
  nlohmann::json initialize(const nlohmann::json& params) {
    std::string version = kProtocolVersions[0];
    const std::string asked = params.value("protocolVersion", "");
    for (const char* v : kProtocolVersions) {
      if (asked == v) version = v;
    }
    return {{"protocolVersion", version},
            {"capabilities", {{"tools", {{"listChanged", false}}}}},
            {"serverInfo", {{"name", "probing"}, {"version", PROBING_VERSION}}},
            {"instructions",
             "probing looks inside running Python processes (PyTorch training and inference) without "
             "stopping them. list_processes finds them; backtrace shows where each thread is (a stuck job: "
             "start there); query answers SQL over what the agent recorded (module timings, memory, hangs); "
             "profile tells where the time goes."}};
  }

  nlohmann::json call(const std::string& name, const nlohmann::json& args) {
    try {
      std::vector<std::string> argv;
      double timeout_s = 60;
      if (name == "list_processes") {
        argv = {"list"};
      } else {
        const std::string target = string_arg(args, "target");
        if (target.empty() || target[0] == '-') throw ToolError{"'" + target + "' is not a target"};
        if (name != "eval") argv.push_back("--read-only");
        if (ctx_.connect.tls) argv.push_back("--tls");
        if (ctx_.connect.insecure) argv.push_back("--insecure");
        if (!ctx_.connect.cacert.empty()) argv.insert(argv.end(), {"--cacert", ctx_.connect.cacert});
        argv.push_back(target);
        if (name == "backtrace") {
          argv.push_back("backtrace");
          if (flag_arg(args, "all")) argv.push_back("--all");
          if (flag_arg(args, "locals")) argv.push_back("--locals");
          if (flag_arg(args, "native")) argv.push_back("--native");
          if (flag_arg(args, "tasks")) argv.push_back("--tasks");
        } else if (name == "query") {
          argv.insert(argv.end(), {"query", "--", string_arg(args, "sql")});
          timeout_s = 150;
        } else if (name == "settings") {
          argv.push_back("config");
        } else if (name == "profile") {
          const double seconds = number_arg(args, "seconds", 5, 1, kMaxProfileSeconds);
          argv.insert(argv.end(), {"profile", "--seconds", std::to_string(seconds)});
          if (flag_arg(args, "idle")) argv.push_back("--idle");
          if (flag_arg(args, "async")) argv.push_back("--async");
          timeout_s = seconds + 60;
        } else if (name == "eval") {
          const double timeout = number_arg(args, "timeout", 30, 0.1, 600);
          argv.insert(argv.end(),
                      {"eval", "--timeout", std::to_string(timeout), "--", string_arg(args, "code")});
          timeout_s = timeout + 30;
        }
      }
      std::vector<std::string> env;
      if (!ctx_.connect.token.empty()) env.push_back("PROBING_TOKEN=" + ctx_.connect.token);
      const ChildResult r = run_self(argv, env, timeout_s);
      std::string text = r.out;
      if (!r.err.empty()) text += (text.empty() || text.back() == '\n' ? "" : "\n") + r.err;
      if (r.timed_out) text += "\n(no answer within " + std::to_string(static_cast<int>(timeout_s)) + " s)";
      if (text.empty()) text = r.status == 0 ? "(no output)" : "(failed, with no message)";
      return {{"content", nlohmann::json::array({{{"type", "text"}, {"text", text}}})},
              {"isError", r.status != 0 || r.timed_out}};
    } catch (const ToolError& e) {
      return {{"content", nlohmann::json::array({{{"type", "text"}, {"text", e.message}}})},
              {"isError", true}};
    }
  }

  static nlohmann::json result(const nlohmann::json& id, nlohmann::json value) {
    return {{"jsonrpc", "2.0"}, {"id", id}, {"result", std::move(value)}};
  }
  static nlohmann::json error(const nlohmann::json& id, int code, const std::string& message) {
    return {{"jsonrpc", "2.0"}, {"id", id}, {"error", {{"code", code}, {"message", message}}}};
  }

  const Context& ctx_;
  const McpArgs& args_;
};

int run_mcp(const Context& ctx, const McpArgs& args) {
  ::signal(SIGPIPE, SIG_IGN);
  Server server(ctx, args);
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json msg = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    nlohmann::json reply;
    if (msg.is_discarded()) {
      reply = {{"jsonrpc", "2.0"}, {"id", nullptr}, {"error", {{"code", -32700}, {"message", "not JSON"}}}};
    } else if (msg.is_array()) {  // a batch (protocol 2025-03-26)
      reply = nlohmann::json::array();
      for (const auto& m : msg) {
        nlohmann::json r = server.handle(m);
        if (!r.is_null()) reply.push_back(std::move(r));
      }
      if (reply.empty()) continue;
    } else {
      reply = server.handle(msg);
      if (reply.is_null()) continue;
    }
    std::cout << reply.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n" << std::flush;
  }
  return kExitOk;
}

}  // namespace

void add_mcp_command(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<McpArgs>();
  CLI::App* cmd = app.add_subcommand(
      "mcp",
      "Serve the Model Context Protocol on standard input and output, for LLM agents (Claude Code,\n"
      "Cursor, ...): tools to list the processes, read their stacks, query them in SQL, read their\n"
      "settings and profile them. Read-only: each tool asks the agent for the read right only (no SET,\n"
      "no eval, locals without the target's reprs), unless --allow-eval adds the eval tool.");
  cmd->add_flag("--allow-eval", args->allow_eval,
                "add the eval tool, which runs the client's Python code in the target");
  cmd->footer(
      "The tools: list_processes, backtrace, query, settings, profile (and eval with --allow-eval).\n"
      "The global --token, --tls, --cacert and --insecure apply to every tool's connection.\n"
      "\n"
      "Example, in an MCP client's configuration:\n"
      "  {\"mcpServers\": {\"probing\": {\"command\": \"probing\", \"args\": [\"mcp\"]}}}");
  on_run(cmd, [&ctx, args] { return run_mcp(ctx, *args); });
}

}  // namespace probing::cli
