// What /proc says about a target process and its threads (internal to inject).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace probing::inspect {

// Fields of /proc/PID/status (or /proc/PID/task/TID/status).
struct ProcStatus {
  std::string name;   // Name:
  char state = '?';   // first letter of State: R S D T t Z X I
  pid_t tracer = 0;   // TracerPid: 0 when nobody traces it
};

// kNotFound "no process 123" when it does not exist.
Result<ProcStatus> read_proc_status(pid_t pid, pid_t tid = 0);

// The thread ids of `pid`, the main thread first. kNotFound when the process is gone.
Result<std::vector<pid_t>> list_threads(pid_t pid);

// /proc/PID/task/TID/syscall: what a thread is doing, read without stopping it.
struct SyscallHint {
  bool known = false;     // the file could be read
  bool running = false;   // on a CPU right now (the kernel does not look at a running thread)
  long nr = -1;           // the system call it is blocked in; -1 when blocked outside one
  std::uintptr_t sp = 0;  // user stack pointer and program counter, when blocked
  std::uintptr_t pc = 0;
};
SyscallHint read_syscall_hint(pid_t pid, pid_t tid);

// The kPermissionDenied status for a refused ptrace(`what`) on `pid`: says why it may have been
// refused (uid, CAP_SYS_PTRACE, Yama's ptrace_scope with its current value) and where to read.
Status ptrace_denied(pid_t pid, const std::string& what);


}  // namespace probing::inspect
