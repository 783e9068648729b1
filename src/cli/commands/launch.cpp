// probing launch [-D key=value]... -- CMD ARGS...
#include <unistd.h>

#include <cstring>
#include <iostream>

#include "cli/common.h"
#include "core/settings.h"

namespace probing::cli {
namespace {

struct LaunchArgs {
  std::vector<std::string> defines;
  std::vector<std::string> command;
};

int run_launch(const LaunchArgs& args) {
  if (args.command.empty()) return fail("nothing to launch: probing launch -- python3 train.py");
  // Forked children (DataLoader, multiprocessing workers) get agents too, unless told otherwise
  // (-D subprocesses=off, or PROBING_SUBPROCESSES in the environment).
  ::setenv(Settings::env_name("subprocesses").c_str(), "on", /*overwrite=*/0);
  for (const std::string& d : args.defines) {
    auto kv = parse_define(d);
    if (!kv.is_ok()) return fail(kv.status());
    ::setenv(Settings::env_name(kv->first).c_str(), kv->second.c_str(), 1);
  }
  Result<std::string> lib = agent_library_path();
  if (!lib.is_ok()) return fail(lib.status());
  std::string preload = *lib;
  if (const char* old = ::getenv("LD_PRELOAD"); old != nullptr && old[0] != '\0') preload += std::string(":") + old;
  ::setenv("LD_PRELOAD", preload.c_str(), 1);
  std::vector<char*> argv;
  for (const std::string& a : args.command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execvp(argv[0], argv.data());
  int err = errno;
  return fail("cannot run " + args.command[0] + ": " + std::strerror(err));
}

}  // namespace

void add_launch_command(CLI::App& app, Context&) {
  auto args = std::make_shared<LaunchArgs>();
  CLI::App* cmd = app.add_subcommand(
      "launch",
      "Run a command with the agent loaded from its start (LD_PRELOAD; the same as PROBE=1 when the\n"
      "Python package is installed). Every Python process the command starts gets an agent, forked\n"
      "ones too (DataLoader and multiprocessing workers: the subprocesses setting, on here).");
  cmd->add_option("-D,--define", args->defines, "a setting for the agent, key=value (repeatable)")
      ->allow_extra_args(false);
  cmd->add_option("command", args->command, "the command, after --")->required();
  on_run(cmd, [args] { return run_launch(*args); });
}

}  // namespace probing::cli
