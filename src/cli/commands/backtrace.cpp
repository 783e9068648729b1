// probing TARGET backtrace [--all] [--thread TID] [--locals] [--json]
#include <iostream>

#include "cli/common.h"

namespace probing::cli {
namespace {

struct BacktraceArgs {
  bool all = false;
  long long thread = 0;
  bool locals = false;
  bool json = false;
};

std::string text_of(const nlohmann::json& v, const std::string& fallback = "") {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number()) return v.dump();
  return fallback;
}

// Thread 12345 "MainThread" (tid 678, daemon, holds the GIL)
void print_thread(const nlohmann::json& t) {
  std::cout << "Thread " << text_of(t.value("thread_id", nlohmann::json()), "?");
  if (t.contains("name") && t["name"].is_string()) std::cout << " \"" << t["name"].get<std::string>() << "\"";
  std::vector<std::string> tags;
  if (t.contains("native_thread_id") && t["native_thread_id"].is_number()) tags.push_back("tid " + t["native_thread_id"].dump());
  if (t.value("daemon", nlohmann::json()).is_boolean() && t["daemon"].get<bool>()) tags.push_back("daemon");
  if (t.value("holds_gil", false)) tags.push_back("holds the GIL");
  if (!tags.empty()) {
    std::cout << " (";
    for (size_t i = 0; i < tags.size(); ++i) std::cout << (i ? ", " : "") << tags[i];
    std::cout << ")";
  }
  std::cout << "\n";
  for (const auto& f : t.value("frames", nlohmann::json::array())) {
    std::cout << "  " << text_of(f.value("func", nlohmann::json()), "?") << " (" << text_of(f.value("file", nlohmann::json()), "?");
    if (f.value("lineno", -1) > 0) std::cout << ":" << f["lineno"].get<int>();
    std::cout << ")";
    if (f.value("frame_type", "Python") != "Python") std::cout << " [" << f["frame_type"].get<std::string>() << "]";
    std::cout << "\n";
    if (f.contains("source") && f["source"].is_string()) std::cout << "      " << f["source"].get<std::string>() << "\n";
    if (f.contains("locals") && f["locals"].is_object()) {
      for (const auto& [name, value] : f["locals"].items()) {
        std::string text = text_of(value);
        // One line per local: a multi-line repr (a module, a DataFrame) keeps its newlines escaped.
        for (size_t at = text.find('\n'); at != std::string::npos; at = text.find('\n', at + 2)) text.replace(at, 1, "\\n");
        std::cout << "          " << name << " = " << text << "\n";
      }
    }
  }
  if (t.contains("note") && t["note"].is_string()) std::cout << "  (" << t["note"].get<std::string>() << ")\n";
}

int run_backtrace(const Context& ctx, const BacktraceArgs& args) {
  auto client = connect_target(ctx);
  if (!client.is_ok()) return fail(client.status());
  std::string path = "/backtrace?";
  if (args.all) path += "all=1&";
  if (args.thread != 0) path += "thread=" + std::to_string(args.thread) + "&";
  if (args.locals) path += "locals=1&";
  path.pop_back();
  Result<client::Response> reply = (*client)->request("GET", path, "", 15);
  if (!reply.is_ok()) return fail(reply.status());
  nlohmann::json j = reply->json();
  if (reply->status != 200) return fail(reply->error_message());
  if (j.is_discarded() || !j.is_object()) return fail("the agent sent a reply that is not JSON: " + reply->body.substr(0, 200));
  if (args.json) {
    std::cout << j.dump(2) << "\n";
    return kExitOk;
  }
  if (j.value("gil_free", false)) {
    std::cout << "(read without the GIL";
    const nlohmann::json& h = j.value("gil_holder", nlohmann::json());
    if (h.is_object()) {
      std::cout << "; thread " << text_of(h.value("thread_id", nlohmann::json()), "?");
      if (h.value("name", nlohmann::json()).is_string()) std::cout << " \"" << h["name"].get<std::string>() << "\"";
      std::cout << " holds it";
    }
    std::cout << ")\n";
  }
  bool first = true;
  for (const auto& t : j.value("threads", nlohmann::json::array())) {
    if (!first) std::cout << "\n";
    first = false;
    print_thread(t);
  }
  for (const auto& n : j.value("notes", nlohmann::json::array())) {
    if (n.is_string()) std::cerr << "probing: note: " << n.get<std::string>() << "\n";
  }
  return kExitOk;
}

}  // namespace

void add_backtrace_command(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<BacktraceArgs>();
  CLI::App* cmd = app.add_subcommand(
      "backtrace",
      "Print the target's Python stack, innermost frame first: the main thread by default.\n"
      "Answers within about a second even when another thread holds the GIL.");
  cmd->add_flag("--all", args->all, "every thread, with its name, tid and daemon flag");
  cmd->add_option("--thread", args->thread, "one thread, by threading ident or kernel tid");
  cmd->add_flag("--locals", args->locals, "show each frame's local variables (briefly)");
  cmd->add_flag("--json", args->json, "print the stacks as JSON");
  on_run(cmd, [&ctx, args] { return run_backtrace(ctx, *args); });
}

}  // namespace probing::cli
