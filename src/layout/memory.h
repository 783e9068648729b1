// Fault-safe reads of this process's own memory. The GIL-free stack reader follows pointers that
// other threads may be changing; a plain dereference of a stale pointer would crash the target.
// process_vm_readv on our own pid returns EFAULT for unmapped memory instead. Thread-safe.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/status.h"

namespace probing::layout {

// Copies n bytes at addr in process `pid` into out. False (out unspecified) when any byte is
// unreadable, addr is null, or `pid` may not be read (ptrace's permission rules). Never faults.
bool read_memory(pid_t pid, uintptr_t addr, void* out, size_t n) noexcept;

// Reads `n` blocks of `size` bytes, block i from addrs[i], into out + i * stride, in one
// process_vm_readv per 1024 blocks. Returns how many blocks, from the first, were read whole: a
// block that cannot be read ends the run. Never faults.
size_t read_blocks(pid_t pid, const uintptr_t* addrs, size_t n, size_t size, size_t stride, uint8_t* out) noexcept;

// This process's pid, without a system call each time (glibc no longer caches getpid); a forked
// child gets its own.
pid_t self_pid() noexcept;

// Makes self_pid() ask again: for a child made by a bare clone system call, which runs no
// pthread_atfork handler (the crash handler's).
void refresh_self_pid() noexcept;

// read_memory on this process.
bool safe_read(uintptr_t addr, void* out, size_t n) noexcept;

template <typename T>
bool safe_read_value(uintptr_t addr, T* out) noexcept {
  return safe_read(addr, out, sizeof(T));
}

// Reads a pointer-sized word; 0 when unreadable (0 is never a valid object address).
inline uintptr_t safe_read_ptr(uintptr_t addr) noexcept {
  uintptr_t v = 0;
  return safe_read_value(addr, &v) ? v : 0;
}

// ok when process_vm_readv works in this process (it may be forbidden by a seccomp policy).
Status safe_memory_available();

}  // namespace probing::layout
