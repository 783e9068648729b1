// probing PID inject [-D key=value]...: attach the agent to a running process.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <optional>
#include <thread>

#include "cli/common.h"
#include "core/agent_copy.h"
#include "core/proc_files.h"
#include "core/settings.h"
#include "inject/inject.h"
#include "inspect/process_tree.h"
#include "inspect/symbols.h"
#include "native/native_stack.h"

namespace probing::cli {
namespace {

struct InjectArgs {
  std::vector<std::string> defines;
  double timeout_s = 5;
  bool verbose = false;
};

// Whether the target's agent answers GET /health; an error when its socket name is held by
// another process (which no inject can fix).
Result<bool> agent_answers(const client::Target& target, double timeout_s) {
  auto c = client::Client::connect(target, timeout_s);
  if (c.status().code() == Code::kPermissionDenied) return c.status();
  if (!c.is_ok()) return false;
  auto r = (*c)->request("GET", "/health", "", timeout_s);
  return r.is_ok() && r->status == 200;
}

// Where the agent of `pid` reads the -D settings at start, as this process sees it: in the
// target's root, named by the pid the target sees itself as (in a container, its own).
std::string settings_file_of(pid_t pid) {
  return "/proc/" + std::to_string(pid) + "/root" + inject_settings_path(pid_in_own_namespace(pid));
}

// Leaves the -D settings where the agent reads them at start (see inject_settings_path).
Status write_settings(pid_t pid, const std::vector<std::pair<std::string, std::string>>& defines) {
  std::string path = settings_file_of(pid);
  ::unlink(path.c_str());  // a stale file of an earlier, failed attempt
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return errno_status("writing the settings for the agent to " + path);
  std::string text;
  for (const auto& [k, v] : defines) text += k + "=" + v + "\n";
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  if (!ok) return errno_status("writing " + path);
  return {};
}

// The agent library as the target sees it: `lib` itself when the target's root holds that very
// file; else (a container, a chroot, a private mount over the build) a copy put in the target's
// /tmp, in a directory only this user may write (others may read: the target may run as another
// user), named by the library's size and time so that a rebuilt library is copied again.
// Returns the path as the target sees it; `lib` when the target's root cannot be seen at all
// (inject's own checks then say why). With `copy_name`, always a copy of that name: a second
// file, which the target's loader takes for another library than the one it has mapped.
Result<std::string> library_in_target(pid_t pid, const std::string& lib, bool verbose,
                                      const std::string& copy_name = "") {
  const std::string root = "/proc/" + std::to_string(pid) + "/root";
  struct stat mine {};
  struct stat theirs {};
  if (::stat(lib.c_str(), &mine) != 0) return errno_status("reading " + lib);
  if (::stat((root + "/").c_str(), &theirs) != 0) return lib;
  if (copy_name.empty() && ::stat((root + lib).c_str(), &theirs) == 0 && theirs.st_dev == mine.st_dev &&
      theirs.st_ino == mine.st_ino) {
    return lib;
  }
  Result<std::string> copy =
      copy_agent_library(lib, root, copy_name.empty() ? std::string("libprobing.so") : copy_name);
  if (!copy.is_ok()) return copy.status();
  if (verbose) {
    std::cerr << "probing: " << lib << (copy_name.empty() ? " is not in the target's filesystem" : "")
              << ": copied to " << *copy << "\n";
  }
  return copy;
}

// For a forked child whose inherited agent runs nothing: the name of a copy of the library that
// the child has not mapped yet (a grandchild may have mapped the first copy too).
Result<std::string> fresh_copy_name(pid_t pid) {
  for (int n = 1; n <= 16; ++n) {
    const std::string name = "libprobing-fork" + (n == 1 ? std::string() : std::to_string(n)) + ".so";
    Result<bool> mapped = inspect::has_mapped_library(pid, name);
    if (!mapped.is_ok()) return mapped.status();
    if (!*mapped) return name;
  }
  return Status(Code::kUnavailable,
                "process " + std::to_string(pid) + " already maps 16 copies of the agent");
}

int run_inject(const Context& ctx, const InjectArgs& args) {
  using Clock = std::chrono::steady_clock;
  auto start = Clock::now();
  if (ctx.target.empty()) return fail("inject needs a pid: probing PID inject");
  Result<client::Target> target = client::parse_target(ctx.target);
  if (!target.is_ok()) return fail(target.status());
  if (target->kind != client::Target::Kind::kPid) return fail("inject works on a local pid, not " + ctx.target);
  pid_t pid = target->pid;
  std::vector<std::pair<std::string, std::string>> defines;
  for (const std::string& d : args.defines) {
    auto kv = parse_define(d);
    if (!kv.is_ok()) return fail(kv.status());
    defines.push_back(*kv);
  }
  if (::kill(pid, 0) != 0 && errno == ESRCH) return fail("no process " + std::to_string(pid));
  Result<bool> answers = agent_answers(*target, 2);
  if (!answers.is_ok()) return fail(answers.status().with_context("cannot attach to process " + std::to_string(pid)));
  if (*answers) {
    std::cout << "probing is already attached to process " << pid << "; nothing changed\n";
    if (!defines.empty()) std::cout << "(to change settings now, use: probing " << pid << " config KEY=VALUE)\n";
    return kExitOk;
  }
  Result<std::string> built = agent_library_path();
  if (!built.is_ok()) return fail(built.status());
  Result<std::string> lib = library_in_target(pid, *built, args.verbose);
  if (!lib.is_ok()) return fail(lib.status().with_context("attaching to process " + std::to_string(pid)));
  Status injectable = inject::check_injectable(pid, *lib);
  if (!injectable.is_ok()) return fail(injectable);
  Result<std::uintptr_t> py = inspect::find_remote_symbol(pid, "Py_IsInitialized");
  if (!py.is_ok()) {
    if (py.status().code() == Code::kNotFound) {
      return fail("process " + std::to_string(pid) + " is not a Python process (no CPython runtime is mapped in it)");
    }
    return fail(py.status());
  }
  Result<bool> loaded = inspect::has_mapped_library(pid, "libprobing.so");
  if (!loaded.is_ok()) return fail(loaded.status());
  if (*loaded && !inspect::runs_agent_threads(pid)) {
    // A fork of a process with an agent (a DataLoader worker, a multiprocessing child): it
    // inherited the library, but no thread of it. dlopen of the same file would do nothing, so
    // a copy of it, which the loader takes for another library, starts an agent of its own.
    Result<std::string> name = fresh_copy_name(pid);
    if (name.is_ok()) lib = library_in_target(pid, *built, args.verbose, *name);
    if (!name.is_ok() || !lib.is_ok()) {
      return fail((name.is_ok() ? lib.status() : name.status())
                      .with_context("process " + std::to_string(pid) +
                                    " is a fork whose inherited agent runs no thread; starting one"));
    }
    if (args.verbose) {
      std::cerr << "probing: process " << pid << " maps the agent but runs none of its threads (a fork of a "
                << "process with an agent): loading " << *lib << "\n";
    }
    loaded = false;
  }
  if (!*loaded) {
    if (!defines.empty()) {
      Status st = write_settings(pid, defines);
      if (!st.is_ok()) return fail(st);
    }
    inject::InjectOptions options;
    options.deadline = std::chrono::milliseconds(static_cast<long>(args.timeout_s * 1000));
    // With a stack reader, threads parked in a lock wait are judged by their whole stack, and
    // a process whose every thread waits (the usual hang) can be attached to.
    Result<std::unique_ptr<inspect::StackReader>> stacks = native::open_stack_reader(pid);
    if (stacks.is_ok()) {
      options.stacks = stacks->get();
    } else if (args.verbose) {
      std::cerr << "probing: threads in a lock wait are not considered: " << stacks.status().message()
                << "\n";
    }
    Result<inject::InjectReport> report = inject::inject_library(pid, *lib, options);
    if (!report.is_ok()) {
      ::unlink(settings_file_of(pid).c_str());
      return fail(report.status().with_context("attaching to process " + std::to_string(pid)));
    }
    if (args.verbose) {
      std::cerr << "probing: loaded " << *lib << " using " << report->how << " (" << report->attempts
                << " thread(s) examined)\n";
    }
  }
  // The agent's constructor only starts a thread; wait until that thread serves.
  auto deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(args.timeout_s));
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    Result<bool> ready = agent_answers(*target, 1);
    if (!ready.is_ok()) {
      return fail(ready.status().with_context("the agent was loaded into process " + std::to_string(pid) +
                                              " but cannot serve"));
    }
    if (*ready) break;
    if (Clock::now() > deadline) {
      return fail("the agent was loaded into process " + std::to_string(pid) +
                  " but did not answer in time; it may still be starting (try: probing list)");
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
  std::cout << "Successfully injected probes into process " << pid << "\n";
  if (args.verbose) {
    std::cerr << "probing: " << std::chrono::duration<double, std::milli>(Clock::now() - start).count()
              << " ms from start to the agent answering\n";
  }
  return kExitOk;
}

}  // namespace

void add_inject_command(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<InjectArgs>();
  CLI::App* cmd = app.add_subcommand(
      "inject",
      "Attach the agent to a running Python process, with no restart (ptrace; see docs/attach.md).\n"
      "Returns when the agent answers. A second inject reports that it is already there.");
  cmd->add_option("-D,--define", args->defines, "a setting applied before the agent starts, key=value (repeatable)")
      ->allow_extra_args(false);
  cmd->add_option("--timeout", args->timeout_s, "seconds to wait for a safe moment and for the agent to answer")
      ->default_val(5)
      ->check(CLI::PositiveNumber);
  cmd->add_flag("-v,--verbose", args->verbose, "say which thread was used and how long it took");
  on_run(cmd, [&ctx, args] { return run_inject(ctx, *args); });
}

}  // namespace probing::cli
