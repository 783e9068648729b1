// System calls by number, for this architecture: their names, and which ones a thread may be
// borrowed from by the injector (inject's rules, docs/attach.md).
#pragma once

#include <string>

namespace probing {

enum class SyscallSafety {
  kUnsafe,          // not on the list: may hold a lock the loader or malloc needs (futex, mmap...)
  kRestarts,        // a blocking wait that the kernel restarts transparently after a ptrace stop
  kMayReturnEintr,  // a blocking wait that may return EINTR to the program after a ptrace stop
                    // (epoll_wait, sigtimedwait...): safe, but used only when nothing better is
};

// How safe it is to borrow a thread blocked in system call `nr` (this architecture's numbers).
SyscallSafety classify_syscall(long nr);

// "clock_nanosleep", or "syscall 230" for calls not in our table.
std::string syscall_name(long nr);

// Whether system call `nr` is a lock wait (futex): safe only as far as the thread's stack says.
bool is_lock_wait(long nr);

}  // namespace probing
