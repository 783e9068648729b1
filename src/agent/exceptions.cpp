#include "agent/exceptions.h"

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bindings/table_binding.h"
#include "core/log.h"
#include "core/settings.h"
#include "python/crash.h"
#include "python/frames.h"
#include "python/helpers.h"
#include "python/ref.h"
#include "python/runtime.h"
#include "sql/engine.h"

namespace probing::agent {

extern const char kExceptionHelpersSource[];

namespace {

const python::HelperSource kExceptionHelpers{kExceptionHelpersSource, "probing._exceptions"};

// How often the hooks are checked: soon after start (a program sets its own hooks early, and
// imports threading early), then every few seconds (a hook it sets later is wrapped in turn).
constexpr double kFirstIntervalS = 0.2;
constexpr int kFirstChecks = 50;
constexpr double kIntervalS = 2;
// A check waits this long for the GIL (under the 20 ms after which the executor asks the main
// thread to step aside): a busy program is asked again at the next check instead.
constexpr double kWaitS = 0.015;
constexpr int kHelperTries = 5;  // checks that try to have the backtrace helper compiled

python::PyObject* g_append = nullptr;  // python.exceptions' append; made once with the GIL, kept

// A helper call whose worker still waits for the GIL (the call gave up on it, the worker has not)
// holds this; no other is made meanwhile, so a GIL held for hours parks one worker, not more.
std::weak_ptr<void> g_in_flight;

// exception_helpers.py's exception_hooks(append, on): puts the hooks in where they are not (or
// takes them out). Its answer: {place: the id of the agent's hook there, or null}. Never waits for
// the GIL past kWaitS.
Result<nlohmann::json> keep_hooks(python::PythonRuntime& runtime, bool on) {
  std::shared_ptr<void> token = std::make_shared<char>(0);  // freed with the work, run or dropped
  g_in_flight = token;
  python::MakeArgs args = [on, token](const python::CApi& api) -> Result<std::vector<python::PyRef>> {
    if (g_append == nullptr) {  // made here, with the GIL
      std::shared_ptr<sql::ColumnStore> store = sql::Engine::get().find_store("python", "exceptions");
      if (store == nullptr) return Status(Code::kInternal, "python.exceptions is not registered");
      g_append = bindings::appender_for(store.get());  // the engine keeps the store
      if (g_append == nullptr) return Status(Code::kInternal, python::fetch_error_text(api));
    }
    std::vector<python::PyRef> made;
    made.push_back(python::PyRef::borrow(api, g_append));
    made.emplace_back(api, api.PyLong_FromLongLong(on ? 1 : 0));
    if (!made.back()) return Status(Code::kInternal, python::fetch_error_text(api));
    return made;
  };
  return python::call_helper(runtime, kExceptionHelpers, "exception_hooks", std::move(args),
                             python::HelperCall(kWaitS, 2));
}

// Compiles the backtrace helper once the program is past its first seconds (frames.h says why);
// true once done, or once it failed other than for want of the GIL (a backtrace then says why).
bool load_backtrace_helper(python::PythonRuntime& runtime) {
  std::shared_ptr<void> token = std::make_shared<char>(0);  // freed with the work, as keep_hooks'
  g_in_flight = token;
  Status st = python::load_backtrace_helper(runtime, kWaitS, std::move(token));
  return st.code() != Code::kTimeout;
}

// Keeps the hooks as the setting says. Touches Python only while the setting is on, or while
// hooks of the agent's may still be in (until the first call after it went off). A check is one
// call of the helper: some microseconds of the GIL every kIntervalS. After the first checks it
// also has the backtrace helper compiled, once; and at each check it puts the crash handlers back
// in front of PyTorch's (crash.h).
void watch() noexcept {
  ::pthread_setname_np(::pthread_self(), "probing-exc");
  try {
    bool in = false;  // hooks of the agent's may be in place
    bool helper_loaded = false;
    std::string said;
    for (int checks = 0;; ++checks) {
      std::this_thread::sleep_for(
          std::chrono::duration<double>(checks < kFirstChecks ? kFirstIntervalS : kIntervalS));
      // The crash handlers too, at the same pace: a DataLoader worker started by a forkserver or
      // spawn sets PyTorch's handlers at its start, before torch tracing could wrap that (in a
      // forked worker the wrapper does it at once). A few sigaction calls; no Python.
      python::capture_crashes_again();
      if (!g_in_flight.expired()) continue;
      Result<python::PythonRuntime*> rt = python::PythonRuntime::get();
      if (!rt.is_ok()) continue;  // not initialized yet (or never: not a Python process)
      if (!helper_loaded && checks >= kFirstChecks) {
        // A few tries: a GIL that stays busy leaves the compiling to the first backtrace.
        helper_loaded = load_backtrace_helper(**rt) || checks >= kFirstChecks + kHelperTries;
        continue;
      }
      const bool on = settings().get_bool("exceptions.capture");
      if (!on && !in) continue;
      Result<nlohmann::json> state = keep_hooks(**rt, on);
      if (!state.is_ok()) {
        if (state.status().code() != Code::kTimeout && said != state.status().message()) {
          said = state.status().message();
          log_warn("exceptions.capture: " + said);
        }
        continue;
      }
      in = on;
      std::string places;
      for (const auto& [place, id] : state->items()) {
        if (!id.is_null()) places += (places.empty() ? "" : ", ") + place;
      }
      const std::string now =
          on ? "uncaught exceptions recorded from " + places : "uncaught exceptions not recorded";
      if (now != said) {
        said = now;
        log_info(now);
      }
    }
  } catch (...) {
    log_error("the exception hooks' watcher stopped");
  }
}

}  // namespace

void start_exception_capture() {
  static std::once_flag once;
  std::call_once(once, [] { std::thread(watch).detach(); });
}

}  // namespace probing::agent
