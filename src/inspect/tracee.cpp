#include "inspect/tracee.h"

#include <sys/ptrace.h>
#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <thread>

#include "inspect/process.h"

namespace probing::inspect {
namespace {

std::string thread_text(pid_t tid) { return "thread " + std::to_string(tid); }

bool is_stop_signal(int sig) {
  return sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU;
}

}  // namespace

Result<Tracee> Tracee::seize(pid_t pid, pid_t tid) {
  if (::ptrace(PTRACE_SEIZE, tid, nullptr, nullptr) == 0) return Tracee(pid, tid);
  const int err = errno;
  const std::string what = "ptrace(PTRACE_SEIZE, " + thread_text(tid) + " of process " + std::to_string(pid) + ")";
  if (err == ESRCH) return Status(Code::kNotFound, what + ": the thread is gone");
  if (err == EPERM) {
    // Another tracer is the likeliest reason when we are otherwise allowed.
    Result<ProcStatus> st = read_proc_status(pid, tid);
    if (st && st->tracer != 0) {
      return Status(Code::kUnavailable, "process " + std::to_string(pid) + " is already traced by pid " +
                                            std::to_string(st->tracer) + " (a debugger?); detach it first");
    }
    return ptrace_denied(pid, what);
  }
  return errno_status(what, err);
}

Tracee::Tracee(Tracee&& other) noexcept
    : pid_(other.pid_), tid_(other.tid_), attached_(other.attached_), stopped_(other.stopped_),
      gone_(other.gone_), signal_stop_(other.signal_stop_) {
  other.attached_ = false;
}

Tracee::~Tracee() {
  if (!attached_ || gone_) return;
  if (!stopped_) {
    // PTRACE_DETACH needs a stopped tracee; ask for a stop and give it a moment.
    if (!interrupt(Clock::now() + std::chrono::milliseconds(500)).is_ok()) return;
  }
  (void)detach(0);
}

Status Tracee::interrupt(Clock::time_point deadline) {
  if (::ptrace(PTRACE_INTERRUPT, tid_, nullptr, nullptr) != 0) {
    const int err = errno;
    if (err == ESRCH) gone_ = true;
    return errno_status("ptrace(PTRACE_INTERRUPT, " + thread_text(tid_) + ")", err);
  }
  // Bounded by the deadline; each pass either returns or consumes one stop.
  for (;;) {
    Result<Stop> stop = wait(deadline);
    if (!stop) return stop.status();
    switch (stop->kind) {
      case Stop::Kind::kGone:
        return Status(Code::kUnavailable, thread_text(tid_) + " exited");
      case Stop::Kind::kEvent:
        if (stop->signal == SIGTRAP) return Status::ok();
        if (is_stop_signal(stop->signal)) {
          return Status(Code::kUnavailable, "process " + std::to_string(pid_) +
                                                " is being stopped (group-stop by signal " +
                                                std::to_string(stop->signal) + ")");
        }
        PROBING_RETURN_IF_ERROR(resume(0));
        break;
      case Stop::Kind::kSignal:
        // A signal won the race against our interrupt: let the thread have it.
        PROBING_RETURN_IF_ERROR(resume(stop->signal));
        break;
    }
  }
}

Result<Stop> Tracee::wait(Clock::time_point deadline) {
  // waitpid has no timeout: poll, backing off from 20 us to 1 ms (a stop usually comes within
  // microseconds; dlopen takes milliseconds).
  auto pause = std::chrono::microseconds(20);
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(tid_, &status, __WALL | WNOHANG);
    if (r < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      if (err == ECHILD) {
        gone_ = true;
        return Stop{Stop::Kind::kGone, 0};
      }
      return errno_status("waitpid(" + thread_text(tid_) + ")", err);
    }
    if (r == tid_) {
      if (WIFEXITED(status) || WIFSIGNALED(status)) {
        gone_ = true;
        stopped_ = false;
        return Stop{Stop::Kind::kGone, WIFSIGNALED(status) ? WTERMSIG(status) : 0};
      }
      if (WIFSTOPPED(status)) {
        stopped_ = true;
        const int event = status >> 16;
        signal_stop_ = event == 0;
        if (event == PTRACE_EVENT_STOP) return Stop{Stop::Kind::kEvent, WSTOPSIG(status)};
        if (event != 0) return Stop{Stop::Kind::kEvent, SIGTRAP};  // other events: not requested
        return Stop{Stop::Kind::kSignal, WSTOPSIG(status)};
      }
      continue;  // WIFCONTINUED: not a stop
    }
    if (Clock::now() >= deadline) {
      return Status(Code::kTimeout, thread_text(tid_) + " did not stop in time");
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
}

Status Tracee::resume(int signal) {
  if (::ptrace(PTRACE_CONT, tid_, nullptr, reinterpret_cast<void*>(static_cast<long>(signal))) != 0) {
    const int err = errno;
    if (err == ESRCH) gone_ = true;
    return errno_status("ptrace(PTRACE_CONT, " + thread_text(tid_) + ")", err);
  }
  stopped_ = false;
  return Status::ok();
}

Result<siginfo_t> Tracee::siginfo() {
  siginfo_t info{};
  if (::ptrace(PTRACE_GETSIGINFO, tid_, nullptr, &info) != 0) {
    return errno_status("ptrace(PTRACE_GETSIGINFO, " + thread_text(tid_) + ")");
  }
  return info;
}

Status Tracee::set_siginfo(const siginfo_t& info) {
  siginfo_t copy = info;
  if (::ptrace(PTRACE_SETSIGINFO, tid_, nullptr, &copy) != 0) {
    return errno_status("ptrace(PTRACE_SETSIGINFO, " + thread_text(tid_) + ")");
  }
  return Status::ok();
}

Status Tracee::detach(int signal) {
  if (::ptrace(PTRACE_DETACH, tid_, nullptr, reinterpret_cast<void*>(static_cast<long>(signal))) != 0) {
    const int err = errno;
    if (err == ESRCH && !stopped_) {
      return Status(Code::kInternal, "detaching " + thread_text(tid_) + ": it is not stopped");
    }
    if (err == ESRCH) gone_ = true;
    return errno_status("ptrace(PTRACE_DETACH, " + thread_text(tid_) + ")", err);
  }
  attached_ = false;
  stopped_ = false;
  return Status::ok();
}

}  // namespace probing::inspect
