// Copies of the agent library: in a container's filesystem when the target cannot see the
// installed one, and second files for forked children (a process that maps libprobing.so
// already gets nothing new from dlopen of the same file; a copy is another library to the loader,
// whose constructor starts an agent of its own). Used by `inject` and by the agent itself.
#pragma once

#include <string>

#include "core/status.h"

namespace probing {

// Copies `lib` to /tmp/probing-agent-UID-SIZE-MTIME/`name` under `root` ("" for this process's
// own filesystem, "/proc/PID/root" for another's): a directory that only this user may write
// (others may read: the target may run as another user), named by the library's size and time so
// that a rebuilt library is copied again. A copy already there is reused. The copy keeps the
// library's time, so copies of a copy land in the same directory. Returns the copy's path as
// seen inside `root`.
Result<std::string> copy_agent_library(const std::string& lib, const std::string& root,
                                       const std::string& name);

// The name of the copy a fork of a process running the agent from `basename` loads:
// "libprobing.so" -> "libprobing-fork.so", "libprobing-fork.so" -> "libprobing-fork2.so", and on.
std::string fork_copy_name(const std::string& basename);

}  // namespace probing
