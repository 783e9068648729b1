// Addresses of this process carried into another process that maps the same file: a forked child
// (same addresses), or a child that exec'd the same interpreter (the same file, elsewhere).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <vector>

#include "core/status.h"

namespace probing::layout {

// Where `pid` maps the bytes of the file that this process maps at `address`. kNotFound when
// `address` is in no file mapping here, or `pid` does not map that file (device and inode) at
// that offset; kUnavailable when /proc/PID/maps cannot be read.
Result<uintptr_t> relocate_to(pid_t pid, uintptr_t address);

// The descendants of this process (children, then theirs), from /proc/PID/task/TID/children:
// at most `max` of them, `max_depth` levels down, parents before their children.
std::vector<pid_t> descendants(size_t max, int max_depth);

}  // namespace probing::layout
