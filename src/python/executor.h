// PythonExecutor runs work that needs the GIL on agent threads, so that the thread asking never
// waits on the GIL itself: it waits on the work with a deadline, and is told why when the
// deadline passes (the GIL is held elsewhere, every worker is busy, or the work ran too long and
// was interrupted). A worker stuck waiting for the GIL stays stuck, and drops its work when it
// finally gets the GIL. Thread-safe.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "core/status.h"
#include "python/capi.h"

namespace probing::python {

// How run_on_main_thread's kUnavailable begins when the main thread did not take the work in time.
inline constexpr const char* kMainThreadIdle = "the main thread ran no Python code";

class PythonExecutor {
 public:
  using Clock = std::chrono::steady_clock;
  // Runs with the GIL held on a worker thread. May run Python code (which releases the GIL now
  // and then); must not block otherwise. Exceptions are caught and reported.
  using Work = std::function<void(const CApi&)>;
  // Gives the exception type to raise in work that ran past its deadline. Called with the GIL
  // held; returns a borrowed reference, or nullptr for none. Must not run Python code: the worker
  // holds the GIL while it finishes, and may be between bytecodes of the very import it would wait on.
  using InterruptType = std::function<PyObject*(const CApi&)>;

  struct Limits {
    Clock::duration gil_timeout;  // to start running
    Clock::duration run_timeout;  // to finish once running
    Clock::duration grace;        // to stop after the interrupt was sent
  };
  // Limits from seconds.
  static Limits make_limits(double gil_timeout_s, double run_timeout_s, double grace_s = 1.0);

  PythonExecutor(const CApi& api, int max_workers, int max_queued);

  // Runs `work` and waits for it. ok when it finished, also when it ran past run_timeout, was
  // interrupted and stopped within the grace period (then *interrupted is set). kTimeout when it
  // could not start in time (the message says why) or did not stop after the interrupt;
  // kUnavailable when the queue is full; kInternal when the work could not run or threw.
  // A non-empty `tag` names the work for interrupt_tagged() while this call waits on it (tags
  // are chosen by clients; a second run with the same tag replaces the first in that registry).
  Status run(Work work, const Limits& limits, const InterruptType& interrupt_type,
             bool* interrupted = nullptr, const std::string& tag = {});

  // Raises the exception `type` gives, asynchronously, in the work started with `tag`, if it is
  // still running when the GIL is had (taken on a thread of its own: this never waits on the
  // GIL). ok when the interrupt was sent; kNotFound when no work with that tag is waiting on
  // run(); kUnavailable when it has not started running yet. Thread-safe.
  // `*thread`, when given, is set to the kernel thread id of the worker running it.
  Status interrupt_tagged(const std::string& tag, const InterruptType& type, pid_t* thread = nullptr);

  // Runs `work` on the program's main thread, between two of its bytecodes, from a pending call
  // (add_pending_call_to_main), and waits for it: for work that must not overlap what the main
  // thread does in C with the GIL let go (a PyTorch operation changes tensors so). The work must
  // run no Python bytecode: a signal handler of the program would run inside it and its exception
  // would be lost. Nothing interrupts it, so it keeps its own time. kUnavailable when the main
  // thread ran no bytecode within limits.gil_timeout (it waits in a C call, or has finished): the
  // work is then never run; kTimeout when it has not finished within limits.run_timeout (it goes
  // on; nothing of it comes back). kInternal when it threw.
  Status run_on_main_thread(Work work, const Limits& limits);

  int max_workers() const { return max_workers_; }

 private:
  struct Job;
  void worker_loop() noexcept(false);  // not noexcept: see the .cpp on thread exit
  void execute(Job& job);
  static void interrupt(const CApi& api, std::shared_ptr<Job> job, InterruptType type);
  void spawn_interrupt(const std::shared_ptr<Job>& job, const InterruptType& type);
  void ask_main_thread_to_step_aside();
  static void absorb_interrupt(const CApi& api);
  static int step_aside(void* executor);     // a pending call: runs on the main thread, with the GIL
  static int run_main_jobs(void* executor);  // the same, for run_on_main_thread
  bool queue_main_call();                    // false when CPython's queue is full

  const CApi& api_;
  const int max_workers_;
  const int max_queued_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  int workers_ = 0;
  int idle_ = 0;
  std::atomic<int> gil_waiters_{0};  // workers inside PyGILState_Ensure now
  std::atomic<bool> step_aside_pending_{false};
  std::map<std::string, std::weak_ptr<Job>> tagged_;  // guarded by mu_
  // run_on_main_thread's jobs, and whether a pending call that runs them is queued: one call
  // serves them all, so that a main thread blocked for hours never has more than one of the
  // agent's calls in CPython's queue (which holds 32).
  std::deque<std::shared_ptr<Job>> main_jobs_;  // guarded by mu_
  std::atomic<bool> main_call_queued_{false};
};

}  // namespace probing::python
