#include "cli/commands/process_tree.h"

#include <algorithm>
#include <set>

#include "client/client.h"

namespace probing::cli {
namespace {

bool mentions(const std::vector<std::string>& cmdline, const std::string& text) {
  return std::any_of(cmdline.begin(), cmdline.end(),
                     [&](const std::string& arg) { return arg.find(text) != std::string::npos; });
}

// What the process is to the job, from its command line and how it was made.
std::string role_of(const inspect::TreeProcess& p) {
  if (p.state == 'Z' || p.state == 'X') return "zombie";
  if (p.depth == 0) return "root";
  if (mentions(p.cmdline, "multiprocessing.resource_tracker")) return "resource tracker";
  if (mentions(p.cmdline, "multiprocessing.forkserver")) return "forkserver";
  if (mentions(p.cmdline, "multiprocessing.spawn") || mentions(p.cmdline, "--multiprocessing-fork")) {
    return "spawned";
  }
  if (mentions(p.cmdline, "compile_worker")) return "compile worker";
  if (p.forked) return "fork";
  return p.python.empty() ? "program" : "exec";
}

}  // namespace

std::string agent_text(AgentState state) {
  switch (state) {
    case AgentState::kServing:
      return "yes";
    case AgentState::kLoaded:
      return "loaded";
    case AgentState::kInherited:
      return "inherited";
    case AgentState::kNone:
      break;
  }
  return "no";
}

std::string TreeMember::command() const {
  std::string out;
  for (const std::string& arg : p.cmdline) out += (out.empty() ? "" : " ") + arg;
  return out.empty() ? "[" + p.comm + "]" : out;
}

nlohmann::json TreeMember::to_json() const {
  return {{"pid", p.pid},
          {"ppid", p.ppid},
          {"depth", p.depth},
          {"state", std::string(1, p.state)},
          {"python", p.python.empty() ? nlohmann::json() : nlohmann::json(p.python)},
          {"agent", agent_text(agent)},
          {"role", role},
          {"comm", p.comm},
          {"cmdline", p.cmdline}};
}

Result<std::vector<TreeMember>> read_tree(pid_t root, bool* truncated) {
  Result<std::vector<inspect::TreeProcess>> tree = inspect::process_tree(root, kTreeLimits, truncated);
  if (!tree.is_ok()) return tree.status();
  const std::vector<pid_t> listening = client::list_local_agents();
  const std::set<pid_t> serving(listening.begin(), listening.end());
  std::vector<TreeMember> out;
  for (inspect::TreeProcess& p : *tree) {
    TreeMember m;
    if (serving.count(p.pid) != 0) {
      m.agent = AgentState::kServing;
    } else if (p.agent_mapped) {
      m.agent = inspect::runs_agent_threads(p.pid) ? AgentState::kLoaded : AgentState::kInherited;
    }
    m.p = std::move(p);
    m.role = role_of(m.p);
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace probing::cli
