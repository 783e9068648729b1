// Reading and writing another process's memory through /proc/PID/mem (internal to inject).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace probing::inspect {

// REQUIRES: the caller may ptrace `pid` (the kernel checks on open). Writes work on any page,
// read-only ones included, as for a debugger. Not thread-safe.
class RemoteMemory {
 public:
  static Result<RemoteMemory> open(pid_t pid);
  RemoteMemory(RemoteMemory&& other) noexcept;
  RemoteMemory& operator=(RemoteMemory&&) = delete;
  RemoteMemory(const RemoteMemory&) = delete;
  ~RemoteMemory();

  Result<std::vector<std::uint8_t>> read(std::uintptr_t address, std::size_t length) const;
  Status write(std::uintptr_t address, const void* data, std::size_t length) const;
  // A NUL-terminated string of at most `max_length` bytes (cut there when longer).
  Result<std::string> read_c_string(std::uintptr_t address, std::size_t max_length) const;

 private:
  RemoteMemory(pid_t pid, int fd) : pid_(pid), fd_(fd) {}
  pid_t pid_;
  int fd_;
};

}  // namespace probing::inspect
