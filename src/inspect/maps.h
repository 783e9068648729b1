// /proc/PID/maps, parsed: which files a process has mapped, and where.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"

namespace probing::inspect {

// One line of /proc/PID/maps.
struct Mapping {
  std::uintptr_t start = 0;  // first byte
  std::uintptr_t end = 0;    // one past the last byte
  std::string perms;         // "r-xp"
  std::uint64_t offset = 0;  // file offset of `start`
  std::uint64_t inode = 0;   // 0 for anonymous memory
  std::string path;          // as the target sees it; "" when anonymous; "[stack]", "[vdso]", ...
  bool deleted = false;      // the kernel marked the file " (deleted)"; `path` has that suffix cut

  bool contains(std::uintptr_t address) const { return address >= start && address < end; }
  bool executable() const { return perms.size() >= 3 && perms[2] == 'x'; }
  // True for a mapping of a file (path starts with '/'), false for anonymous and [special] ones.
  bool is_file() const { return inode != 0 && !path.empty() && path[0] == '/'; }
};

// Parses the text of a maps file. Lines that do not parse are an error (kInternal).
Result<std::vector<Mapping>> parse_maps(const std::string& text);

// Reads and parses /proc/PID/maps (pid may also be a thread id).
Result<std::vector<Mapping>> read_maps(pid_t pid);

// The mapping that contains `address`, if any.
const Mapping* find_mapping(const std::vector<Mapping>& maps, std::uintptr_t address);

// The final component of a path: "/usr/lib/libc.so.6" -> "libc.so.6".
std::string path_basename(const std::string& path);

// What a loaded object is, judged by the basename of its file.
enum class ObjectKind {
  kLoader,      // ld-linux*.so*, ld.so, ld-musl*
  kLibc,        // libc.so*, libc-2.*.so, libc.musl*
  kLibdl,       // libdl.so*, libdl-2.*.so
  kLibpthread,  // libpthread.so*, libpthread-2.*.so
  kLibpython,   // libpython3*.so*
  kRuntime,     // libgcc_s, libstdc++, libc++, libunwind: unwinding and static-init locks
  kAllocator,   // libjemalloc, libtcmalloc, libmimalloc: malloc's locks
  kOther,       // any other file-backed object (libtorch, numpy's extensions, ...)
};
ObjectKind classify_object(const std::string& path);

}  // namespace probing::inspect
