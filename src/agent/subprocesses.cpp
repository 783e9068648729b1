// How a forked child gets an agent. fork() copies one thread: the child maps this library but
// runs none of its threads, and dlopen() of the same file would do nothing. So the parent keeps
// a copy of the library (core/agent_copy.h: a second file, another library to the loader), and
// registers with os.register_at_fork an after_in_child hook that loads it: its constructor starts
// the child's agent on @probing-<child pid>. The hook is a C function of this library: it reads
// only atomics (the setting may have been turned off since), since locks held by other threads
// of the parent at the fork stay held in the child.
#include "agent/subprocesses.h"

#include <dlfcn.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <string>
#include <thread>

#include "core/agent_copy.h"
#include "core/log.h"
#include "core/settings.h"
#include "python/capi.h"
#include "python/helpers.h"
#include "python/ref.h"
#include "python/runtime.h"

namespace probing::agent {
namespace {

std::atomic<bool> g_on{false};             // the setting, as the hook in a child reads it
std::atomic<bool> g_registered{false};     // the hook is in (it stays for the life of the process)
std::atomic<bool> g_watching{false};       // the watcher thread runs
std::atomic<const char*> g_copy{nullptr};  // the copy children load; made once, never freed
std::atomic<const python::CApi*> g_api{nullptr};

// Python is looked for often at first (a program may fork soon after it starts), then less.
constexpr double kFirstIntervalS = 0.005;
constexpr double kWatchIntervalS = 0.2;
constexpr int kFirstTries = 200;

// Registers the hook. Imports nothing but os (loaded at start-up): an import of threading here
// (ctypes and json import it on 3.13+) would make this agent thread the target's main thread.
constexpr char kForkHelperSource[] = R"PY(
import os


def register(load_agent_in_child):
    os.register_at_fork(after_in_child=load_agent_in_child)
    return "true"
)PY";
constexpr python::HelperSource kForkHelper{kForkHelperSource, "probing._fork"};

// The hook, in a child just forked, with the GIL, after CPython has made the child whole: starts
// the copy's loading. Reads only atomics (locks held by the parent's other threads at the fork
// stay held here). A copy that does not load leaves the child as it would be without the setting.
python::PyObject* load_agent_in_child(python::PyObject*, python::PyObject*) noexcept {
  const char* path = g_on.load() ? g_copy.load() : nullptr;
  if (path != nullptr) {
    // On a thread of its own: the loader's write lock is not reset by fork, and a thread of the
    // parent inside dl_iterate_phdr at the fork left it held; the program's thread never waits.
    try {
      std::thread([path] { (void)::dlopen(path, RTLD_NOW | RTLD_LOCAL); }).detach();  // never closed
    } catch (...) {
      // no thread: the child goes on without an agent
    }
  }
  const python::CApi* api = g_api.load();
  api->Py_IncRef(api->None);
  return api->None;
}

python::MethodDef g_hook_def{"probing_load_agent_in_child", reinterpret_cast<void*>(load_agent_in_child),
                             python::kMethNoArgs, "loads probing's agent in a forked child"};

// This library's own file, as the loader opened it.
std::string own_library() {
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(&load_agent_in_child), &info) == 0 || info.dli_fname == nullptr)
    return "";
  char resolved[PATH_MAX];
  return ::realpath(info.dli_fname, resolved) != nullptr ? std::string(resolved)
                                                         : std::string(info.dli_fname);
}

void follow_setting();

// Until the hook is in: waits for Python, makes the copy, registers the hook. Ends when the hook
// is in, when the setting goes off, or on an error (said once in the log).
void watch() noexcept {
  ::pthread_setname_np(::pthread_self(), "probing-fork");
  bool gave_up = false;
  try {
    for (int tries = 0;; ++tries) {
      if (tries > 0) {
        std::this_thread::sleep_for(
            std::chrono::duration<double>(tries < kFirstTries ? kFirstIntervalS : kWatchIntervalS));
      }
      if (!g_on.load()) break;
      Result<python::PythonRuntime*> rt = python::PythonRuntime::get();
      if (!rt.is_ok()) {
        if (rt.status().code() == Code::kUnavailable) continue;  // not initialized yet
        log_warn("subprocesses: " + rt.status().message());
        gave_up = true;
        break;
      }
      if (g_copy.load() == nullptr) {
        const std::string lib = own_library();
        if (lib.empty()) {
          log_warn("subprocesses: the agent library's own path is unknown; forked children get no agent");
          gave_up = true;
          break;
        }
        Result<std::string> copy =
            copy_agent_library(lib, "", fork_copy_name(lib.substr(lib.rfind('/') + 1)));
        if (!copy.is_ok()) {
          log_warn("subprocesses: forked children get no agent: " + copy.status().message());
          gave_up = true;
          break;
        }
        g_copy.store(::strdup(copy->c_str()));
      }
      g_api.store(&(*rt)->api());
      python::MakeArgs hook = [](const python::CApi& api) -> Result<std::vector<python::PyRef>> {
        python::PyRef fn(api, api.PyCFunction_NewEx(&g_hook_def, nullptr, nullptr));
        if (!fn) return Status(Code::kInternal, python::fetch_error_text(api));
        std::vector<python::PyRef> args;
        args.push_back(std::move(fn));
        return args;
      };
      Result<nlohmann::json> done =
          python::call_helper(**rt, kForkHelper, "register", std::move(hook), python::HelperCall(5, 5));
      if (done.is_ok()) {
        g_registered.store(true);
        log_info("subprocesses: forked children load " + std::string(g_copy.load()));
        break;
      }
      if (done.status().code() != Code::kTimeout) {
        log_warn("subprocesses: " + done.status().message());
        gave_up = true;
        break;
      }
    }
  } catch (...) {
    log_error("subprocesses: the watcher stopped");
    gave_up = true;
  }
  g_watching.store(false);
  // Turned off and on again while this thread was leaving: the new setting still needs a watcher.
  if (!gave_up) follow_setting();
}

void follow_setting() {
  g_on.store(settings().get_bool("subprocesses"));
  if (!g_on.load() || g_registered.load() || g_watching.exchange(true)) return;
  try {
    std::thread(watch).detach();
  } catch (...) {
    g_watching.store(false);
    log_warn("subprocesses: cannot start a thread; forked children get no agent");
  }
}

}  // namespace

std::string subprocess_agents_state() {
  if (!g_on.load()) return "off";
  return g_registered.load() ? "on" : "starting";
}

bool loaded_by_a_fork() {
  const std::string lib = own_library();
  return lib.substr(lib.rfind('/') + 1).rfind("libprobing-fork", 0) == 0;
}

void start_subprocess_agents() {
  // An agent a fork loaded (from a copy) gives none to its own forks: each level would need a
  // copy more of the library. `inject` gives one to such a grandchild.
  if (loaded_by_a_fork()) return;
  settings().observe("subprocesses", [](const std::string&, const std::string&) { follow_setting(); });
  follow_setting();
}

}  // namespace probing::agent
