#include "python/executor.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <system_error>
#include <thread>

#include "core/log.h"
#include "python/gil_free.h"

// A forced unwind (pthread_exit) carries no exception object, so UBSan reports the binding of
// `catch (abi::__forced_unwind&)` as a reference to null; that catch is glibc's documented way to
// let the unwind pass, so the check is off in the three functions that use it.
#define PROBING_CATCHES_FORCED_UNWIND __attribute__((no_sanitize("null")))

namespace probing::python {
namespace {

// CPython before 3.14 ends a thread that takes the GIL after finalization has begun with
// pthread_exit. When that thread is inside a C++ destructor at the time (torch's
// gil_scoped_release, which takes the GIL back as a tensor operation returns), the forced unwind
// meets a noexcept frame and the C++ runtime calls std::terminate: the host would abort on its
// way out, because an eval was running a tensor operation when the program ended. Such a thread
// of the agent's is parked for good instead, as CPython 3.14 parks these threads itself; exit
// ends it. Every other std::terminate goes to the handler installed before this one.
//
// The handler goes into two C++ runtimes where there are two: the agent's own (static, hidden),
// whose noexcept frames are the agent's, and the host's shared libstdc++, whose noexcept frames
// are torch's. The host's may be loaded after the agent starts (`import torch`), so it is looked
// for again before each job until found.
thread_local bool t_agent_python_thread = false;
const CApi* g_terminate_api = nullptr;
std::terminate_handler g_previous_terminate = nullptr;       // the agent's runtime's
std::terminate_handler g_previous_host_terminate = nullptr;  // the host's libstdc++'s
std::atomic<bool> g_host_runtime_done{false};

[[noreturn]] void park_agent_thread_or(std::terminate_handler previous) {
  if (t_agent_python_thread && g_terminate_api != nullptr && g_terminate_api->is_finalizing()) {
    sigset_t all;
    ::sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, nullptr);  // the host's signals go to its own threads
    for (;;) ::pause();
  }
  if (previous != nullptr) previous();
  std::abort();
}
[[noreturn]] void park_agent_thread_or_terminate() { park_agent_thread_or(g_previous_terminate); }
[[noreturn]] void park_agent_thread_or_host_terminate() { park_agent_thread_or(g_previous_host_terminate); }

// Installs the handler in the host's libstdc++ once it is loaded, unless that is the agent's own
// runtime (a build with the shared one). Called without the GIL: dlopen takes the loader's lock.
void install_in_host_runtime() {
  if (g_host_runtime_done.load(std::memory_order_acquire)) return;
  static auto& mu = *new std::mutex;  // never destroyed: agent threads may be here while the host exits
  std::lock_guard<std::mutex> lock(mu);
  if (g_host_runtime_done.load(std::memory_order_relaxed)) return;
  // RTLD_NOLOAD: only a libstdc++ already loaded, which torch's loads with RTLD_LOCAL (so not
  // through RTLD_DEFAULT). The handle is kept: the library stays loaded for as long as the host.
  void* lib = ::dlopen("libstdc++.so.6", RTLD_LAZY | RTLD_NOLOAD);
  if (lib == nullptr) return;  // no libstdc++ in the host yet
  using SetTerminate = std::terminate_handler (*)(std::terminate_handler) noexcept;
  auto host = reinterpret_cast<SetTerminate>(::dlsym(lib, "_ZSt13set_terminatePFvvE"));
  if (host == nullptr) return;
  if (host != static_cast<SetTerminate>(&std::set_terminate))
    g_previous_host_terminate = host(park_agent_thread_or_host_terminate);
  g_host_runtime_done.store(true, std::memory_order_release);
}

// Marks the calling thread as one the handler may park, installing the handler once.
void mark_agent_python_thread(const CApi& api) {
  static std::once_flag once;
  std::call_once(once, [&api] {
    g_terminate_api = &api;
    g_previous_terminate = std::set_terminate(park_agent_thread_or_terminate);
  });
  t_agent_python_thread = true;
}

}  // namespace

struct PythonExecutor::Job {
  enum class State { kQueued, kWaitingGil, kRunning, kDone, kCancelled };
  Work work;
  std::mutex mu;
  std::condition_variable cv;
  State state = State::kQueued;  // kQueued->kRunning and kRunning->kDone happen under the GIL
  unsigned long thread_ident = 0;
  pid_t native_thread = 0;  // the worker's kernel thread id, set with thread_ident
  std::string failure;      // set when the work could not run or threw
  std::atomic<bool> interrupt_pending{false};
  bool interrupt_sent = false;  // an exception was set in the worker (under mu, with the GIL)
};

PythonExecutor::Limits PythonExecutor::make_limits(double gil_timeout_s, double run_timeout_s,
                                                   double grace_s) {
  // Clamped to [0, 1e6] s: a larger client-given timeout would overflow the clock's nanoseconds.
  auto seconds = [](double s) {
    s = std::clamp(s, 0.0, 1e6);
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };
  return {seconds(gil_timeout_s), seconds(run_timeout_s), seconds(grace_s)};
}

PythonExecutor::PythonExecutor(const CApi& api, int max_workers, int max_queued)
    : api_(api), max_workers_(max_workers < 1 ? 1 : max_workers), max_queued_(max_queued) {}

Status PythonExecutor::run(Work work, const Limits& limits, const InterruptType& interrupt_type,
                           bool* interrupted, const std::string& tag) {
  if (interrupted != nullptr) *interrupted = false;
  auto job = std::make_shared<Job>();
  job->work = std::move(work);
  int busy_workers = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (static_cast<int>(queue_.size()) >= max_queued_) {
      return {Code::kUnavailable, "too many Python requests are waiting (" + std::to_string(queue_.size()) +
                                      "); try again later"};
    }
    // Enough workers for every queued job, up to the cap (an idle worker may not have woken yet).
    if (static_cast<int>(queue_.size()) >= idle_ && workers_ < max_workers_) {
      try {
        std::thread([this] { worker_loop(); }).detach();
        ++workers_;
      } catch (const std::system_error& e) {
        if (workers_ == 0)
          return {Code::kUnavailable, std::string("cannot start a Python worker: ") + e.what()};
      }
    }
    queue_.push_back(job);
    if (!tag.empty()) tagged_[tag] = job;
    busy_workers = workers_ - idle_;
  }
  cv_.notify_one();
  // The tag names the job only while this call waits on it.
  struct Untag {
    PythonExecutor* self;
    const std::string& tag;
    const std::shared_ptr<Job>& job;
    ~Untag() {
      if (tag.empty()) return;
      std::lock_guard<std::mutex> lock(self->mu_);
      auto it = self->tagged_.find(tag);
      if (it != self->tagged_.end() && it->second.lock() == job) self->tagged_.erase(it);
    }
  } untag{this, tag, job};

  std::unique_lock<std::mutex> lock(job->mu);
  auto started = [&] { return job->state != Job::State::kQueued && job->state != Job::State::kWaitingGil; };
  // CPython asks the GIL's holder to let go only when a waiter has seen no switch at all for 5 ms;
  // a thread that lets it go and takes it straight back every millisecond (an asyncio loop that
  // polls between tasks, a loop of small C calls) makes every such wait see a switch, and starves
  // the waiter. Past kStepAsideAfter, a pending call has the main thread step aside once.
  constexpr auto kStepAsideAfter = std::chrono::milliseconds(20);
  const Clock::time_point gil_deadline = Clock::now() + limits.gil_timeout;
  bool began = job->cv.wait_until(lock, std::min(gil_deadline, Clock::now() + kStepAsideAfter), started);
  while (!began && Clock::now() < gil_deadline) {
    if (job->state == Job::State::kWaitingGil) ask_main_thread_to_step_aside();
    began = job->cv.wait_until(lock, std::min(gil_deadline, Clock::now() + kStepAsideAfter), started);
  }
  if (!began) {
    bool waited_for_gil = job->state == Job::State::kWaitingGil;
    job->state = Job::State::kCancelled;
    double s = std::chrono::duration<double>(limits.gil_timeout).count();
    char secs[32];
    std::snprintf(secs, sizeof secs, "%.3g", s);
    // Queued behind workers that themselves wait for the GIL is waiting for the GIL too: say who
    // holds it, not that earlier requests are to blame.
    const int stuck = gil_waiters_.load();
    if (waited_for_gil || stuck > 0) {
      std::string holder = describe_gil_holder();  // memory reads only; never waits
      std::string also = !waited_for_gil ? " (" + std::to_string(stuck) + " earlier request" +
                                               (stuck == 1 ? " waits" : "s wait") + " for it too)"
                                         : "";
      return {Code::kTimeout, std::string("the GIL was not released within ") + secs +
                                  " s: " + (holder.empty() ? std::string("another thread") : holder) +
                                  " holds it" + also + " (see `probing PID backtrace --all`)"};
    }
    return {Code::kTimeout, std::string("not started within ") + secs + " s: all " +
                                std::to_string(busy_workers) +
                                " Python workers are busy with earlier requests"};
  }
  auto finished = [&] { return job->state == Job::State::kDone; };
  // Running, the work lets the GIL go too (each read of an import, say) and starves the same way
  // when it wants it back.
  const Clock::time_point run_deadline = Clock::now() + limits.run_timeout;
  bool done = job->cv.wait_until(lock, std::min(run_deadline, Clock::now() + kStepAsideAfter), finished);
  while (!done && Clock::now() < run_deadline) {
    ask_main_thread_to_step_aside();
    done = job->cv.wait_until(lock, std::min(run_deadline, Clock::now() + kStepAsideAfter), finished);
  }
  if (!done) {
    lock.unlock();
    spawn_interrupt(job, interrupt_type);
    lock.lock();
    double s = std::chrono::duration<double>(limits.run_timeout).count();
    char secs[32];
    std::snprintf(secs, sizeof secs, "%.3g", s);
    if (job->cv.wait_for(lock, limits.grace, finished)) {
      if (interrupted != nullptr) *interrupted = true;
      if (!job->failure.empty()) return {Code::kInternal, job->failure};
      return {};
    }
    return {Code::kTimeout, std::string("ran past its timeout of ") + secs +
                                " s; it is still running and will be interrupted when it next "
                                "runs Python code"};
  }
  if (!job->failure.empty()) return {Code::kInternal, job->failure};
  return {};
}

Status PythonExecutor::interrupt_tagged(const std::string& tag, const InterruptType& type, pid_t* thread) {
  std::shared_ptr<Job> job;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tagged_.find(tag);
    if (it != tagged_.end()) job = it->second.lock();
  }
  if (!job) return {Code::kNotFound, "no Python request '" + tag + "' is running"};
  {
    std::lock_guard<std::mutex> lock(job->mu);
    if (job->state == Job::State::kDone)
      return {Code::kNotFound, "Python request '" + tag + "' has finished"};
    if (job->state != Job::State::kRunning) {
      return {Code::kUnavailable, "Python request '" + tag + "' has not started running yet"};
    }
    if (thread != nullptr) *thread = job->native_thread;
  }
  // interrupt() re-checks kRunning with the GIL held, so it cannot hit later work.
  spawn_interrupt(job, type);
  return {};
}

// Evaluates `None`, so that an interrupt still pending in this thread is raised there (which takes
// it off the eval breaker) and dropped.
void PythonExecutor::absorb_interrupt(const CApi& api) {
  PyObject* globals = api.PyDict_New();
  if (globals != nullptr) {
    PyObject* r = api.PyRun_StringFlags("None", kPyEvalInput, globals, globals, nullptr);
    if (r != nullptr) api.Py_DecRef(r);
    api.Py_DecRef(globals);
  }
  if (api.PyErr_Occurred() != nullptr) api.PyErr_Clear();
}

void PythonExecutor::ask_main_thread_to_step_aside() {
  if (step_aside_pending_.exchange(true)) return;
  if (api_.is_finalizing() || add_pending_call_to_main(api_, &PythonExecutor::step_aside, this) != 0) {
    step_aside_pending_.store(false);  // the queue is full (or no safe way): try again next round
  }
}

// The main thread, between two bytecodes, lets the GIL go until another thread takes it (a
// millisecond at most), then waits its turn to take it back as any thread does: what an I/O call
// does. Asked at most every kStepAsideAfter while agent work waits or runs, so the main thread
// gives up at most a twentieth of its time, where two threads that both want the GIL share it.
int PythonExecutor::step_aside(void* executor) {
  auto* self = static_cast<PythonExecutor*>(executor);
  self->step_aside_pending_.store(false);
  const Result<layout::InterpreterReader>& reader = this_interpreter();
  void* tstate = self->api_.PyEval_SaveThread();
  const auto until = Clock::now() + std::chrono::milliseconds(1);
  while (Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
    if (reader.is_ok() && reader->gil().locked) break;  // taken
  }
  self->api_.PyEval_RestoreThread(tstate);
  return 0;
}

Status PythonExecutor::run_on_main_thread(Work work, const Limits& limits) {
  const Clock::duration start_timeout = limits.gil_timeout, run_timeout = limits.run_timeout;
  auto job = std::make_shared<Job>();
  job->work = std::move(work);
  const Clock::time_point start_deadline = Clock::now() + start_timeout;
  auto seconds = [](Clock::duration d) {
    char text[32];
    std::snprintf(text, sizeof text, "%.3g", std::chrono::duration<double>(d).count());
    return std::string(text);
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Jobs whose callers gave up on a main thread that has not run since are dropped, not kept.
    std::erase_if(main_jobs_, [](const std::shared_ptr<Job>& j) {
      std::lock_guard<std::mutex> job_lock(j->mu);
      return j->state == Job::State::kCancelled;
    });
    main_jobs_.push_back(job);
  }
  // Until the job starts, a call that runs the queued jobs is kept queued: a caller whose queuing
  // failed may have cleared the flag after this one saw it set. Queued outside mu_ and job->mu:
  // CPython's pending-call lock is never taken under the agent's.
  std::unique_lock<std::mutex> lock(job->mu);
  auto started = [&] { return job->state != Job::State::kQueued; };
  bool queue_full = false;
  while (!started()) {
    if (Clock::now() >= start_deadline) {
      job->state = Job::State::kCancelled;
      if (queue_full) {
        return {Code::kUnavailable, "no call could be queued for the main thread within " +
                                        seconds(start_timeout) +
                                        " s (CPython's queue of pending calls stayed full)"};
      }
      return {Code::kUnavailable, std::string(kMainThreadIdle) + " for " + seconds(start_timeout) +
                                      " s: it waits in a C call (a PyTorch operation, a collective, I/O, "
                                      "a lock) or has finished (see `probing PID backtrace`)"};
    }
    lock.unlock();
    queue_full = !queue_main_call();
    lock.lock();
    job->cv.wait_until(lock, std::min(start_deadline, Clock::now() + std::chrono::milliseconds(20)), started);
  }
  if (!job->cv.wait_until(lock, Clock::now() + run_timeout,
                          [&] { return job->state == Job::State::kDone; })) {
    return {Code::kTimeout, "still running on the main thread after " + seconds(run_timeout) + " s"};
  }
  if (!job->failure.empty()) return {Code::kInternal, job->failure};
  return {};
}

bool PythonExecutor::queue_main_call() {
  if (main_call_queued_.load() || main_call_queued_.exchange(true)) return true;
  if (!api_.is_finalizing() && add_pending_call_to_main(api_, &PythonExecutor::run_main_jobs, this) == 0) {
    return true;
  }
  main_call_queued_.store(false);  // CPython's queue is full, or there is no safe way
  return false;
}

// Runs every job queued for the main thread (on it, between two bytecodes, with the GIL). Nothing
// it does reaches the program: the call returns 0, with the thread's error indicator as it found it.
int PythonExecutor::run_main_jobs(void* executor) {
  auto* self = static_cast<PythonExecutor*>(executor);
  const CApi& api = self->api_;
  self->main_call_queued_.store(false);  // before taking the jobs: one queued after is seen, or gets a call
  std::deque<std::shared_ptr<Job>> jobs;
  {
    std::lock_guard<std::mutex> lock(self->mu_);
    jobs.swap(self->main_jobs_);
  }
  for (const std::shared_ptr<Job>& job : jobs) {
    {
      std::lock_guard<std::mutex> lock(job->mu);
      if (job->state != Job::State::kQueued) continue;  // its caller gave up
      job->state = Job::State::kRunning;
    }
    job->cv.notify_all();
    std::string failure;
    PyObject *type = nullptr, *value = nullptr, *traceback = nullptr;
    api.PyErr_Fetch(&type, &value, &traceback);
    if (api.is_finalizing()) {
      failure = "the Python interpreter is shutting down";
    } else {
      try {
        job->work(api);
      } catch (const std::exception& e) {
        failure = e.what();
      } catch (...) {
        failure = "unknown exception";
      }
    }
    if (api.PyErr_Occurred() != nullptr) api.PyErr_Clear();
    api.PyErr_Restore(type, value, traceback);
    {
      std::lock_guard<std::mutex> lock(job->mu);
      job->failure = std::move(failure);
      job->state = Job::State::kDone;
    }
    job->cv.notify_all();
  }
  return 0;
}

// At most one interrupting thread per job: a job stuck in C code holding the GIL would otherwise
// collect one blocked thread per Ctrl-C.
void PythonExecutor::spawn_interrupt(const std::shared_ptr<Job>& job, const InterruptType& type) {
  if (job->interrupt_pending.exchange(true)) return;
  try {
    std::thread(interrupt, std::cref(api_), job, type).detach();
  } catch (const std::system_error& e) {
    job->interrupt_pending.store(false);
    log_warn(std::string("cannot start a thread to interrupt a Python request: ") + e.what());
  }
}

// Raises the interrupt in the job's thread if, with the GIL held, the job is still running: the
// job's kRunning->kDone transition also happens under the GIL, so this can never hit later work.
PROBING_CATCHES_FORCED_UNWIND void PythonExecutor::interrupt(const CApi& api, std::shared_ptr<Job> job,
                                                             InterruptType type) {
  try {
    ::pthread_setname_np(::pthread_self(), "probing-intr");
    mark_agent_python_thread(api);
    if (api.is_finalizing()) return;
    PyGILStateState gil = api.PyGILState_Ensure();
    // Before the job's lock: the worker finishing the job holds the GIL and takes that lock, so
    // nothing may let the GIL go while it is held.
    PyObject* exc = type ? type(api) : nullptr;
    {
      std::lock_guard<std::mutex> lock(job->mu);
      if (job->state == Job::State::kRunning && exc != nullptr) {
        api.PyThreadState_SetAsyncExc(job->thread_ident, exc);
        job->interrupt_sent = true;
      }
    }
    api.PyGILState_Release(gil);
    job->interrupt_pending.store(false);
  } catch (abi::__forced_unwind&) {
    throw;  // the interpreter ends threads that want the GIL after finalization
  } catch (...) {
    log_warn("interrupting a Python request failed");
  }
}

PROBING_CATCHES_FORCED_UNWIND void PythonExecutor::execute(Job& job) {
  {
    std::lock_guard<std::mutex> lock(job.mu);
    if (job.state == Job::State::kCancelled) return;
    job.state = Job::State::kWaitingGil;
  }
  // Before the check below, so that nothing stands between it and PyGILState_Ensure: dlopen may
  // wait for the loader's lock, and Ensure once the interpreter has finished finalizing is fatal.
  install_in_host_runtime();
  if (api_.is_finalizing()) {
    std::lock_guard<std::mutex> lock(job.mu);
    job.failure = "the Python interpreter is shutting down";
    job.state = Job::State::kDone;
    job.cv.notify_all();
    return;
  }
  PyGILStateState gil;
  {
    struct Waiting {  // a destructor, so that CPython's pthread_exit in Ensure counts it out too
      std::atomic<int>& n;
      explicit Waiting(std::atomic<int>& count) : n(count) { n.fetch_add(1); }
      ~Waiting() { n.fetch_sub(1); }
    } waiting(gil_waiters_);
    gil = api_.PyGILState_Ensure();
  }
  {
    std::lock_guard<std::mutex> lock(job.mu);
    if (job.state == Job::State::kCancelled) {
      api_.PyGILState_Release(gil);
      return;
    }
    job.state = Job::State::kRunning;
    job.thread_ident = api_.PyThread_get_thread_ident();
    job.native_thread = ::gettid();
  }
  job.cv.notify_all();
  std::string failure;
  try {
    job.work(api_);
  } catch (abi::__forced_unwind&) {
    throw;
  } catch (const std::exception& e) {
    failure = e.what();
  } catch (...) {
    failure = "unknown exception";
  }
  bool interrupted = false;
  {
    std::lock_guard<std::mutex> lock(job.mu);
    interrupted = job.interrupt_sent;
    job.failure = failure;
    job.state = Job::State::kDone;  // no interrupt is sent from here on
  }
  // An interrupt that arrived after the work's last bytecode must not outlive it; only then is
  // there one to take (outside job.mu: taking it runs Python, which may let the GIL go to an
  // interrupter that wants that lock). It is raised and dropped, not cleared with
  // PyThreadState_SetAsyncExc(id, NULL): any call of that raises the interpreter's eval breaker,
  // and on 3.9-3.12 the breaker then stays up until a thread with an exception pending takes it.
  // Every thread of the program handled it at each call and loop from the agent's first request
  // on, and a thread being traced (a probe, pdb, coverage) on 3.11 ran its function's RESUME
  // again and again, for good.
  if (interrupted) absorb_interrupt(api_);
  job.cv.notify_all();
  api_.PyGILState_Release(gil);
}

// Not noexcept, and abi::__forced_unwind is rethrown everywhere below: a thread that asks for
// the GIL after the interpreter finalized is ended by CPython with pthread_exit, whose unwinding
// must pass through (a noexcept frame would turn it into std::terminate).
PROBING_CATCHES_FORCED_UNWIND void PythonExecutor::worker_loop() noexcept(false) {
  ::pthread_setname_np(::pthread_self(), "probing-python");
  mark_agent_python_thread(api_);
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      ++idle_;
      cv_.wait(lock, [&] { return !queue_.empty(); });
      --idle_;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    try {
      execute(*job);
    } catch (abi::__forced_unwind&) {
      std::lock_guard<std::mutex> lock(mu_);
      --workers_;
      throw;
    } catch (...) {
      log_warn("a Python worker failed");
    }
  }
}

}  // namespace probing::python
