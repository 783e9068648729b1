// probing [OPTIONS] [-t] TARGET COMMAND ...
#include <unistd.h>

#include <algorithm>
#include <iostream>

#include "build_info.h"
#include "cli/common.h"
#include "core/suggest.h"

namespace {

bool is_option_with_value(const std::string& arg) {
  return arg == "-t" || arg == "--target" || arg == "--token" || arg == "--cacert";
}

// No command was recognized: name the word that was meant as one, with the nearest command
// ("probing 4242 bactrace": did you mean backtrace?), or say that a command is missing.
int no_command(CLI::App& app, int argc, char** argv) {
  std::vector<std::string> commands;
  for (const CLI::App* sub : app.get_subcommands({})) commands.push_back(sub->get_name());
  std::vector<std::string> words;  // the positional words: TARGET, then what should be a command
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (is_option_with_value(arg)) {
      ++i;  // an option's value
    } else if (arg.empty() || arg[0] != '-') {
      words.push_back(arg);
    }
  }
  std::string list;
  for (const std::string& c : commands) list += (list.empty() ? "" : ", ") + c;
  for (const std::string& word : words) {
    std::string near = probing::closest(word, commands);
    if (!near.empty()) {
      std::cerr << "probing: unknown command '" << word << "'; did you mean '" << near << "'?\n";
      return probing::cli::kExitUsage;
    }
  }
  if (words.size() >= 2) {
    std::cerr << "probing: unknown command '" << words[1] << "'; the commands are: " << list << "\n";
  } else {
    std::cerr << "probing: give a command after the target, one of: " << list
              << "\n  e.g. probing 1234 backtrace  (probing --help says more)\n";
  }
  return probing::cli::kExitUsage;
}

// Whether `word` reads as a TARGET: a pid, unix:PATH, or HOST:PORT with a numeric port (strict,
// so that code like `{1:2}` is never taken for one).
bool looks_like_target(const std::string& word) {
  if (word.empty()) return false;
  if (word.find_first_not_of("0123456789") == std::string::npos) return true;
  if (word.rfind("unix:", 0) == 0) return word.size() > 5;
  const size_t colon = word.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == word.size()) return false;
  const std::string host = word.substr(0, colon), port = word.substr(colon + 1);
  if (port.find_first_not_of("0123456789") != std::string::npos) return false;
  if (host.front() == '[') return host.back() == ']';
  return host.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") ==
         std::string::npos;
}

// `probing eval 4242 CODE` as `probing 4242 eval CODE`: when no target came before the command,
// a word right after it that reads as one, and is followed by more, is moved in front of it
// (inject, backtrace and repl, which have no words of their own, took it there already).
void move_target_before_command(int argc, char** argv, const std::vector<std::string>& commands) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (is_option_with_value(arg)) {
      ++i;
      continue;
    }
    if (arg.empty() || arg[0] == '-') continue;
    // The first word: a target (nothing to move) or the command.
    if (std::find(commands.begin(), commands.end(), arg) == commands.end()) return;
    if (arg == "list" || arg == "launch" || arg == "crash-report") return;
    // Only with a word after it (`probing eval 1` runs the code 1), and a pid only of a live
    // process.
    if (i + 2 < argc && looks_like_target(argv[i + 1])) {
      const std::string word = argv[i + 1];
      const bool pid = word.find_first_not_of("0123456789") == std::string::npos;
      if (!pid || ::access(("/proc/" + word).c_str(), F_OK) == 0) std::swap(argv[i], argv[i + 1]);
    }
    return;
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace probing::cli;
  Context ctx;
  CLI::App app{
      "probing: a live debugger and profiler for Python processes.\n"
      "Attach to a running Python process, run code in it, and read its stacks.\n\n"
      "TARGET is one of:\n"
      "  PID          a local process (its agent's socket @probing-PID)\n"
      "  unix:PATH    an agent's unix socket; unix:@NAME for an abstract one\n"
      "  HOST:PORT    an agent serving TCP (started with PROBING_PORT); [::1]:PORT for IPv6.\n"
      "               Give --token when it has PROBING_TOKEN, --tls when it has PROBING_TLS_CERT.\n"
      "The options go before the command; the target may also come right after it\n"
      "(probing eval 1234 '1+1'). Examples:\n"
      "  probing list\n"
      "  probing doctor 1234        (why it has no agent, and what to do)\n"
      "  probing launch -- python3 train.py\n"
      "  probing 1234 eval 'print(model)'\n"
      "  PROBING_TOKEN=... probing --tls trainer-7:9000 backtrace\n"
      "  probing cluster -t trainer-0:9000 backtrace   (every rank of a job)\n"
      "  probing crash-report 1234 (what a fatal signal left in /var/tmp/probing-1234.crash)\n",
      "probing"};
  app.set_version_flag("--version",
                       std::string("probing ") + PROBING_VERSION + " (commit " + PROBING_COMMIT + ")");
  // Named apart from -t,--target: CLI11 2.4 (Debian 13) refuses two options of one name.
  app.add_option("TARGET", ctx.target, "pid, host:port or unix:PATH of the process to talk to");
  app.add_option("-t,--target", ctx.target, "the target, as an option");
  app.add_option("--token", ctx.connect.token, "the agent's token, sent as Authorization: Bearer TOKEN")
      ->envname("PROBING_TOKEN");
  app.add_flag("--tls", ctx.connect.tls,
               "TLS to a HOST:PORT target; the certificate is checked against the system CAs");
  app.add_option("--cacert", ctx.connect.cacert,
                 "check the agent's certificate against this PEM file (implies --tls)")
      ->check(CLI::ExistingFile);
  app.add_flag("--insecure", ctx.connect.insecure,
               "TLS without checking the certificate or host name (implies --tls)");
  app.add_flag("--read-only", ctx.connect.read_only,
               "ask the agent for the read right only: no eval, no SET, locals without the target's reprs");
  app.require_subcommand(1);
  app.fallthrough();
  add_eval_command(app, ctx);
  add_list_command(app, ctx);
  add_launch_command(app, ctx);
  add_inject_command(app, ctx);
  add_backtrace_command(app, ctx);
  add_repl_command(app, ctx);
  add_query_command(app, ctx);
  add_config_command(app, ctx);
  add_doctor_command(app, ctx);
  add_children_command(app, ctx);
  add_profile_command(app, ctx);
  add_memory_command(app, ctx);
  add_probe_command(app, ctx);
  add_watch_command(app, ctx);
  add_catch_command(app, ctx);
  add_export_command(app, ctx);
  add_mcp_command(app, ctx);
  add_ui_command(app, ctx);
  add_cluster_command(app, ctx);
  add_crash_report_command(app, ctx);
  if (argc <= 1) {
    std::cout << app.help();
    return kExitUsage;
  }
  {
    std::vector<std::string> commands;
    for (const CLI::App* sub : app.get_subcommands({})) commands.push_back(sub->get_name());
    move_target_before_command(argc, argv, commands);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::RuntimeError& e) {
    return e.get_exit_code();  // a command's own exit code
  } catch (const CLI::RequiredError& e) {
    if (app.get_subcommands().empty()) return no_command(app, argc, argv);
    app.exit(e);
    return kExitUsage;
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  } catch (const std::exception& e) {  // a bug: said, not an abort
    std::cerr << "probing: internal error: " << e.what() << "\n";
    return kExitFailed;
  }
  return kExitOk;
}
