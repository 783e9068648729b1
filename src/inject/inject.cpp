// inject_library(): choose a thread, borrow it for one dlopen() call, put it back.
// The steps and the safety rules are described for users in docs/attach.md.
#include "inject/inject.h"

#include <dlfcn.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <thread>
#include <vector>

#include "inject/arch.h"
#include "inject/stack_policy.h"
#include "inspect/maps.h"
#include "inspect/memory.h"
#include "inspect/process.h"
#include "inspect/symbols.h"
#include "core/syscalls.h"
#include "inspect/tracee.h"

namespace probing::inject {

using Clock = std::chrono::steady_clock;
using inspect::classify_object;
using inspect::find_mapping;
using inspect::list_threads;
using inspect::mapped_files;
using inspect::Mapping;
using inspect::ObjectKind;
using inspect::path_basename;
using inspect::ProcStatus;
using inspect::read_maps;
using inspect::read_proc_status;
using inspect::read_syscall_hint;
using inspect::RemoteMemory;
using inspect::resolve_symbol_in;
using inspect::StackFrame;
using inspect::StackRead;
using inspect::StackReader;
using inspect::Stop;
using inspect::SyscallHint;
using inspect::Tracee;
namespace {

// The borrowed thread "returns" here; executing it faults, and the fault is our stop.
constexpr std::uintptr_t kReturnAddress = 0;
// glibc's internal flag for __libc_dlopen_mode: open as dlopen() would.
constexpr int kRtldDlopen = static_cast<int>(0x80000000u);
constexpr std::size_t kMaxPathLength = 4095;
constexpr std::size_t kMaxErrorLength = 1024;
// Per round, at most this many threads are stopped and looked at.
constexpr int kProbesPerRound = 8;
// Of which at most this many are threads found running (not parked in a system call).
constexpr int kRunningProbesPerRound = 3;
// How long one candidate may take to reach its interrupt stop.
constexpr auto kStopTimeout = std::chrono::milliseconds(200);

std::string hex(std::uintptr_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%lx", static_cast<unsigned long>(v));
  return buf;
}

std::string process_text(pid_t pid) { return "process " + std::to_string(pid); }

// Blocks the signals that end a CLI (Ctrl-C, kill, hang-up) on the calling thread for its
// lifetime, so the target is never left half-way; they are delivered when it ends.
class CriticalSection {
 public:
  CriticalSection() {
    sigset_t block;
    sigemptyset(&block);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaddset(&block, sig);
    pthread_sigmask(SIG_BLOCK, &block, &old_);
  }
  ~CriticalSection() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  CriticalSection(const CriticalSection&) = delete;
  CriticalSection& operator=(const CriticalSection&) = delete;

 private:
  sigset_t old_;
};

// The loader entry points in the target.
struct LoaderApi {
  std::uintptr_t open = 0;   // dlopen, or __libc_dlopen_mode
  std::uintptr_t error = 0;  // dlerror; 0 when there is none to call
  int mode = RTLD_NOW;
  std::string description;   // "dlopen in /lib/x86_64-linux-gnu/libc.so.6"
};

// dlopen from the target's own C library (glibc >= 2.34, musl), else from libdl (older glibc),
// else glibc's private __libc_dlopen_mode; never from our own process's libc.
Result<LoaderApi> find_loader_api(pid_t pid, const std::vector<Mapping>& maps) {
  std::vector<std::string> libc, libdl;
  for (const std::string& file : mapped_files(maps)) {
    const ObjectKind kind = classify_object(file);
    if (kind == ObjectKind::kLibc) libc.push_back(file);
    if (kind == ObjectKind::kLibdl) libdl.push_back(file);
  }
  Status last(Code::kNotFound, "no C library is mapped");
  for (const auto* group : {&libc, &libdl}) {
    for (const std::string& object : *group) {
      Result<std::uintptr_t> open = resolve_symbol_in(pid, maps, object, "dlopen");
      if (!open) {
        last = open.status();
        continue;
      }
      LoaderApi api;
      api.open = *open;
      Result<std::uintptr_t> error = resolve_symbol_in(pid, maps, object, "dlerror");
      if (error) api.error = *error;
      api.description = "dlopen in " + object;
      return api;
    }
  }
  for (const std::string& object : libc) {
    Result<std::uintptr_t> open = resolve_symbol_in(pid, maps, object, "__libc_dlopen_mode");
    if (!open) continue;
    LoaderApi api;
    api.open = *open;
    api.mode = RTLD_NOW | kRtldDlopen;
    api.description = "__libc_dlopen_mode in " + object;
    return api;
  }
  return Status(Code::kNotFound, "no dlopen in " + process_text(pid) +
                                     " (looked in libc, libdl, then __libc_dlopen_mode): " +
                                     last.message());
}

// A signal that reached the borrowed thread during the call, held back until it is restored.
struct HeldSignal {
  int signal = 0;
  siginfo_t info{};
  bool have_info = false;
};

// A thread stopped and judged safe to borrow.
struct Borrowed {
  Tracee tracee;
  arch::CpuState saved;
  std::string how;
};

enum class Tier { kRestartingSyscall = 0, kEintrSyscall = 1, kLockWait = 2, kRunning = 3 };

struct Candidate {
  pid_t tid;
  Tier tier;
  SyscallHint hint;
};

// Why each thread was not borrowed, for the message when none was.
using Reasons = std::map<pid_t, std::string>;

// Orders the threads by how promising they look from /proc, without stopping any: parked in a
// transparently restarted wait first, then waits that may see EINTR, then lock waits (only with
// a stack reader to judge them), then running threads. The others go to `skipped`.
std::vector<Candidate> rank_threads(pid_t pid, const std::vector<pid_t>& tids,
                                    const std::vector<Mapping>& maps, bool read_stacks, Reasons& skipped) {
  std::vector<Candidate> out;
  for (pid_t tid : tids) {
    SyscallHint hint = read_syscall_hint(pid, tid);
    if (!hint.known || hint.running) {
      out.push_back({tid, Tier::kRunning, hint});
      continue;
    }
    if (hint.nr < 0) {
      skipped[tid] = "stopped or blocked outside a system call";
      continue;
    }
    const Mapping* m = find_mapping(maps, hint.pc);
    if (m != nullptr && classify_object(m->path) == ObjectKind::kLoader) {
      skipped[tid] = "blocked inside the dynamic loader";
      continue;
    }
    switch (classify_syscall(hint.nr)) {
      case SyscallSafety::kRestarts: out.push_back({tid, Tier::kRestartingSyscall, hint}); break;
      case SyscallSafety::kMayReturnEintr: out.push_back({tid, Tier::kEintrSyscall, hint}); break;
      case SyscallSafety::kUnsafe:
        if (read_stacks && is_lock_wait(hint.nr)) {
          out.push_back({tid, Tier::kLockWait, hint});
        } else if (is_lock_wait(hint.nr)) {
          skipped[tid] = "blocked in futex (its stack could not be read to judge it)";
        } else {
          skipped[tid] = "blocked in " + syscall_name(hint.nr);
        }
        break;
    }
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const Candidate& a, const Candidate& b) { return a.tier < b.tier; });
  return out;
}

// One line per thread still alive: why it was not borrowed (at most kMaxReasonLines of them).
std::string reasons_text(pid_t pid, const Reasons& reasons) {
  constexpr std::size_t kMaxReasonLines = 32;
  std::string text;
  std::size_t shown = 0, more = 0;
  for (const auto& [tid, reason] : reasons) {
    Result<ProcStatus> st = read_proc_status(pid, tid);
    if (!st || st->state == 'Z' || st->state == 'X') continue;  // it has exited since
    if (shown == kMaxReasonLines) {
      ++more;
      continue;
    }
    ++shown;
    text += "\n  thread " + std::to_string(tid) + " \"" + st->name + "\": " + reason;
  }
  if (more > 0) text += "\n  ... and " + std::to_string(more) + " more threads";
  return text;
}

// Decides from a stopped thread's registers whether it may be borrowed. Returns "" and sets
// `how` and `parked` when it may (a lock wait only when `lock_waits` says its stack is judged
// next), else the reason it may not.
std::string judge(pid_t tid, const arch::CpuState& state, const SyscallHint& hint,
                  const std::vector<Mapping>& maps, bool lock_waits, std::string& how, Parked& parked) {
  const std::uintptr_t pc = arch::program_counter(state);
  const Mapping* code = find_mapping(maps, pc);
  if (code == nullptr) return "pc " + hex(pc) + " is outside every mapping (JIT code?)";
  const ObjectKind kind = classify_object(code->path);
  const std::string where = code->path.empty() ? std::string("anonymous memory") : path_basename(code->path);
  if (kind == ObjectKind::kLoader) return "pc is inside the dynamic loader (" + where + ")";

  // The stack must have room for the path, the frame and the red zone, all in one writable
  // mapping (not a guard page).
  const std::uintptr_t sp = arch::stack_pointer(state);
  const Mapping* stack = find_mapping(maps, sp - 1);
  if (stack == nullptr || stack->perms.size() < 2 || stack->perms[1] != 'w' ||
      sp - stack->start < arch::kRedZone + kMaxPathLength + 256) {
    return "stack pointer " + hex(sp) + " has too little writable stack below it";
  }

  const long nr = arch::stopped_syscall(state, hint.nr, hint.pc);
  if (nr >= 0) {
    const bool lock_wait = lock_waits && is_lock_wait(nr);
    if (classify_syscall(nr) == SyscallSafety::kUnsafe && !lock_wait) return "blocked in " + syscall_name(nr);
    // -ERESTART*: the wait was interrupted by our stop; otherwise the call had just finished.
    const auto result = static_cast<long>(arch::return_value(state));
    const bool blocked = result >= -516 && result <= -512;
    how = "thread " + std::to_string(tid) + (blocked ? " blocked in " : " returning from ") +
          syscall_name(nr);
    parked = lock_wait ? Parked::kLockWait : Parked::kSyscall;
    return "";
  }
  if (kind == ObjectKind::kLibc || kind == ObjectKind::kLibpthread || kind == ObjectKind::kLibdl) {
    return "running inside " + where + " (maybe in malloc or holding a libc lock)";
  }
  if (kind == ObjectKind::kRuntime || kind == ObjectKind::kAllocator) {
    return "running inside " + where + " (it may hold a lock that dlopen needs)";
  }
  if (code->path.empty() || code->path[0] != '/') return "running in " + where + " (JIT code?)";
  // The main executable, libpython, or another library (libtorch's kernels, say): dlopen only
  // needs the loader's and libc's locks, and a thread whose pc is here holds neither — unless a
  // frame below it holds one, which judge_whole_stack() looks for when it can read the stack.
  how = "thread " + std::to_string(tid) + " running in " + where;
  parked = Parked::kRunning;
  return "";
}

// Decides from a stopped thread's whole stack (see stack_policy.h). Returns "" when it may be
// borrowed, and adds to `how` what it waits in; else the reason it may not.
std::string judge_whole_stack(StackReader& reader, const RemoteMemory& memory, pid_t tid,
                              const std::vector<Mapping>& maps, Parked parked, std::string& how) {
  StackRead read = reader.read(tid);
  std::vector<PlacedFrame> frames;
  frames.reserve(read.frames.size());
  for (const StackFrame& sf : read.frames) {
    PlacedFrame& f = frames.emplace_back();
    f.pc = sf.pc;
    f.after_signal = sf.after_signal;
    const Mapping* m = find_mapping(maps, sf.pc);
    f.mapped = m != nullptr && m->is_file();
    if (!f.mapped) {
      if (m != nullptr) f.object = m->path;
      continue;
    }
    f.kind = classify_object(m->path);
    f.object = path_basename(m->path);
    // Names matter in the C library and the loader only; naming libtorch's frames would load
    // its symbol table while the thread waits.
    if (f.kind == ObjectKind::kLibc || f.kind == ObjectKind::kLibpthread || f.kind == ObjectKind::kLibdl ||
        f.kind == ObjectKind::kLoader) {
      f.function = reader.function_at(frames.size() == 1 ? sf.pc : sf.pc - 1);
    }
  }
  std::string entry;
  const std::size_t top = libc_frames_on_top(frames);
  if (parked == Parked::kLockWait && top > 0 && top < frames.size()) {
    // What the program called to wait: decoded from the call before the return address.
    if (std::optional<std::uintptr_t> callee = arch::call_target(memory, frames[top].pc)) {
      const Mapping* m = find_mapping(maps, *callee);
      const ObjectKind kind = m != nullptr ? classify_object(m->path) : ObjectKind::kOther;
      // Trusted only at the very start of a named function (the byte before it is another's,
      // or padding): bytes before a `call *%reg` can look like a `call rel32` by chance.
      if (kind == ObjectKind::kLibc || kind == ObjectKind::kLibpthread) {
        std::string name = reader.function_at(*callee);
        if (!name.empty() && reader.function_at(*callee - 1) != name) entry = std::move(name);
      }
    }
    if (entry.empty())
      entry = frames[top - 1].function;  // the outermost libc frame, if it was not a tail call
  }
  std::string reason = judge_stack(frames, read.complete, parked, entry);
  if (!reason.empty()) {
    if (!read.complete && !read.error.empty()) reason += " (" + read.error + ")";
    return reason;
  }
  if (parked == Parked::kLockWait) {
    how += " (" + (entry.empty() ? std::string("a wait") : plain_function_name(entry)) + " called from " +
           frames[top].object + ")";
  }
  return "";
}

// Stops `candidate` and keeps it when it is safe; otherwise lets it go.
// Returns the borrowed thread, nothing (with `reason` set) when it was let go, or an error
// that ends the whole injection (permission, process gone).
// `settled` is set when the thread was refused for its stack while parked exactly where /proc
// said it was: until it moves, asking again would give the same answer.
Result<std::optional<Borrowed>> try_thread(pid_t pid, const Candidate& candidate,
                                           const std::vector<Mapping>& maps, const RemoteMemory& memory,
                                           StackReader* stacks, Clock::time_point deadline,
                                           std::string& reason, bool& settled) {
  settled = false;
  Result<Tracee> seized = Tracee::seize(pid, candidate.tid);
  if (!seized) {
    if (seized.status().code() == Code::kNotFound) {  // that thread just exited
      reason = seized.status().message();
      return std::optional<Borrowed>();
    }
    return seized.status();
  }
  Tracee tracee = std::move(*seized);
  Status stopped = tracee.interrupt(std::min(deadline, Clock::now() + kStopTimeout));
  if (!stopped.is_ok()) {
    if (stopped.code() == Code::kTimeout || tracee.gone()) {
      reason = stopped.message();
      return std::optional<Borrowed>();  // the destructor lets it go
    }
    return stopped;
  }
  Result<arch::CpuState> state = arch::read_state(candidate.tid);
  if (!state) return state.status();
  std::string how;
  Parked parked = Parked::kRunning;
  reason = judge(candidate.tid, *state, candidate.hint, maps, stacks != nullptr, how, parked);
  if (reason.empty() && stacks != nullptr) {
    reason = judge_whole_stack(*stacks, memory, candidate.tid, maps, parked, how);
    settled = !reason.empty() && parked != Parked::kRunning && candidate.hint.nr >= 0 &&
              arch::program_counter(*state) == candidate.hint.pc &&
              arch::stack_pointer(*state) == candidate.hint.sp;
  }
  if (!reason.empty()) {
    PROBING_RETURN_IF_ERROR(tracee.detach(0));
    return std::optional<Borrowed>();
  }
  return std::optional<Borrowed>(Borrowed{std::move(tracee), std::move(*state), std::move(how)});
}

// Runs fn(arg0, arg1) on the borrowed thread and returns its result. Signals that arrive
// meanwhile are held in `held`. On return the thread is stopped (or gone, see tracee.gone()).
Result<std::uintptr_t> call_function(Borrowed& b, const RemoteMemory& memory, std::uintptr_t fn,
                                     std::uintptr_t arg0, std::uintptr_t arg1,
                                     std::uintptr_t stack_top, Clock::time_point deadline,
                                     std::vector<HeldSignal>& held) {
  const pid_t tid = b.tracee.tid();
  arch::CallSetup call = arch::prepare_call(b.saved, fn, arg0, arg1, stack_top, kReturnAddress);
  if (!call.stack_bytes.empty()) {
    PROBING_RETURN_IF_ERROR(memory.write(call.stack_address, call.stack_bytes.data(), call.stack_bytes.size()));
  }
  PROBING_RETURN_IF_ERROR(arch::write_general(tid, call.registers));
  PROBING_RETURN_IF_ERROR(b.tracee.resume(0));
  // Bounded by the deadline: every pass waits for one stop.
  for (;;) {
    Result<Stop> stop = b.tracee.wait(deadline);
    if (!stop) {
      if (stop.status().code() != Code::kTimeout) return stop.status();
      // Abandon the call: stop the thread where it is so it can be put back.
      Status st = b.tracee.interrupt(Clock::now() + std::chrono::seconds(1));
      if (!st.is_ok()) return st.with_context("stopping thread " + std::to_string(tid) + " after a timed-out call");
      return Status(Code::kTimeout, "the call at " + hex(fn) + " did not return in time; thread " +
                                        std::to_string(tid) +
                                        " was put back, but the target's loader may stay locked");
    }
    if (stop->kind == Stop::Kind::kGone) {
      return Status(Code::kUnavailable, "thread " + std::to_string(tid) + " ended during the call (" +
                                            process_text(b.tracee.pid()) + " killed?)");
    }
    if (stop->kind == Stop::Kind::kEvent) {
      // A group-stop (SIGSTOP sent to the process meanwhile): finish the call, then stop.
      if (stop->signal != SIGTRAP) held.push_back({stop->signal, {}, false});
      PROBING_RETURN_IF_ERROR(b.tracee.resume(0));
      continue;
    }
    Result<arch::CpuState> now = arch::read_state(tid);
    if (!now) return now.status();
    const std::uintptr_t pc = arch::program_counter(*now);
    if (stop->signal == SIGSEGV && pc == kReturnAddress) return arch::return_value(*now);
    Result<siginfo_t> info = b.tracee.siginfo();
    const bool fault = info && info->si_code > 0 &&
                       (stop->signal == SIGSEGV || stop->signal == SIGBUS || stop->signal == SIGILL ||
                        stop->signal == SIGFPE);
    if (fault) {
      return Status(Code::kInternal, "the call at " + hex(fn) + " crashed with signal " +
                                         std::to_string(stop->signal) + " at pc " + hex(pc) +
                                         "; thread " + std::to_string(tid) +
                                         " was put back, but the target may be damaged");
    }
    HeldSignal h;
    h.signal = stop->signal;
    if (info) {
      h.info = *info;
      h.have_info = true;
    }
    const bool standard_dup = h.signal < SIGRTMIN &&
        std::any_of(held.begin(), held.end(), [&](const HeldSignal& x) { return x.signal == h.signal; });
    if (!standard_dup) held.push_back(h);  // standard signals do not queue: one is all of them
    PROBING_RETURN_IF_ERROR(b.tracee.resume(0));
  }
}

// Puts the borrowed thread back: stack bytes, every register, then detaches, handing it the
// signals held during the call. The interrupted system call, if any, is restarted by the kernel
// on the way out of this stop exactly as it would have been after the interrupt stop: the saved
// registers still say "in syscall N, result -ERESTART*" (see docs/attach.md).
Status restore(Borrowed& b, const RemoteMemory& memory, std::uintptr_t region,
               const std::vector<std::uint8_t>& saved_bytes, const std::vector<HeldSignal>& held) {
  if (b.tracee.gone()) return Status::ok();
  const pid_t tid = b.tracee.tid();
  Status st = memory.write(region, saved_bytes.data(), saved_bytes.size());
  Status regs = arch::write_state(tid, b.saved);
  if (!regs.is_ok()) return regs.with_context("restoring thread " + std::to_string(tid));
  int detach_signal = 0;
  for (std::size_t i = 0; i < held.size(); ++i) {
    if (i == 0 && b.tracee.at_signal_stop() && held[i].have_info && b.tracee.set_siginfo(held[i].info).is_ok()) {
      detach_signal = held[i].signal;  // delivered with its original siginfo
      continue;
    }
    ::syscall(SYS_tgkill, b.tracee.pid(), tid, held[i].signal);
  }
  Status detached = b.tracee.detach(detach_signal);
  if (!detached.is_ok()) return detached;
  return st.with_context("restoring the stack of thread " + std::to_string(tid));
}

// The call itself, on a borrowed thread; always restores it.
Result<std::uintptr_t> borrow_and_call(Borrowed& b, const RemoteMemory& memory, const LoaderApi& api,
                                       const std::string& library_path, const InjectOptions& options) {
  // [region, top): what we write — the path, then the call frame below it — kept below the
  // red zone of the interrupted code and saved first.
  const std::uintptr_t top = arch::stack_pointer(b.saved) - arch::kRedZone;
  const std::uintptr_t path_at = (top - (library_path.size() + 1)) & ~std::uintptr_t{15};
  const std::uintptr_t region = (path_at - arch::kCallStackBytes - 16) & ~std::uintptr_t{15};
  Result<std::vector<std::uint8_t>> saved_bytes = memory.read(region, top - region);
  if (!saved_bytes) {
    (void)b.tracee.detach(0);
    return saved_bytes.status().with_context("saving the stack of thread " + std::to_string(b.tracee.tid()));
  }

  std::vector<HeldSignal> held;
  const Clock::time_point deadline = Clock::now() + options.call_timeout;
  Result<std::uintptr_t> result = Status(Code::kInternal, "not called");
  Status wrote = memory.write(path_at, library_path.c_str(), library_path.size() + 1);
  if (!wrote.is_ok()) {
    result = wrote;
  } else {
    result = call_function(b, memory, api.open, path_at, static_cast<std::uintptr_t>(api.mode), path_at,
                           deadline, held);
    if (result && *result == 0) {
      std::string message = "(no dlerror available)";
      if (api.error != 0) {
        Result<std::uintptr_t> text = call_function(b, memory, api.error, 0, 0, path_at, deadline, held);
        if (text && *text != 0) {
          Result<std::string> s = memory.read_c_string(*text, kMaxErrorLength);
          if (s) message = *s;
        }
      }
      result = Status(Code::kInternal, api.description + " failed in the target: " + message);
    }
  }
  Status restored = restore(b, memory, region, *saved_bytes, held);
  if (!restored.is_ok()) {
    return restored.with_context("putting thread " + std::to_string(b.tracee.tid()) +
                                 " back (THE TARGET MAY CRASH)");
  }
  return result;
}

}  // namespace

Status check_injectable(pid_t pid, const std::string& library_path) {
  if (pid <= 0) return Status(Code::kInvalidArgument, "invalid pid " + std::to_string(pid));
  if (pid == ::getpid()) return Status(Code::kInvalidArgument, "cannot inject into this very process");
  if (library_path.empty() || library_path[0] != '/') {
    return Status(Code::kInvalidArgument, "library path must be absolute: \"" + library_path + "\"");
  }
  if (library_path.size() > kMaxPathLength || library_path.find('\0') != std::string::npos) {
    return Status(Code::kInvalidArgument, "library path is too long or contains NUL");
  }
  Result<ProcStatus> st = read_proc_status(pid);
  if (!st) return st.status();
  const std::string who = process_text(pid);
  if (st->state == 'Z' || st->state == 'X') return Status(Code::kUnavailable, who + " is a zombie");
  if (st->tracer != 0 && st->tracer != ::getpid()) {
    return Status(Code::kUnavailable, who + " is already traced by pid " + std::to_string(st->tracer) +
                                          " (a debugger?); detach it first");
  }
  if (st->state == 'T' || st->state == 't') {
    return Status(Code::kUnavailable, who + " is stopped; resume it first (kill -CONT " +
                                          std::to_string(pid) + ")");
  }
  const std::string seen = "/proc/" + std::to_string(pid) + "/root" + library_path;
  if (::access(seen.c_str(), R_OK) != 0 && errno == ENOENT) {
    return Status(Code::kNotFound, library_path + " does not exist in the filesystem of " + who +
                                       " (looked at " + seen + ")");
  }
  return Status::ok();
}

Result<InjectReport> inject_library(pid_t pid, const std::string& library_path,
                                    const InjectOptions& options) {
  PROBING_RETURN_IF_ERROR(check_injectable(pid, library_path));
  const std::string context = "injecting " + library_path + " into " + process_text(pid);
  Result<std::vector<Mapping>> maps = read_maps(pid);
  if (!maps) return maps.status().with_context(context);
  Result<LoaderApi> api = find_loader_api(pid, *maps);
  if (!api) return api.status().with_context(context);

  Result<RemoteMemory> memory = RemoteMemory::open(pid);
  if (!memory) return memory.status().with_context(context);

  CriticalSection critical;
  const Clock::time_point deadline = Clock::now() + options.deadline;
  InjectReport report;
  Reasons reasons;                       // the latest word on each thread not borrowed
  std::map<pid_t, int> examined;         // threads stopped so far, and how often
  std::map<pid_t, SyscallHint> refused;  // blocked threads found unsafe, where they were blocked
  auto pause = std::chrono::milliseconds(1);
  // Bounded by the deadline: each round stops at most kProbesPerRound threads.
  for (int round = 0;; ++round) {
    if (round > 0) {
      maps = read_maps(pid);
      if (!maps) return maps.status().with_context(context);
    }
    Result<std::vector<pid_t>> tids = list_threads(pid);
    if (!tids) return tids.status().with_context(context);
    std::vector<Candidate> candidates = rank_threads(pid, *tids, *maps, options.stacks != nullptr, reasons);
    // Within a tier, the threads looked at least so far first: every thread gets its turn.
    std::stable_sort(candidates.begin(), candidates.end(), [&](const Candidate& a, const Candidate& b) {
      return a.tier != b.tier ? a.tier < b.tier : examined[a.tid] < examined[b.tid];
    });
    int probes = 0;
    int running_probes = 0;
    for (const Candidate& c : candidates) {
      if (probes >= kProbesPerRound || Clock::now() >= deadline) break;
      // Still in the very wait it was refused in: its stack has not changed, nor the answer.
      if (const auto r = refused.find(c.tid); r != refused.end() && c.tier != Tier::kRunning &&
                                              r->second.nr == c.hint.nr && r->second.sp == c.hint.sp &&
                                              r->second.pc == c.hint.pc) {
        continue;
      }
      if (c.tier == Tier::kRunning && running_probes++ >= kRunningProbesPerRound) break;
      ++probes;
      ++report.attempts;
      ++examined[c.tid];
      std::string reason;
      bool settled = false;
      Result<std::optional<Borrowed>> b =
          try_thread(pid, c, *maps, *memory, options.stacks, deadline, reason, settled);
      if (!b) return b.status().with_context(context);
      if (!b->has_value()) {
        reasons[c.tid] = reason;
        if (settled) refused[c.tid] = c.hint;
        continue;
      }
      Borrowed& borrowed = **b;
      Result<std::uintptr_t> handle = borrow_and_call(borrowed, *memory, *api, library_path, options);
      if (!handle) return handle.status().with_context(context + " (" + borrowed.how + ")");
      report.tid = c.tid;
      report.handle = *handle;
      report.how = borrowed.how;
      return report;
    }
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::min<Clock::duration>(pause, deadline - Clock::now()));
    pause = std::min(pause * 2, std::chrono::milliseconds(20));
  }
  return Status(Code::kTimeout, context + ": no thread was safe to borrow within " +
                                    std::to_string(options.deadline.count()) + " ms (" +
                                    std::to_string(report.attempts) +
                                    " examined); the target was not changed." + reasons_text(pid, reasons));
}

}  // namespace probing::inject
