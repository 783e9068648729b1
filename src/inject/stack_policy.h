// Whether a stopped thread may be borrowed for a dlopen() call, judged from its whole stack
// (internal to inject; the rules are described for users in docs/attach.md).
//
// dlopen() needs the loader's lock and malloc's. A thread holds one of them only while a frame
// of the loader, of an allocator, or of a C library function that takes them (malloc, fork,
// dl_iterate_phdr, exit...) is on its stack, or while a signal handler runs on it. A thread parked
// in a lock wait (futex) is safe when its stack proves none of that: the C library function the
// program called to wait is a wait (pthread_cond_wait, sem_clockwait, pthread_mutex_lock...), or
// the wait is the program's own (libgomp's barrier), and nothing below holds such a lock.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "inspect/maps.h"

namespace probing::inject {

// What the thread was doing when it stopped.
enum class Parked {
  kSyscall,   // in a blocking system call other than futex (read, poll, nanosleep...)
  kLockWait,  // in futex: waiting for a lock, a condition, a semaphore, a join
  kRunning,   // running code
};

// One frame, placed in the process's mappings and named where that is certain.
struct PlacedFrame {
  std::uintptr_t pc = 0;
  bool after_signal = false;
  bool mapped = false;  // pc lies in a mapping of a file
  inspect::ObjectKind kind = inspect::ObjectKind::kOther;
  std::string object;    // the file's basename; for other mappings their name ("[vdso]")
  std::string function;  // "" when not known
};

// A function name with glibc's decorations removed, so that every alias of one function reads
// the same: "___pthread_cond_timedwait64" -> "pthread_cond_timedwait", "__GI___libc_malloc" ->
// "libc_malloc", "__new_sem_wait_slow64.constprop.0" -> "new_sem_wait_slow".
std::string plain_function_name(std::string name);

// "" when the thread may be borrowed, else why not. `frames` is its stack, innermost first;
// `complete` says it was unwound to the thread's first frame. For a lock wait, `entry` names the
// C library function that the first frame outside the C library called ("" when that frame
// called none, or when it could not be told).
std::string judge_stack(const std::vector<PlacedFrame>& frames, bool complete, Parked parked,
                        const std::string& entry);

// How many frames at the top of the stack are the C library's (the wait's own frames).
std::size_t libc_frames_on_top(const std::vector<PlacedFrame>& frames);

}  // namespace probing::inject
