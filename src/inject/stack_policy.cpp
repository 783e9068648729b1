#include "inject/stack_policy.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <string_view>

namespace probing::inject {

using inspect::ObjectKind;
namespace {

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool in(std::string_view name, std::initializer_list<std::string_view> names) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

// C library functions that take a lock dlopen() needs (the loader's, malloc's, fork's, exit's)
// and may block, or call back into the program, while they hold it.
bool takes_loader_or_malloc_lock(std::string_view f) {
  return in(f, {"malloc", "libc_malloc", "int_malloc", "sysmalloc", "malloc_consolidate", "arena_get2",
                "calloc", "libc_calloc", "realloc", "libc_realloc", "int_realloc", "free", "libc_free",
                "int_free", "cfree", "memalign", "libc_memalign", "int_memalign", "posix_memalign",
                "aligned_alloc", "valloc", "pvalloc", "malloc_trim", "malloc_stats", "malloc_info",
                "mallinfo", "mallinfo2", "lll_lock_wait_private",
                "dl_iterate_phdr", "fork", "libc_fork", "Fork", "run_fork_handlers", "exit",
                "run_exit_handlers", "cxa_finalize", "libc_freeres", "abort", "libc_message",
                "dlopen", "dlmopen", "dlclose", "dlsym", "dlvsym", "dladdr", "dladdr1", "dlinfo",
                "libc_dlopen_mode", "libc_dlsym", "libc_dlclose"});
}

// C library functions that only wait: for a mutex, a condition, a semaphore, a thread, a futex.
// Their own frames hold no lock of the C library's (a condition's internal lock is its own).
bool is_wait(std::string_view f) {
  return in(f, {"pthread_cond_wait", "pthread_cond_timedwait", "pthread_cond_clockwait", "sem_wait",
                "sem_timedwait", "sem_clockwait", "new_sem_wait", "new_sem_clockwait", "pthread_mutex_lock",
                "pthread_mutex_timedlock", "pthread_mutex_clocklock", "pthread_rwlock_rdlock",
                "pthread_rwlock_wrlock", "pthread_rwlock_timedrdlock", "pthread_rwlock_timedwrlock",
                "pthread_rwlock_clockrdlock", "pthread_rwlock_clockwrlock", "pthread_join",
                "pthread_timedjoin_np", "pthread_clockjoin_np", "pthread_barrier_wait", "pthread_once",
                "syscall", "cnd_wait", "cnd_timedwait", "mtx_lock", "mtx_timedlock", "thrd_join",
                "call_once"});
}

bool is_libc(const PlacedFrame& f) {
  return f.mapped && (f.kind == ObjectKind::kLibc || f.kind == ObjectKind::kLibpthread);
}

std::string frame_text(const PlacedFrame& f, std::size_t i) {
  char pc[32];
  std::snprintf(pc, sizeof pc, "0x%lx", static_cast<unsigned long>(f.pc));
  return "frame #" + std::to_string(i) + " at " + pc + (f.object.empty() ? "" : " in " + f.object);
}

}  // namespace

std::string plain_function_name(std::string name) {
  if (const std::size_t at = name.find('@'); at != std::string::npos) name.resize(at);
  if (const std::size_t dot = name.find('.'); dot != std::string::npos) name.resize(dot);
  while (starts_with(name, "__GI_")) name.erase(0, 5);
  const std::size_t first = name.find_first_not_of('_');
  name.erase(0, first == std::string::npos ? name.size() : first);
  if (ends_with(name, "_time64")) {
    name.resize(name.size() - 7);
  } else if (ends_with(name, "64") && name.size() > 2 &&
             std::isalpha(static_cast<unsigned char>(name[name.size() - 3]))) {
    name.resize(name.size() - 2);
  }
  return name;
}

std::size_t libc_frames_on_top(const std::vector<PlacedFrame>& frames) {
  std::size_t n = 0;
  while (n < frames.size() && is_libc(frames[n])) ++n;
  return n;
}

std::string judge_stack(const std::vector<PlacedFrame>& frames, bool complete, Parked parked,
                        const std::string& entry) {
  if (frames.empty()) return "its stack could not be read";
  if (parked == Parked::kLockWait && !complete) return "its stack could not be unwound to the end";
  // Where the thread's start (start_thread, __libc_start_main, then _start) begins.
  std::size_t bottom = frames.size();
  if (bottom > 1 && !is_libc(frames[bottom - 1])) --bottom;
  while (bottom > 0 && is_libc(frames[bottom - 1])) --bottom;
  const std::size_t top = libc_frames_on_top(frames);

  for (std::size_t i = 0; i < frames.size(); ++i) {
    const PlacedFrame& f = frames[i];
    if (i > 0 && f.after_signal) return "a signal handler runs on it (" + frame_text(f, i) + ")";
    if (!f.mapped) {
      // The vDSO takes no lock. Code outside any file (JIT) is unwound by guesswork (no CFI),
      // which could have skipped a frame: a lock wait is not trusted past it.
      if (parked == Parked::kLockWait && f.object != "[vdso]") {
        return "code outside any file is on its stack (" + frame_text(f, i) +
               "): it cannot be unwound reliably";
      }
      continue;
    }
    const std::string function = plain_function_name(f.function);
    switch (f.kind) {
      case ObjectKind::kLoader:
        return "the dynamic loader is on its stack (" +
               (f.function.empty() ? frame_text(f, i) : f.function) + ")";
      case ObjectKind::kAllocator:
        return f.object + " is on its stack (it may hold an allocator lock)";
      case ObjectKind::kRuntime:
        if (starts_with(f.object, "libgcc_s") || starts_with(f.object, "libunwind")) {
          return "it is unwinding (" + f.object + " is on its stack; it may hold the loader's lock)";
        }
        break;
      case ObjectKind::kLibc:
      case ObjectKind::kLibpthread:
      case ObjectKind::kLibdl:
        if (takes_loader_or_malloc_lock(function)) {
          return "the C library's " + f.function + " is on its stack (it may hold a lock dlopen needs)";
        }
        // Between the wait and the thread's start, only named C library functions: an unnamed one
        // could be the part of malloc or exit that holds their lock.
        if (parked != Parked::kSyscall && i >= top && i < bottom && function.empty()) {
          return "an unnamed C library function is on its stack (" + frame_text(f, i) + ")";
        }
        break;
      default:
        break;
    }
  }
  if (parked != Parked::kLockWait) return "";
  if (top == frames.size()) return "its stack is the C library's only";
  if (top == 0) return "";  // the program's own wait (libgomp's barrier, a raw futex)
  if (entry.empty()) return "it waits inside the C library, called from " + frames[top].object +
                            " through a call that could not be decoded";
  if (!is_wait(plain_function_name(entry))) {
    return "it waits inside the C library's " + entry + " (which may hold a lock dlopen needs)";
  }
  return "";
}

}  // namespace probing::inject
