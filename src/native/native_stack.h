// Native stacks of another process's threads, merged with the Python frames they run; read from
// outside, for `probing PID backtrace --native`. Used by the CLI, never loaded into the target.
//
// Each thread is stopped on its own (PTRACE_SEIZE + PTRACE_INTERRUPT: a ptrace stop, which the
// thread's system calls restart from transparently) for as long as it takes to unwind it with
// libdw (from .eh_frame) and to read its Python frames with process_vm_readv; then it is let go
// and the next one is stopped. Names are looked up after every thread has been let go.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "inspect/stack_reader.h"

namespace probing::native {

struct Frame {
  bool python = false;   // a Python frame (else native)
  std::string func;      // Python: co_qualname; native: the demangled symbol, "??" when unknown
  std::string file;      // Python: co_filename; native: the path of the library
  int lineno = 0;        // Python only
  uint64_t address = 0;  // native: the program counter
  uint64_t offset = 0;   // native: from the symbol's start
};

struct ThreadStack {
  pid_t tid = 0;
  std::string comm;             // the kernel's name for the thread
  unsigned long thread_id = 0;  // threading ident; 0 for a thread Python does not know
  bool python = false;          // Python knows this thread
  bool holds_gil = false;
  std::vector<Frame> frames;  // innermost first
  bool truncated = false;
  std::string note;       // what could not be read, if anything
  double stopped_ms = 0;  // how long the thread was held
};

struct Options {
  int max_native_frames = 512;
  int max_python_frames = 4096;
  double stop_timeout_s = 1.0;  // a thread that does not stop in time is skipped with a note
};

struct Capture {
  std::vector<ThreadStack> threads;
  std::string python_version;  // "" when the process runs no CPython that could be read
  std::vector<std::string> notes;
};

// The stacks of `tids` (threads of `pid`), in that order. kPermissionDenied when `pid` may not
// be traced (with the reason), kNotFound when it is gone; a thread that cannot be read gets a note.
Result<Capture> capture(pid_t pid, const std::vector<pid_t>& tids, const Options& options = {});

// `pid`'s threads read again and again, for `probing profile --native`: the libraries, the
// interpreter and each native frame's name are looked up once. Threads are stopped one at a time,
// as by capture(), and let go before sample() returns. Use it from one thread only, one that
// ends when sampling ends: a thread that never stopped stays traced by it until then.
class Sampler {
 public:
  static Result<Sampler> open(pid_t pid, const Options& options = {});
  ~Sampler();
  Sampler(Sampler&&) noexcept;
  Sampler& operator=(Sampler&&) noexcept;

  // Whether to read a thread, from its kernel state ('R' running, 'S' asleep...) and whether it
  // holds the GIL (both known without stopping it); a thread left out is not stopped.
  using Keep = std::function<bool(pid_t tid, char state, bool holds_gil)>;

  // The stacks of `tids` now (those `keep` keeps, when given), in that order. Errors as capture().
  Result<Capture> sample(const std::vector<pid_t>& tids, const Keep& keep = nullptr);
  std::string python_version() const;  // "" when no CPython was found
  std::string python_note() const;     // why Python frames cannot be shown; "" when they can

 private:
  struct State;
  explicit Sampler(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// Unwinds threads of `pid` that the caller has ptrace-stopped, for the injector's judgement of a
// thread's whole stack (inject::InjectOptions::stacks). Errors as capture(). Use it from one
// thread only: the one that stops the threads.
Result<std::unique_ptr<inspect::StackReader>> open_stack_reader(pid_t pid);

// Names for `pcs`, addresses in a process that may be gone, from the files its maps (the text of
// /proc/PID/maps, saved) list, as those files are now, under `root` (the file system that process
// saw: a container's or a chroot's; "" or "/" for this one): for a crash report. The first address
// is where the thread stopped, the others return addresses. An address no file holds keeps "??".
// One thread at a time.
std::vector<Frame> symbolize_offline(const std::string& maps_text, const std::vector<uint64_t>& pcs,
                                     const std::string& root = "");

// The kernel tid of the thread whose threading ident is `ident`, read from outside; 0 if none.
pid_t tid_for_ident(pid_t pid, unsigned long ident);

}  // namespace probing::native
