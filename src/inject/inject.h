// The ptrace injector: makes a running process dlopen() a shared library, then puts back every
// register and every byte it touched. Used by `probing PID inject`; never loaded into a target.
//
// How it works and what it changes in the target: docs/attach.md.
//
// Thread-safety: inject_library() must not run twice at once for the same target. Each call
// does all its ptrace work on the calling thread (ptrace ties a tracee to the thread that
// attached), and blocks SIGINT/SIGTERM/SIGHUP/SIGQUIT on that thread while the target is touched.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace probing::inject {

// One frame of a stopped thread's stack.
struct StackFrame {
  std::uintptr_t pc = 0;      // frame 0: where the thread is; the others: their return address
  bool after_signal = false;  // a signal interrupted this frame: a handler runs above it
};

// A stopped thread's stack as far as it could be unwound.
struct StackRead {
  std::vector<StackFrame> frames;  // innermost first
  bool complete = false;           // unwound to the thread's first frame
  std::string error;               // why it is not complete
};

// Reads the stacks of threads the injector has stopped, so that a thread parked in a lock wait
// is judged by its whole stack (docs/attach.md). The injector itself links no unwinder: the CLI
// passes one (native::open_stack_reader). Called only from the thread that runs inject_library.
class StackReader {
 public:
  virtual ~StackReader() = default;
  // REQUIRES: `tid` is ptrace-stopped by the calling thread.
  virtual StackRead read(pid_t tid) = 0;
  // The name of the function whose code holds `address`; "" when that is not known for certain.
  virtual std::string function_at(std::uintptr_t address) = 0;
};

struct InjectOptions {
  // Finding a thread that is safe to borrow gives up after this (target restored, kTimeout).
  std::chrono::milliseconds deadline{5000};
  // How long the borrowed thread may spend inside dlopen() (the library's constructors
  // included) before the call is abandoned: the thread is stopped and put back where it was,
  // and the result is kTimeout. Abandoning a dlopen can leave the target's loader locked, so
  // this is a last resort, far longer than any sane constructor.
  std::chrono::milliseconds call_timeout{30000};
  // Without a reader, threads parked in a lock wait (futex) are never borrowed, and the others
  // are judged by their registers alone.
  StackReader* stacks = nullptr;
};

struct InjectReport {
  pid_t tid = 0;               // the thread that made the call
  std::uintptr_t handle = 0;   // what dlopen returned in the target (never 0 on success)
  int attempts = 0;            // threads stopped and examined, the used one included
  std::string how;             // e.g. "thread 123 blocked in clock_nanosleep"
};

// Makes `pid` call dlopen(library_path, RTLD_NOW) on one of its threads and restores that
// thread exactly. `library_path` must be absolute, as seen by the target (its mount namespace).
// REQUIRES: the caller may ptrace `pid` (same uid, or CAP_SYS_PTRACE; Yama allows it).
// Errors: kNotFound "no process 123"; kUnavailable for a zombie, a stopped process, or one that
// another tracer (a debugger) holds; kPermissionDenied when ptrace is refused (the message says
// why and points to docs/attach.md); kTimeout when no safe thread was found before the deadline;
// kInternal when dlopen failed in the target (with dlerror()'s message) or the call crashed.
// On every error the target is left as it was found, except where the message says otherwise.
Result<InjectReport> inject_library(pid_t pid, const std::string& library_path,
                                    const InjectOptions& options = {});

// The checks inject_library() makes before it touches the target, for a caller that wants their
// clear messages before doing anything else: the pid exists and is not a zombie, stopped, or
// traced by someone else; the library exists in the target's filesystem. Touches nothing.
Status check_injectable(pid_t pid, const std::string& library_path);

// Address of the dynamic symbol `symbol` in `pid`: found from /proc/PID/maps and the .dynsym of
// each mapped file, read through /proc/PID/root/<path> so a target in another mount namespace
// (a container with its own glibc) is read correctly. The first mapped object (in address
// order) that defines it wins. kNotFound when no mapped object defines it.
Result<std::uintptr_t> find_remote_symbol(pid_t pid, const std::string& symbol);

// Whether `pid` has a file mapped whose basename is `basename` (e.g. "libprobing.so").
Result<bool> has_mapped_library(pid_t pid, const std::string& basename);

}  // namespace probing::inject
