// probing [-t] TARGET COMMAND ...
#include <iostream>

#include "cli/common.h"

int main(int argc, char** argv) {
  using namespace probing::cli;
  Context ctx;
  CLI::App app{
      "probing: a live debugger and profiler for Python processes.\n"
      "Attach to a running Python process, run code in it, and read its stacks.\n\n"
      "TARGET is a pid, host:port, or unix:PATH. Examples:\n"
      "  probing list\n"
      "  probing launch -- python3 train.py\n"
      "  probing 1234 eval 'print(model)'\n",
      "probing"};
  app.set_version_flag("--version", std::string("probing ") + PROBING_VERSION);
  app.add_option("target", ctx.target, "pid, host:port or unix:PATH of the process to talk to");
  app.add_option("-t,--target", ctx.target, "the target, as an option");
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
  if (argc <= 1) {
    std::cout << app.help();
    return kExitUsage;
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
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  return kExitOk;
}
