// This process's interpreter read without the GIL (layout/interpreter_reader.h), for answers
// that must not wait on it: the stacks when the GIL is held in a long C call, and who holds it.
// The addresses come from dlsym and the version from the resolved CPython API, once.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "layout/interpreter_reader.h"

namespace probing::python {

// The reader of this process's interpreter, opened once: for a caller that reads again and again
// (the sampler). kUnsupported for a CPython version without offsets; kUnavailable when
// process_vm_readv is forbidden or CPython's symbols cannot be found.
const Result<layout::InterpreterReader>& this_interpreter();

// Every thread's stack, read without the GIL. The errors of this_interpreter().
Result<layout::GilFreeSnapshot> read_stacks_gil_free(const layout::GilFreeLimits& limits);

// The stacks of `pid`, a descendant of this process running this interpreter's own file (a fork,
// or an exec of the same python): this process's addresses carried into it (layout/relocate.h).
// kNotFound when it runs another interpreter; the reader's errors otherwise.
Result<layout::GilFreeSnapshot> read_descendant_stacks(pid_t pid, const layout::GilFreeLimits& limits);

struct GilHolder {
  bool locked = false;
  unsigned long thread_id = 0;
  long native_thread_id = 0;
  std::string name;  // "" when not known
};

// Which thread holds the GIL now. Cheap (a few reads). Same errors as read_stacks_gil_free.
Result<GilHolder> read_gil_holder();

// "thread 140.. (tid 4242, \"worker\")", or "" when it cannot be told. Never fails.
std::string describe_gil_holder() noexcept;

// The main thread's threading ident, 0 when it cannot be told. threading.main_thread() is wrong
// when the target never imported threading before the agent did (on an agent thread).
unsigned long main_thread_ident() noexcept;

// Thread names are Python objects that cannot be read safely without the GIL; the live capture
// records them here so that a later GIL-free answer can name threads. Thread-safe.
void remember_thread_names(const std::vector<std::pair<unsigned long, std::string>>& names);
// The remembered name, else "MainThread" for the main thread, else the kernel's comm, else "".
std::string thread_name_for(unsigned long thread_id, long native_thread_id);

}  // namespace probing::python
