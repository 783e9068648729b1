#include "core/syscalls.h"

#include <sys/syscall.h>

#include <iterator>

namespace probing {
namespace {

struct Entry {
  long nr;
  const char* name;
  SyscallSafety safety;
};

#define PROBING_SYSCALL(n, safety) {SYS_##n, #n, SyscallSafety::safety}

// Blocking waits only: a thread parked in one of them is between operations, holding no
// allocator or loader lock (those are taken around futex/mmap/brk, which are not here).
// Which ones a ptrace stop makes return EINTR is listed in signal(7).
constexpr Entry kTable[] = {
    PROBING_SYSCALL(read, kRestarts),
    PROBING_SYSCALL(readv, kRestarts),
    PROBING_SYSCALL(pread64, kRestarts),
    PROBING_SYSCALL(write, kRestarts),
    PROBING_SYSCALL(recvfrom, kRestarts),
    PROBING_SYSCALL(recvmsg, kRestarts),
    PROBING_SYSCALL(accept, kRestarts),
    PROBING_SYSCALL(accept4, kRestarts),
    PROBING_SYSCALL(connect, kRestarts),
    PROBING_SYSCALL(wait4, kRestarts),
    PROBING_SYSCALL(waitid, kRestarts),
    PROBING_SYSCALL(nanosleep, kRestarts),
    PROBING_SYSCALL(clock_nanosleep, kRestarts),
    PROBING_SYSCALL(restart_syscall, kRestarts),
    PROBING_SYSCALL(ppoll, kRestarts),
    PROBING_SYSCALL(pselect6, kRestarts),
    PROBING_SYSCALL(rt_sigsuspend, kRestarts),
#if defined(SYS_poll)
    PROBING_SYSCALL(poll, kRestarts),
#endif
#if defined(SYS_select)
    PROBING_SYSCALL(select, kRestarts),
#endif
#if defined(SYS_pause)
    PROBING_SYSCALL(pause, kRestarts),
#endif
    PROBING_SYSCALL(recvmmsg, kMayReturnEintr),
    PROBING_SYSCALL(epoll_pwait, kMayReturnEintr),
#if defined(SYS_epoll_wait)
    PROBING_SYSCALL(epoll_wait, kMayReturnEintr),
#endif
#if defined(SYS_epoll_pwait2)
    PROBING_SYSCALL(epoll_pwait2, kMayReturnEintr),
#endif
    PROBING_SYSCALL(rt_sigtimedwait, kMayReturnEintr),
    PROBING_SYSCALL(io_getevents, kMayReturnEintr),
};

#undef PROBING_SYSCALL

const Entry* find(long nr) {
  for (const Entry& e : kTable) {
    if (e.nr == nr) return &e;
  }
  return nullptr;
}

}  // namespace

SyscallSafety classify_syscall(long nr) {
  const Entry* e = find(nr);
  return e == nullptr ? SyscallSafety::kUnsafe : e->safety;
}

std::string syscall_name(long nr) {
  const Entry* e = find(nr);
  if (e != nullptr) return e->name;
#if defined(SYS_futex)
  if (nr == SYS_futex) return "futex";
#endif
  return "syscall " + std::to_string(nr);
}

bool is_lock_wait(long nr) {
#if defined(SYS_futex)
  return nr == SYS_futex;
#else
  return false;
#endif
}

}  // namespace probing
