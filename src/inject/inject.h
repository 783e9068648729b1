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
#include "inspect/stack_reader.h"

namespace probing::inject {

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
  inspect::StackReader* stacks = nullptr;
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


}  // namespace probing::inject
