// Resolving symbols of one object mapped in another process (internal to inject).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "inject/maps.h"

namespace probing::inject {

// The paths of the mapped files, each once, in address order.
std::vector<std::string> mapped_files(const std::vector<Mapping>& maps);

// Paths under which this process can read the file of mapping `m` of `pid`, best first: the
// kernel's handle on the mapping itself (/proc/PID/map_files/START-END: the very file, whatever
// the target's root, mount namespace, or a deletion), then the path under the target's root.
// The path in /proc/PID/maps is as *our* root sees it: a host path for a chrooted target, a
// path inside its own mounts for a target in another mount namespace; neither is enough alone.
std::vector<std::string> readable_paths(pid_t pid, const Mapping& m);

// Address in `pid` of `symbol` as defined by the mapped file `object_path` (a path from `maps`).
// kNotFound when that object does not define it; kUnsupported for an IFUNC (its address is a
// resolver, not the function).
Result<std::uintptr_t> resolve_symbol_in(pid_t pid, const std::vector<Mapping>& maps,
                                         const std::string& object_path, const std::string& symbol);

}  // namespace probing::inject
