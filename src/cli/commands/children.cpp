// probing PID children: the process tree under PID, from /proc, with which process has an agent.
#include <iomanip>
#include <iostream>
#include <set>

#include "cli/commands/process_tree.h"
#include "cli/common.h"

namespace probing::cli {
namespace {

std::string state_text(char state) {
  switch (state) {
    case 'R':
      return "running";
    case 'S':
      return "sleeping";
    case 'D':
      return "disk wait";
    case 'T':
      return "stopped";
    case 't':
      return "traced";
    case 'Z':
      return "zombie";
    case 'X':
      return "dead";
    case 'I':
      return "idle";
    default:
      return std::string(1, state);
  }
}

int run_children(const Context& ctx, bool json) {
  Result<client::Target> target = client::parse_target(ctx.target);
  if (!target.is_ok()) return fail(target.status());
  if (target->kind != client::Target::Kind::kPid) {
    return fail(Status(Code::kInvalidArgument, "children reads /proc: give a local pid, not " + ctx.target));
  }
  bool truncated = false;
  Result<std::vector<TreeMember>> tree = read_tree(target->pid, &truncated);
  if (!tree.is_ok()) return fail(tree.status());
  if (json) {
    nlohmann::json rows = nlohmann::json::array();
    for (const TreeMember& m : *tree) rows.push_back(m.to_json());
    std::cout << rows.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    std::cout << std::left << std::setw(16) << "PID" << std::setw(8) << "PPID" << std::setw(10) << "STATE"
              << std::setw(8) << "PYTHON" << std::setw(11) << "AGENT" << std::setw(17) << "ROLE"
              << "COMMAND\n";
    for (const TreeMember& m : *tree) {
      std::string command = m.command();
      if (command.size() > 70) command = command.substr(0, 67) + "...";
      std::cout << std::left << std::setw(16) << (std::string(2 * m.p.depth, ' ') + std::to_string(m.p.pid))
                << std::setw(8) << (m.p.depth == 0 ? std::string("-") : std::to_string(m.p.ppid))
                << std::setw(10) << state_text(m.p.state) << std::setw(8)
                << (m.p.python.empty() ? "-" : m.p.python) << std::setw(11) << agent_text(m.agent)
                << std::setw(17) << m.role << command << "\n";
    }
  }
  if (truncated) {
    std::cerr << "probing: note: the tree was cut at " << kTreeLimits.max_processes << " processes or depth "
              << kTreeLimits.max_depth << "\n";
  }
  return kExitOk;
}

}  // namespace

void add_children_command(CLI::App& app, Context& ctx) {
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand(
      "children",
      "List the process tree under the target (itself first): DataLoader workers, multiprocessing\n"
      "pools, compile workers, whatever it forked or ran. For each: its state, its Python version,\n"
      "whether it has an agent (yes, no, or inherited: a fork that maps the agent but runs none of\n"
      "it; `probing PID inject` starts one there), and its role. Reads /proc only.");
  cmd->add_flag("--json", *json, "print the tree as JSON, one object per process");
  on_run(cmd, [&ctx, json] { return run_children(ctx, *json); });
}

}  // namespace probing::cli
