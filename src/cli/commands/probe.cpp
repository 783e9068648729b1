// probing TARGET probe add|list|remove: breakpoints that record and go on (POST/GET /probes,
// python.probe_hits); probing TARGET watch|watch-tensor EXPR: a probe that records the changes of
// a value, or of a tensor; probing TARGET catch TYPE: one that records raises into
// python.exceptions. docs/probes.md.
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>

#include "cli/common.h"
#include "cli/format.h"

namespace probing::cli {
namespace {

constexpr double kTimeoutS = 30;

struct ProbeArgs {
  std::string where;
  std::string capture;
  std::string when;
  long long limit = 0;
  double expire_s = 0;
  std::string id;  // remove: N or all
  std::string watch;
  bool tensor = false;      // watch-tensor
  std::string catch_types;  // catch
  bool json = false;
};

Result<nlohmann::json> ask(const Context& ctx, const std::string& method, const nlohmann::json& body) {
  auto client = connect_target(ctx);
  if (!client.is_ok()) return client.status();
  return agent_json(**client, method, "/probes", method == "GET" ? "" : body.dump(), kTimeoutS,
                    "this agent is older than this probing: restart the process with this version's agent");
}

std::string line_of(const nlohmann::json& p) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%lld", p.value("line", 0LL));
  return buf;
}

// "3  train.py:88 (train)  line  12 hits  active"
nlohmann::json as_table(const nlohmann::json& probes) {
  nlohmann::json table = {
      {"columns",
       {"id", "where", "function", "event", "capture", "when", "hits", "errors", "cost_s", "state"}},
      {"rows", nlohmann::json::array()}};
  for (const nlohmann::json& p : probes) {
    std::string capture;
    for (const auto& c : p.value("capture", nlohmann::json::array())) {
      capture += (capture.empty() ? "" : ", ") + c.get<std::string>();
    }
    if (p.contains("watch") && p["watch"].is_string()) {
      capture = (p.value("tensor", false) ? "watch-tensor: " : "watch: ") + p["watch"].get<std::string>();
    }
    if (p.contains("catch") && p["catch"].is_array()) {
      for (const auto& c : p["catch"]) capture += (capture.empty() ? "catch: " : ", ") + c.get<std::string>();
    }
    const std::string where = p["file"].is_string() ? p["file"].get<std::string>() + ":" + line_of(p) : "";
    table["rows"].push_back({p["id"], where, p["function"], p["event"], capture, p["when"], p["hits"],
                             p["errors"], p["cost_s"], p["state"]});
  }
  return table;
}

// Adds a probe or a watch (body) and prints it: as JSON with --json, else as `say` puts it.
int add_and_say(const Context& ctx, const ProbeArgs& args, const nlohmann::json& body,
                const std::function<void(const nlohmann::json&)>& say) {
  Result<nlohmann::json> r = ask(ctx, "POST", body);
  if (!r.is_ok()) return fail(r.status());
  const nlohmann::json& p = (*r)["probe"];
  if (args.json) {
    std::cout << p.dump(2) << "\n";
  } else {
    say(p);
  }
  return kExitOk;
}

int run_add(const Context& ctx, const ProbeArgs& args) {
  nlohmann::json body = {{"action", "add"},   {"where", args.where}, {"capture", args.capture},
                         {"when", args.when}, {"limit", args.limit}, {"expire_s", args.expire_s}};
  return add_and_say(ctx, args, body, [&ctx](const nlohmann::json& p) {
    std::cout << "probe " << p["id"] << " at " << p.value("file", "") << ":" << line_of(p) << " ("
              << p.value("function", "") << ", " << p.value("event", "") << ")";
    if (p.value("codes", 1) > 1) std::cout << " in " << p["codes"] << " code objects";
    std::cout << "; its hits: probing " << ctx.target << " query \"SELECT time, thread, captured, error FROM "
              << "python.probe_hits WHERE probe_id = " << p["id"] << "\"\n";
  });
}

int run_watch(const Context& ctx, const ProbeArgs& args) {
  nlohmann::json body = {{"action", "add"},     {"watch", args.watch}, {"tensor", args.tensor},
                         {"where", args.where}, {"limit", args.limit}, {"expire_s", args.expire_s}};
  return add_and_say(ctx, args, body, [&ctx, &args](const nlohmann::json& p) {
    std::cout << (args.tensor ? "tensor watch " : "watch ") << p["id"] << ": " << args.watch << " in "
              << p.value("function", "") << " (" << p.value("file", "") << ":" << line_of(p)
              << "); its changes: probing " << ctx.target
              << " query \"SELECT time, line, captured FROM python.probe_hits WHERE probe_id = " << p["id"]
              << "\"; probing " << ctx.target << " probe remove " << p["id"] << " ends it\n";
  });
}

int run_catch(const Context& ctx, const ProbeArgs& args) {
  nlohmann::json body = {{"action", "add"},
                         {"catch", args.catch_types},
                         {"when", args.when},
                         {"limit", args.limit},
                         {"expire_s", args.expire_s}};
  return add_and_say(ctx, args, body, [&ctx](const nlohmann::json& p) {
    std::cout
        << "catch " << p["id"] << ": " << p.value("spec", "") << "; the exceptions: probing " << ctx.target
        << " query \"SELECT time, type, message, file, line FROM python.exceptions WHERE context = 'catch "
        << p["id"] << "'\"; probing " << ctx.target << " probe remove " << p["id"] << " ends it\n";
  });
}

int run_list(const Context& ctx, const ProbeArgs& args) {
  Result<nlohmann::json> r = ask(ctx, "GET", nullptr);
  if (!r.is_ok()) return fail(r.status());
  const nlohmann::json& probes = (*r)["probes"];
  if (args.json) {
    std::cout << probes.dump(2) << "\n";
  } else if (probes.empty()) {
    std::cout << "no probes (probe add puts one in)\n";
  } else {
    std::cout << format_table(as_table(probes), terminal_width());
  }
  return kExitOk;
}

int run_remove(const Context& ctx, const ProbeArgs& args) {
  Result<long long> id = probe_id_arg(args.id);
  if (!id.is_ok()) return fail(id.status());
  Result<nlohmann::json> r = ask(ctx, "POST", {{"action", "remove"}, {"id", *id}});
  if (!r.is_ok()) return fail(r.status());
  for (const nlohmann::json& p : (*r)["removed"]) {
    std::cout << "removed probe " << p["id"] << " (" << p.value("spec", "") << ", " << p["hits"]
              << " hits)\n";
  }
  return kExitOk;
}

}  // namespace

Result<long long> probe_id_arg(const std::string& text) {
  if (text == "all") return 0LL;
  char* end = nullptr;
  const long long id = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || id <= 0) {
    return Status(Code::kInvalidArgument, "probe remove takes a probe's id or `all` (got '" + text + "')");
  }
  return id;
}

void add_probe_command(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<ProbeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "probe",
      "Breakpoints that record and go on: each time the program runs the code at a probe, the probe\n"
      "evaluates its expressions in that frame and writes a row to python.probe_hits; the program never\n"
      "stops. On Python 3.12+ only the probed code is instrumented (sys.monitoring); on 3.9-3.11 every\n"
      "thread runs traced while a probe is active (slower: docs/probes.md). Adding one runs your\n"
      "expressions in the program: it needs the full right.");
  CLI::App* add = cmd->add_subcommand("add", "put a probe at a line, or at a function's call or return");
  add->add_option("where", args->where,
                  "FILE:LINE, FILE:FUNCTION (its call) or FILE:FUNCTION:return; FILE is the end of a path "
                  "(train.py, pkg/model.py) or the whole path; FUNCTION may be Class.method")
      ->required();
  add->add_option("--capture", args->capture,
                  "Python expressions to record at each hit: \"loss.item(), lr\"");
  add->add_option("--when", args->when,
                  "record only when this Python expression is true: \"step % 100 == 0\"");
  add->add_option("--limit", args->limit, "end the probe after this many hits (default: none)")
      ->check(CLI::Range(0LL, 100000000LL));
  add->add_option("--expire", args->expire_s, "end the probe after this many seconds (default: never)")
      ->check(CLI::NonNegativeNumber);
  add->add_flag("--json", args->json, "print the probe as JSON");
  CLI::App* list = cmd->add_subcommand("list", "every probe, with its hits, cost and state");
  list->add_flag("--json", args->json, "print them as JSON");
  CLI::App* remove =
      cmd->add_subcommand("remove", "remove a probe (or all), putting the code back as it was");
  remove->add_option("id", args->id, "the probe's id, or all")->required();
  cmd->require_subcommand(1);
  cmd->footer(
      "Examples:\n"
      "  probing 1234 probe add train.py:88 --capture \"loss.item(), lr\" --when \"step % 100 == 0\" --limit "
      "50\n"
      "  probing 1234 probe add model.py:Attention.forward --capture \"q.shape, mask is None\"\n"
      "  probing 1234 probe add model.py:Attention.forward:return --limit 10\n"
      "  probing 1234 probe list\n"
      "  probing 1234 query \"SELECT time, thread, captured FROM python.probe_hits WHERE probe_id = 1\"\n"
      "  probing 1234 probe remove all");
  on_run(add, [&ctx, args] { return run_add(ctx, *args); });
  on_run(list, [&ctx, args] { return run_list(ctx, *args); });
  on_run(remove, [&ctx, args] { return run_remove(ctx, *args); });
}

namespace {

// The options a watch, a tensor watch and a catch share: when it ends, and --json.
void ending_options(CLI::App* cmd, ProbeArgs& args, const char* what, const char* units) {
  cmd->add_option("--limit", args.limit,
                  std::string("end the ") + what + " after this many " + units + " (default: none)")
      ->check(CLI::Range(0LL, 100000000LL));
  cmd->add_option("--expire", args.expire_s,
                  std::string("end the ") + what + " after this many seconds (default: never)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--json", args.json, std::string("print the ") + what + " as JSON");
}

void watch_options(CLI::App* cmd, ProbeArgs& args, const char* example) {
  cmd->add_option("expression", args.watch,
                  std::string("a Python expression: a name or an attribute path, ") + example)
      ->required();
  cmd->add_option("--in", args.where,
                  "FILE:FUNCTION whose lines it is read at (FILE the end of a path, FUNCTION may be "
                  "Class.method); default: the main thread's function of the main script");
  ending_options(cmd, args, "watch", "changes");
}

}  // namespace

void add_watch_command(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<ProbeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "watch",
      "Record each change of a value: the expression is read at every line of one function (by default\n"
      "the function of the main script that the main thread runs now: the training loop), and a row goes\n"
      "to python.probe_hits each time it differs from what it was at the line before, with that line,\n"
      "the new and the old value (brief reprs), or a mutable object's identity. A watch is a probe:\n"
      "`probe list` shows it, `probe remove ID` ends it. It runs your expression in the program: it\n"
      "needs the full right.");
  watch_options(cmd, *args, "trainer.lr");
  cmd->footer(
      "Examples:\n"
      "  probing 1234 watch trainer.lr\n"
      "  probing 1234 watch \"optimizer.param_groups[0]['lr']\" --in train.py:train --limit 100\n"
      "  probing 1234 query \"SELECT time, line, captured FROM python.probe_hits WHERE probe_id = 1\"\n"
      "A tensor's updates in place (an optimizer's step) leave it the same object: watch-tensor sees them.");
  on_run(cmd, [&ctx, args] { return run_watch(ctx, *args); });

  auto targs = std::make_shared<ProbeArgs>();
  targs->tensor = true;
  CLI::App* tensor = app.add_subcommand(
      "watch-tensor",
      "Record each update of a tensor: as watch does, at every line of one function, but a change is\n"
      "also an update in place (the tensor's version counter moved: an optimizer's step, an add_, a\n"
      "copy_). A row in python.probe_hits names the line, the calls on it (op), how many in-place\n"
      "updates it made, and the tensor before and after: shape, dtype, device, 2-norm and nan/inf\n"
      "counts (computed by torch at each change; never the data). Needs the full right.");
  watch_options(tensor, *targs, "model.head.weight");
  tensor->footer(
      "Examples:\n"
      "  probing 1234 watch-tensor model.head.weight --limit 20\n"
      "  probing 1234 watch-tensor \"model.layers[3].attn.q_proj.weight\" --in train.py:train\n"
      "  probing 1234 query \"SELECT time, line, json_extract(captured, '$.op') AS op, captured\n"
      "      FROM python.probe_hits WHERE probe_id = 1\"");
  on_run(tensor, [&ctx, targs] { return run_watch(ctx, *targs); });
}

void add_catch_command(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<ProbeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "catch",
      "Record each raise of an exception class, caught or not: a row in python.exceptions (kind\n"
      "'raised', context 'catch ID') with where it was raised and the stack out from there, with\n"
      "locals in brief. Subclasses count (catch OSError records FileNotFoundError). Each exception is\n"
      "recorded once, where it was raised, not in each frame it passes. CPython 3.12+ (sys.monitoring):\n"
      "while a catch is active every raise of the program calls it. A catch is a probe: `probe list`\n"
      "shows it, `probe remove ID` ends it. Needs the full right.");
  cmd->add_option("class", args->catch_types,
                  "exception classes: ValueError, or module.Class (torch.cuda.OutOfMemoryError); several "
                  "with commas")
      ->required();
  cmd->add_option("--when", args->when,
                  "record only when this Python expression is true, in the raising frame, where `exc` is "
                  "the exception: \"'nan' in str(exc)\"");
  ending_options(cmd, *args, "catch", "exceptions");
  cmd->footer(
      "Examples:\n"
      "  probing 1234 catch ValueError --limit 10\n"
      "  probing 1234 catch KeyError,IndexError --expire 600\n"
      "  probing 1234 query \"SELECT time, type, message, file, line, stack FROM python.exceptions\n"
      "      WHERE kind = 'raised' ORDER BY time DESC LIMIT 5\"");
  on_run(cmd, [&ctx, args] { return run_catch(ctx, *args); });
}

}  // namespace probing::cli
