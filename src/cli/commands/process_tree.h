// The process tree as `children` and `backtrace --subprocesses` show it: each process of
// inspect::process_tree with whether it has an agent, and its role.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "inspect/process_tree.h"

namespace probing::cli {

constexpr inspect::TreeLimits kTreeLimits{8, 1024};

enum class AgentState {
  kNone,       // no agent library mapped
  kServing,    // its agent answers on @probing-PID
  kLoaded,     // the library is mapped and its threads run, but nothing answers (yet)
  kInherited,  // a fork that maps the parent's agent library but runs none of its threads
};

std::string agent_text(AgentState state);  // "yes", "no", "loaded", "inherited"

struct TreeMember {
  inspect::TreeProcess p;
  AgentState agent = AgentState::kNone;
  std::string role;  // "root", "fork", "exec", "spawned", "forkserver", "resource tracker", "zombie", ...

  std::string command() const;  // the command line joined by spaces; "[comm]" when it has none
  nlohmann::json to_json() const;
};

// The tree under `root` (root first, depth-first), with each process's agent and role.
Result<std::vector<TreeMember>> read_tree(pid_t root, bool* truncated);

}  // namespace probing::cli
