// probing doctor [PID]: why a process has no agent, and what to do about it. Without a pid, what
// this installation can do: the agent library, ptrace, and which interpreters have the PROBE=1
// hook. Reads only: nothing here touches a target.
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <regex>
#include <set>
#include <sstream>

#include "build_info.h"
#include "cli/common.h"
#include "core/proc_files.h"
#include "inspect/maps.h"
#include "inspect/process.h"
#include "inspect/process_tree.h"
#include "inspect/symbols.h"

extern char** environ;

namespace probing::cli {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// What `argv` prints on stdout within `timeout_s`, or nullopt when it fails or takes longer.
std::optional<std::string> run_capture(const std::vector<std::string>& argv, double timeout_s) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return std::nullopt;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t child = 0;
  int rc = ::posix_spawn(&child, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  std::string text;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  bool timed_out = false;
  while (rc == 0) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{out[0], POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) == 0) {
      timed_out = true;
      break;
    }
    char buf[4096];
    ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(out[0]);
  if (rc != 0) return std::nullopt;
  if (timed_out) ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  if (timed_out || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return std::nullopt;
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

// What an interpreter says of itself: its real executable and its site-packages.
struct Interpreter {
  std::string executable;
  std::string site;
  std::string pth() const {  // its probing.pth, or "" when it has none
    std::string path = site + "/probing.pth";
    return ::access(path.c_str(), R_OK) == 0 ? path : "";
  }
};

// nullopt when `python` does not run (a pyenv shim of a version that is not installed).
std::optional<Interpreter> ask(const std::string& python) {
  std::optional<std::string> out =
      run_capture({python, "-S", "-c",
                   "import sys, sysconfig; print(sys.executable); print(sysconfig.get_path('purelib'))"},
                  5);
  if (!out || out->find('\n') == std::string::npos) return std::nullopt;
  Interpreter it{out->substr(0, out->find('\n')), out->substr(out->find('\n') + 1)};
  char resolved[PATH_MAX];
  if (::realpath(it.executable.c_str(), resolved) != nullptr) it.executable = resolved;
  return it;
}

// The interpreters a user is likely to run (python3, python3.N on PATH and in /usr/bin), once
// each by real executable.
std::vector<std::pair<std::string, Interpreter>> interpreters_on_path() {
  std::vector<std::string> dirs;
  std::stringstream path(::getenv("PATH") != nullptr ? ::getenv("PATH") : "");
  for (std::string dir; std::getline(path, dir, ':');) dirs.push_back(dir);
  dirs.push_back("/usr/bin");
  std::vector<std::pair<std::string, Interpreter>> found;
  std::set<std::string> seen;
  for (const std::string& dir : dirs) {
    for (const char* name : {"python3", "python3.9", "python3.10", "python3.11", "python3.12", "python3.13",
                             "python3.14", "python3.15"}) {
      std::string p = dir + "/" + name;
      if (::access(p.c_str(), X_OK) != 0) continue;
      std::optional<Interpreter> it = ask(p);
      if (it && seen.insert(it->executable).second) found.emplace_back(p, *it);
    }
  }
  return found;
}

// Whether this user may ptrace `pid`, and why not.
Status ptrace_allowed(pid_t pid) {
  std::string scope = read_text("/proc/sys/kernel/yama/ptrace_scope");
  scope = scope.substr(0, scope.find_first_of("\n"));
  struct stat st {};
  if (::stat(("/proc/" + std::to_string(pid)).c_str(), &st) != 0) {
    return Status(Code::kNotFound, "no process " + std::to_string(pid));
  }
  const bool root = ::geteuid() == 0;
  if (scope == "3")
    return Status(Code::kPermissionDenied, "ptrace is disabled until reboot (ptrace_scope 3)");
  if (!root && st.st_uid != ::geteuid()) {
    return Status(Code::kPermissionDenied, "the process belongs to uid " + std::to_string(st.st_uid) +
                                               ": run as that user, or as root");
  }
  if (!root && scope == "2") {
    return Status(Code::kPermissionDenied, "ptrace_scope is 2: only root (CAP_SYS_PTRACE) may attach");
  }
  return Status::ok();
}

// What gives INTERPRETER the PROBE=1 hook, by how probing itself was installed: the wheel's
// bundle, the .deb (/usr/lib/probing), or a source build.
std::string how_to_hook(const std::string& interpreter) {
  Result<std::string> lib = agent_library_path();
  const std::string path = lib.is_ok() ? *lib : "";
  if (path.find("/_bundle/lib/probing/") != std::string::npos)
    return interpreter + " -m pip install probing-*.whl (the wheel, into its environment) gives it the hook";
  if (path.rfind("/usr/lib/probing/", 0) == 0)
    return "the .deb hooks Debian's python3; " + interpreter +
           " -m pip install probing-*.whl gives it the hook";
  return "make install PYTHONS=" + interpreter + " gives it the hook";
}

struct Finding {
  bool good;
  std::string text;
};

void print(const std::vector<Finding>& findings) {
  for (const Finding& f : findings) std::cout << "  " << (f.good ? "ok   " : "no   ") << f.text << "\n";
}

int doctor_install() {
  std::vector<Finding> findings;
  Result<std::string> lib = agent_library_path();
  findings.push_back({lib.is_ok(), lib.is_ok() ? "agent library " + *lib : lib.status().message()});
  std::string scope = read_text("/proc/sys/kernel/yama/ptrace_scope");
  scope = scope.substr(0, scope.find_first_of("\n"));
  bool can_attach = scope.empty() || scope == "0" || scope == "1" || (scope == "2" && ::geteuid() == 0);
  findings.push_back({can_attach, scope.empty()
                                      ? "ptrace: no Yama restriction (inject works on your own processes)"
                                      : "ptrace: /proc/sys/kernel/yama/ptrace_scope is " + scope +
                                            (can_attach ? " (inject works on your own processes)"
                                                        : " (inject is refused: see docs/attach.md)")});
  std::cout << "probing " << PROBING_VERSION << " (commit " << PROBING_COMMIT << ")\n";
  print(findings);
  std::cout << "PROBE=1 (start the agent with the program) works for:\n";
  auto pythons = interpreters_on_path();
  if (pythons.empty()) std::cout << "  (no python3 on PATH)\n";
  for (const auto& [py, it] : pythons) {
    std::string pth = it.pth();
    std::cout << "  " << (pth.empty() ? "no   " : "ok   ") << py
              << (py == it.executable ? "" : " (" + it.executable + ")") << ": "
              << (pth.empty() ? how_to_hook(it.executable) : pth) << "\n";
  }
  return lib.is_ok() ? kExitOk : kExitFailed;
}

int doctor_process(pid_t pid) {
  std::string proc = "/proc/" + std::to_string(pid);
  Result<inspect::ProcStatus> status = inspect::read_proc_status(pid);
  if (!status.is_ok()) return fail(status.status());
  std::string cmdline = read_text(proc + "/cmdline");
  for (char& c : cmdline) c = c == '\0' ? ' ' : c;
  if (cmdline.size() > 100) cmdline = cmdline.substr(0, 97) + "...";
  std::cout << "process " << pid << ": " << (cmdline.empty() ? status->name : cmdline) << "\n";
  std::vector<Finding> findings;
  auto verdict = [&](int code) {
    print(findings);
    return code;
  };

  client::Target target;
  target.kind = client::Target::Kind::kPid;
  target.pid = pid;
  target.text = std::to_string(pid);
  auto c = client::Client::connect(target, 2);
  if (c.is_ok()) {
    auto r = (*c)->request("GET", "/health", "", 2);
    if (r.is_ok() && r->status == 200) {
      nlohmann::json h = r->json();
      findings.push_back({true, "its agent answers on @probing-" + std::to_string(pid_in_own_namespace(pid)) +
                                    " (Python " + h.value("python", std::string("?")) + ", " +
                                    h.value("python_status", std::string("?")) + ")"});
      return verdict(kExitOk);
    }
  } else if (c.status().code() == Code::kPermissionDenied) {
    findings.push_back({false, c.status().message()});
    return verdict(kExitFailed);
  }
  if (status->state == 'Z') {
    findings.push_back({false, "it is a zombie: it has exited and waits for its parent to reap it"});
    return verdict(kExitFailed);
  }
  if (status->state == 'T' || status->state == 't') {
    findings.push_back({false, "it is stopped: resume it with kill -CONT " + std::to_string(pid)});
  }
  Result<std::vector<inspect::Mapping>> maps = inspect::read_maps(pid);
  if (!maps.is_ok()) {
    findings.push_back({false, maps.status().message()});
    return verdict(kExitFailed);
  }
  std::string python;
  static const std::regex kPython(R"((?:lib)?python(3\.\d+))");
  for (const std::string& file : inspect::mapped_files(*maps)) {
    std::smatch m;
    std::string base = inspect::path_basename(file);
    if (std::regex_search(base, m, kPython)) python = m[1];
  }
  Result<std::uintptr_t> runtime = inspect::find_remote_symbol(pid, "Py_IsInitialized");
  if (!runtime.is_ok()) {
    findings.push_back({false,
                        "it is not a Python process (no CPython runtime is mapped in it): probing "
                        "serves Python programs only"});
    return verdict(kExitFailed);
  }
  findings.push_back({true, "it runs CPython" + (python.empty() ? "" : " " + python)});
  bool agent_mapped = false;
  for (const std::string& file : inspect::mapped_files(*maps)) {
    agent_mapped |= inspect::path_basename(file) == "libprobing.so";
  }
  if (agent_mapped && !inspect::runs_agent_threads(pid)) {
    findings.push_back({false, "libprobing.so is loaded but none of the agent's threads run: the process is a "
                               "fork of one with an agent (fork copies one thread), started before the "
                               "`subprocesses` hook was in or with it off; `probing " +
                                   std::to_string(pid) + " inject` starts an agent in it"});
    return verdict(kExitFailed);
  }
  if (agent_mapped) {
    findings.push_back({false, "libprobing.so is loaded but nothing answers on @probing-" +
                                   std::to_string(pid_in_own_namespace(pid)) +
                                   ": the agent may still be starting, or could not start (its stderr says "
                                   "why; PROBING_LOG=info says more)"});
    return verdict(kExitFailed);
  }
  std::string environ_text = read_text(proc + "/environ");
  bool asked = false;
  for (size_t at = 0; at < environ_text.size();) {
    size_t end = environ_text.find('\0', at);
    std::string var = environ_text.substr(at, end == std::string::npos ? std::string::npos : end - at);
    // As the probing.pth hook reads them: 1, true, on or yes, in any case.
    for (const char* name : {"PROBE=", "PROBING="}) {
      if (var.rfind(name, 0) != 0) continue;
      std::string value = var.substr(std::strlen(name));
      value.erase(0, value.find_first_not_of(" \t"));
      value.erase(value.find_last_not_of(" \t") + 1);
      for (char& c : value) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      asked |= value == "1" || value == "true" || value == "on" || value == "yes";
    }
    if (end == std::string::npos) break;
    at = end + 1;
  }
  std::string exe = read_text(proc + "/cmdline");
  exe = exe.substr(0, exe.find('\0'));
  char real_exe[PATH_MAX];
  ssize_t n = ::readlink((proc + "/exe").c_str(), real_exe, sizeof real_exe - 1);
  std::string interpreter = n > 0 ? std::string(real_exe, static_cast<size_t>(n)) : exe;
  // The interpreter is asked for its site-packages only when it is this machine's file (a
  // process in a container has its own).
  char root_link[PATH_MAX];
  ssize_t rn = ::readlink((proc + "/root").c_str(), root_link, sizeof root_link - 1);
  const bool same_root = rn == 1 && root_link[0] == '/';
  std::optional<Interpreter> it = same_root ? ask(interpreter) : std::nullopt;
  std::optional<std::string> pth;
  if (it && !it->pth().empty()) pth = it->pth();
  if (asked && !pth && it) {
    findings.push_back({false, "it was started with PROBE=1, but its interpreter " + interpreter +
                                   " has no probing.pth: " + how_to_hook(interpreter)});
  } else if (!asked) {
    findings.push_back({false, "no agent: it was not started with PROBE=1 (or `probing launch`)" +
                                   std::string(pth ? ", which its interpreter supports" : "")});
  } else {
    findings.push_back({false, "no agent, though it was started with PROBE=1"});
  }
  Status allowed = ptrace_allowed(pid);
  findings.push_back({allowed.is_ok(), allowed.is_ok()
                                           ? "attach now with: probing " + std::to_string(pid) + " inject"
                                           : "inject is not possible: " + allowed.message()});
  return verdict(kExitFailed);
}

}  // namespace

void add_doctor_command(CLI::App& app, Context& ctx) {
  CLI::App* cmd = app.add_subcommand(
      "doctor",
      "Say why a process has no agent and what to do; without a target, what this installation\n"
      "can do (the agent library, ptrace, which interpreters have the PROBE=1 hook).\n"
      "Exits 0 when the process's agent answers (without a target: when the library is there).");
  on_run(cmd, [&ctx] {
    if (ctx.target.empty()) return doctor_install();
    Result<client::Target> target = client::parse_target(ctx.target);
    if (!target.is_ok()) return fail(target.status());
    if (target->kind != client::Target::Kind::kPid)
      return fail("doctor looks at a local process: give its pid");
    return doctor_process(target->pid);
  });
}

}  // namespace probing::cli
