// One thread of another process under ptrace (internal to inject).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>

#include "core/status.h"

namespace probing::inspect {

using Clock = std::chrono::steady_clock;

// What a wait on the tracee saw.
struct Stop {
  enum class Kind {
    kSignal,  // signal-delivery-stop: `signal` is about to be delivered
    kEvent,   // PTRACE_EVENT_STOP: the interrupt we asked for (SIGTRAP) or a group-stop
    kGone,    // the thread exited or was killed
  };
  Kind kind = Kind::kGone;
  int signal = 0;
};

// A thread seized with PTRACE_SEIZE: attached without being stopped, so nothing in the target
// changes until interrupt(). Only this thread is traced; its siblings keep running.
// Not thread-safe; every call must come from the thread that called seize() (ptrace's rule).
// The destructor detaches (best effort) a tracee still attached, so an error path cannot leave
// the target traced; it does not restore registers: that is the owner's job.
class Tracee {
 public:
  // kPermissionDenied (with the reasons and docs/attach.md), kNotFound when the thread is gone,
  // kUnavailable when another tracer holds it.
  static Result<Tracee> seize(pid_t pid, pid_t tid);

  Tracee(Tracee&& other) noexcept;
  Tracee& operator=(Tracee&&) = delete;
  Tracee(const Tracee&) = delete;
  ~Tracee();

  pid_t tid() const { return tid_; }
  pid_t pid() const { return pid_; }
  bool stopped() const { return stopped_; }
  bool gone() const { return gone_; }
  // Stopped in a signal-delivery-stop (where detach(signal) delivers `signal`).
  bool at_signal_stop() const { return stopped_ && signal_stop_; }

  // Asks for an interrupt stop and waits for it until `deadline`. Signals that arrive first are
  // delivered on (passed to PTRACE_CONT), never dropped. kUnavailable for a group-stop
  // (the process is being stopped by SIGSTOP/SIGTSTP) or when the thread exits; kTimeout when
  // it does not stop in time (a thread in uninterruptible sleep), in which case it stays
  // seized and the destructor tries again.
  Status interrupt(Clock::time_point deadline);

  // Waits for the next stop of a running tracee. kTimeout when `deadline` passes first.
  Result<Stop> wait(Clock::time_point deadline);

  // Resumes a stopped tracee, delivering `signal` (0: none).
  Status resume(int signal);

  // siginfo of the current signal-delivery-stop, and its replacement.
  Result<siginfo_t> siginfo();
  Status set_siginfo(const siginfo_t& info);

  // Detaches a stopped tracee, delivering `signal` if the stop is a signal-delivery-stop.
  Status detach(int signal);

 private:
  Tracee(pid_t pid, pid_t tid) : pid_(pid), tid_(tid) {}

  pid_t pid_;
  pid_t tid_;
  bool attached_ = true;
  bool stopped_ = false;
  bool gone_ = false;
  bool signal_stop_ = false;
};

}  // namespace probing::inspect
