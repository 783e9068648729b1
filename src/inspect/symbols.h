// Resolving symbols of one object mapped in another process (internal to inject).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "inspect/maps.h"

namespace probing::inspect {

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

// The same for several names, read in one pass over the object's .dynsym: the address of each
// name it defines (IFUNCs and names outside its mapped part are left out). kNotFound when the
// object is not mapped; the file's errors when no copy of it could be read.
Result<std::map<std::string, std::uintptr_t>> resolve_symbols_in(pid_t pid, const std::vector<Mapping>& maps,
                                                                 const std::string& object_path,
                                                                 const std::vector<std::string>& names);

// Address of the dynamic symbol `symbol` in `pid`: found from /proc/PID/maps and the .dynsym of
// each mapped file, read through /proc/PID/root/<path> so a target in another mount namespace
// (a container with its own glibc) is read correctly. The first mapped object (in address
// order) that defines it wins. kNotFound when no mapped object defines it.
Result<std::uintptr_t> find_remote_symbol(pid_t pid, const std::string& symbol);

// Whether `pid` has a file mapped whose basename is `basename` (e.g. "libprobing.so").
Result<bool> has_mapped_library(pid_t pid, const std::string& basename);

}  // namespace probing::inspect
