// probing TARGET eval CODE | -f FILE | -
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include "cli/common.h"
#include "cli/interrupt.h"

namespace probing::cli {
namespace {

struct EvalArgs {
  std::string code;
  std::string file;
  double timeout_s = 30;
  bool json = false;
};

Result<std::string> read_code(const EvalArgs& args) {
  if (!args.file.empty() && !args.code.empty()) {
    return Status(Code::kInvalidArgument, "give CODE or -f FILE, not both");
  }
  std::ostringstream text;
  if (args.file == "-" || (args.file.empty() && args.code == "-")) {
    text << std::cin.rdbuf();
    return text.str();
  }
  if (!args.file.empty()) {
    std::ifstream in(args.file, std::ios::binary);
    if (!in) return Status(Code::kNotFound, "cannot read " + args.file);
    text << in.rdbuf();
    return text.str();
  }
  if (args.code.empty()) return Status(Code::kInvalidArgument, "nothing to run: give CODE, -f FILE, or - for stdin");
  return args.code;
}

int run_eval(const Context& ctx, const EvalArgs& args) {
  Result<std::string> code = read_code(args);
  if (!code.is_ok()) return fail(code.status());
  auto client = connect_target(ctx);
  if (!client.is_ok()) return fail(client.status());
  // Named, so that Ctrl-C can interrupt it in the target (POST /interrupt).
  std::string id = "eval-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device{}());
  nlohmann::json body = {{"code", *code}, {"timeout", args.timeout_s}, {"id", id}};
  SigintPipe sigint;
  if (!sigint.ok()) return fail(errno_status("setting up Ctrl-C"));
  // The agent answers by the eval's deadline plus its grace period; allow for both.
  std::optional<Result<client::Response>> waited =
      eval_interruptibly(ctx, std::move(*client), body, args.timeout_s + 10, sigint);
  if (!waited) return kExitInterrupted;
  const Result<client::Response>& reply = *waited;
  if (!reply.is_ok()) return fail(reply.status());
  nlohmann::json j = reply->json();
  if (args.json) {
    std::cout << (j.is_discarded() ? reply->body : j.dump(2)) << "\n";
    return reply->status == 200 && j.is_object() && j.value("exception", nlohmann::json()).is_null() ? kExitOk : kExitFailed;
  }
  if (j.is_discarded() || !j.is_object()) return fail("the agent sent a reply that is not JSON: " + reply->body.substr(0, 200));
  std::string output = j.value("output", "");
  std::cout << output << std::flush;
  if (reply->status != 200) {
    if (!output.empty() && output.back() != '\n') std::cout << "\n";
    return fail(reply->error_message());
  }
  if (j.contains("value") && j["value"].is_string()) std::cout << j["value"].get<std::string>() << "\n";
  const nlohmann::json& exc = j["exception"];
  if (exc.is_object()) {
    std::cerr << exc.value("traceback", exc.value("type", "") + ": " + exc.value("message", ""));
    return kExitFailed;
  }
  return kExitOk;
}

}  // namespace

void add_eval_command(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand(
      "eval",
      "Run Python code in the target's __main__ and print what it prints.\n"
      "A final expression's value is printed too. Exits 1 if the code raises.\n"
      "Ctrl-C raises KeyboardInterrupt in the code (the target keeps running); a second\n"
      "Ctrl-C stops waiting (exit 130).");
  cmd->add_option("code", args->code, "the code; - reads it from standard input");
  cmd->add_option("-f,--file", args->file, "read the code from FILE (- for standard input)");
  cmd->add_option("--timeout", args->timeout_s, "seconds the code may run before it is interrupted")
      ->default_val(30)
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--json", args->json, "print the agent's whole reply as JSON");
  on_run(cmd, [&ctx, args] { return run_eval(ctx, *args); });
}

}  // namespace probing::cli
