// What every CLI command shares: the target, connecting to it, and reporting errors.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "client/client.h"
#include "core/status.h"

namespace probing::cli {

// Exit codes of the probing command.
constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;  // the request failed, or the code raised in the target
constexpr int kExitUsage = 2;
constexpr int kExitInterrupted = 130;  // Ctrl-C twice: stopped waiting (128 + SIGINT, as shells say)

struct Context {
  std::string target;              // as given: positional before the command, or -t/--target
  client::ConnectOptions connect;  // --token (or PROBING_TOKEN), --tls, --cacert, --insecure
};

// Connects to the context's target with its options; kInvalidArgument when none was given.
Result<std::unique_ptr<client::Client>> connect_target(const Context& ctx, double timeout_s = 5);

// `method path` on the agent, its reply as a JSON object. A 404 is kUnsupported saying `too_old`
// (the agent predates the route); any other non-2xx is kUnavailable with the agent's message.
Result<nlohmann::json> agent_json(client::Client& client, const std::string& method, const std::string& path,
                                  const std::string& body, double timeout_s, const std::string& too_old);

// A query's reply ({"columns": [...], "rows": [[...]]}) as one column -> value object per row.
std::vector<nlohmann::json> rows_as_objects(const nlohmann::json& reply);

// A local pid, for commands that read the process from outside (`what` names the command or
// flag); kInvalidArgument, saying why, for any other target.
Result<pid_t> local_pid(const Context& ctx, const char* what);

// What the target's agent knows of each thread (name, daemon: GET /backtrace?all=1) by kernel
// tid; empty, with a note saying why, when no agent answers.
std::map<long, nlohmann::json> agent_threads(const Context& ctx, std::vector<std::string>* notes);

// The stacks of local process `pid` read from outside with ptrace, native frames merged with the
// Python frames they run (`backtrace --native`'s answer); the main thread, or every one with `all`.
Result<nlohmann::json> native_backtrace(const Context& ctx, pid_t pid, bool all);

// Prints "probing: <message>" to stderr and returns kExitFailed (kExitUsage for a
// kInvalidArgument status: the command line was wrong).
int fail(const Status& status);
int fail(const std::string& message);

// The agent library to preload or inject: $PROBING_LIBRARY, else ../lib/probing/libprobing.so
// beside this executable (the same in the build tree and an install).
Result<std::string> agent_library_path();

// Checks a -D key=value against the settings table; returns the pair.
Result<std::pair<std::string, std::string>> parse_define(const std::string& text);

// Makes `fn` the command's action; its non-zero return becomes the process's exit code.
void on_run(CLI::App* command, std::function<int()> fn);

// Each command adds itself to the app. `ctx` outlives parsing and running.
void add_eval_command(CLI::App& app, Context& ctx);
void add_list_command(CLI::App& app, Context& ctx);
void add_launch_command(CLI::App& app, Context& ctx);
void add_inject_command(CLI::App& app, Context& ctx);
void add_backtrace_command(CLI::App& app, Context& ctx);
void add_repl_command(CLI::App& app, Context& ctx);
void add_query_command(CLI::App& app, Context& ctx);
void add_config_command(CLI::App& app, Context& ctx);
void add_doctor_command(CLI::App& app, Context& ctx);
void add_children_command(CLI::App& app, Context& ctx);
void add_profile_command(CLI::App& app, Context& ctx);  // profile and top
void add_mcp_command(CLI::App& app, Context& ctx);
void add_ui_command(CLI::App& app, Context& ctx);  // commands/ui.cpp: the web page on 127.0.0.1

// Serves the web page of the context's target on 127.0.0.1:port until killed (`probing PID ui`);
// with `cluster`, the page's Cluster view asks every rank of the target's job (`probing cluster ui`).
int serve_ui(const Context& ctx, int port, bool read_only, bool cluster);

// The job's answers for the web page (commands/cluster.cpp): `what` is nodes, backtrace or query;
// `params`: {"sql"} for query, {"exact": bool} for backtrace. {"result", "notes", "coverage",
// "answered", "asked", "failed"} and, for query, "how" it ran.
Result<nlohmann::json> cluster_for_page(const Context& ctx, const std::string& what,
                                        const nlohmann::json& params);
void add_memory_command(CLI::App& app, Context& ctx);
void add_probe_command(CLI::App& app, Context& ctx);
void add_watch_command(CLI::App& app, Context& ctx);  // in probe.cpp, with watch-tensor
void add_catch_command(CLI::App& app, Context& ctx);  // in probe.cpp
// `probe remove`'s argument: a probe's id, or `all` (0); kInvalidArgument otherwise.
Result<long long> probe_id_arg(const std::string& text);
void add_export_command(CLI::App& app, Context& ctx);
void add_cluster_command(CLI::App& app, Context& ctx);
void add_crash_report_command(CLI::App& app, Context& ctx);

}  // namespace probing::cli
