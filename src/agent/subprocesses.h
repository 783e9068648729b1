// Agents in forked children: with the `subprocesses` setting on, a child that os.fork() makes
// (a DataLoader worker, a multiprocessing worker) loads an agent of its own in CPython's
// after-fork hook, under the GIL, never in the raw window after fork().
#pragma once

#include <string>

namespace probing::agent {

// Follows the `subprocesses` setting: while it is on, makes sure the hook is registered (once
// Python is initialized) and that the library copy the children load exists.
void start_subprocess_agents();

// Whether this agent is the copy a forked child loaded (the `subprocesses` setting).
bool loaded_by_a_fork();
// "off", "starting" (the setting is on, the hook not in yet), or "on"; for /health.
std::string subprocess_agents_state();

}  // namespace probing::agent
