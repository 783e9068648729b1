// Reads every thread's Python stack WITHOUT the GIL, for when the GIL cannot be had in time (a
// thread holds it in a long C call). It follows the interpreter's own structs through the offsets
// of compat_offsets.h; every read goes through safe_read (never a raw dereference), every chain is
// bounded, every object's type is checked against the real type object (from dlsym) before it is
// used. The threads keep running while this reads, so a stack may be torn: a frame that fails a
// check ends that thread's stack with a note rather than being guessed at. Thread-safe; needs no
// GIL; never calls into Python.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "python/compat_offsets.h"

namespace probing::python {

struct RawFrame {
  std::string func;  // co_qualname on 3.11+, co_name before
  std::string file;
  int lineno = 0;      // -1 when the instruction has no line
  bool entry = false;  // the first frame its C-level _PyEval_EvalFrameDefault call ran
};

struct RawThread {
  unsigned long thread_id = 0;  // threading.get_ident()
  long native_thread_id = 0;    // the kernel tid; 0 when unknown (3.9-3.10)
  bool holds_gil = false;
  std::vector<RawFrame> frames;  // innermost first
  bool truncated = false;        // capped at max_frames
  std::string error;             // why the walk stopped early, if it did
};

struct GilFreeSnapshot {
  std::vector<RawThread> threads;
  bool gil_locked = false;
  unsigned long holder_thread_id = 0;  // 0 when no thread holds the GIL (or it is unknown)
  long holder_native_thread_id = 0;
  std::string offsets_source;  // "table" or "_Py_DebugOffsets"
};

struct GilFreeLimits {
  int max_frames = 4096;
  int max_threads = 512;
  int max_interpreters = 16;
  long native_thread_id = 0;  // when not 0, only the thread with this kernel tid (3.11+)
};

// kUnsupported for a CPython version without offsets; kUnavailable when process_vm_readv is
// forbidden or CPython's symbols cannot be found.
Result<GilFreeSnapshot> read_stacks_gil_free(const GilFreeLimits& limits);

// Another process, read from outside with process_vm_readv (ptrace's permission): the addresses
// there of _PyRuntime and the type objects, and the interpreter's version.
struct PythonProcess {
  pid_t pid = 0;
  PythonVersion version;
  uintptr_t runtime = 0;
  uintptr_t unicode_type = 0;
  uintptr_t code_type = 0;
  uintptr_t bytes_type = 0;
  uintptr_t frame_type = 0;  // 3.9-3.10; 0 skips the frame type check
  bool free_threaded = false;  // exports compat.h's kFreeThreadedSymbol: refused
};

// read_stacks_gil_free on another process. A thread that is ptrace-stopped reads consistently.
Result<GilFreeSnapshot> read_stacks_of(const PythonProcess& target, const GilFreeLimits& limits);

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

// The line of the instruction at `byte_offset` in a code object whose line table (in `format`)
// is `table`. -1 when the instruction has no line or the table is malformed. Exposed for tests.
int line_for_offset(LineTableFormat format, const uint8_t* table, size_t size, int firstlineno,
                    int byte_offset);

}  // namespace probing::python
