// The processes under a process, found in /proc: DataLoader workers, multiprocessing pools,
// compile workers, anything a job forks or runs. Read only from /proc; touches no process.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "core/status.h"

namespace probing::inspect {

struct TreeProcess {
  pid_t pid = 0;
  pid_t ppid = 0;
  int depth = 0;     // 0 for the root
  char state = '?';  // R S D T t Z X I, as in /proc/PID/stat
  std::string comm;
  std::vector<std::string> cmdline;  // empty for a zombie or a kernel thread
  std::string python;                // "3.11" when a CPython runtime is mapped (by its file's name), else ""
  bool agent_mapped = false;         // a libprobing*.so is mapped (loaded, or inherited by a fork)
  bool forked = false;               // runs the same program, with the same command line, as its parent
};

struct TreeLimits {
  int max_depth = 8;
  size_t max_processes = 1024;
};

// `root` first, then its descendants depth-first, children in pid order. Each process's children
// are read from /proc/PID/task/TID/children (every thread's: a child belongs to the thread that
// made it), or, where the kernel lacks that file, from every process's parent pid. A process
// past a limit is left out, and `truncated` is set. kNotFound when `root` does not exist.
Result<std::vector<TreeProcess>> process_tree(pid_t root, const TreeLimits& limits = {},
                                              bool* truncated = nullptr);

// Whether any thread of `pid` is one of the agent's (the agent names them all probing-*). A
// forked child has the agent library mapped but none of its threads: fork copies one thread.
bool runs_agent_threads(pid_t pid);

// The CPython version ("3.11") a process maps, from the name of its libpython or of its
// executable; "" when neither names one. Reads /proc/PID/maps.
std::string mapped_python_version(pid_t pid);

}  // namespace probing::inspect
