// Tests of the ptrace injector on real processes: native targets (inject_target) and the
// Python interpreters on this machine, sleeping, spinning, blocked on stdin, with many threads.
// Targets say "ready" on a pipe; no test sleeps and hopes. Every child is killed at teardown.
#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <map>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "inject/inject.h"
#include "inject/stack_policy.h"
#include "inspect/elf.h"
#include "inspect/maps.h"
#include "inspect/stack_reader.h"
#include "inspect/symbols.h"
#include "native/native_stack.h"

namespace probing::inject {
namespace {

// The injector's tests use the inspection toolkit it is built on throughout.
using namespace probing::inspect;  // NOLINT(google-build-using-namespace)

using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

std::vector<std::string> pythons() {
  std::vector<std::string> out;
  std::stringstream in(INJECT_PYTHONS);
  std::string p;
  while (std::getline(in, p, ':')) {
    if (!p.empty() && ::access(p.c_str(), X_OK) == 0) out.push_back(p);
  }
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A child process with a pipe on stdin and one on stdout. Killed and reaped on destruction.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::vector<std::string>& env = {}) {
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) std::abort();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      for (const std::string& e : env) ::putenv(const_cast<char*>(e.c_str()));
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    stdin_ = in[1];
    stdout_ = out[0];
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (stdin_ >= 0) ::close(stdin_);
    if (stdout_ >= 0) ::close(stdout_);
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  pid_t pid() const { return pid_; }

  // Reads stdout until a line equal to `line` arrives; false on EOF or timeout.
  bool wait_for_line(const std::string& line, milliseconds timeout = milliseconds(10000)) {
    const auto deadline = SteadyClock::now() + timeout;
    for (;;) {
      std::size_t nl;
      while ((nl = buffer_.find('\n')) != std::string::npos) {
        std::string got = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        lines_.push_back(got);
        if (got == line) return true;
      }
      if (!fill(deadline)) return false;
    }
  }

  // Everything until EOF (the child exits), or what arrived before the timeout.
  std::string read_rest(milliseconds timeout = milliseconds(10000)) {
    const auto deadline = SteadyClock::now() + timeout;
    while (fill(deadline)) {
    }
    return buffer_;
  }

  void write_stdin(const std::string& text) {
    ASSERT_EQ(::write(stdin_, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  }

  int wait_exit() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    reaped_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  bool fill(SteadyClock::time_point deadline) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - SteadyClock::now()).count();
    if (left <= 0) return false;
    pollfd p{stdout_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
    char buf[4096];
    ssize_t n = ::read(stdout_, buf, sizeof buf);
    if (n <= 0) return false;
    buffer_.append(buf, static_cast<std::size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int stdin_ = -1;
  int stdout_ = -1;
  bool reaped_ = false;
  std::string buffer_;
  std::vector<std::string> lines_;
};

// Readiness as the kernel sees it: a target that printed "ready" may still be in write().
// True once the main thread has spent 50 ms on a CPU in user mode (it is spinning).
bool wait_until_running(pid_t pid) {
  const auto until = SteadyClock::now() + std::chrono::seconds(10);
  while (SteadyClock::now() < until) {
    std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    std::size_t paren = stat.rfind(')');
    if (paren != std::string::npos) {
      std::istringstream fields(stat.substr(paren + 2));
      std::string f;
      for (int i = 3; i <= 14 && fields >> f; ++i) {
        if (i == 14 && std::stol(f) * 1000 / ::sysconf(_SC_CLK_TCK) >= 50) return true;
      }
    }
    std::this_thread::yield();
  }
  return false;
}

// True once the main thread is blocked in system call `nr` (from /proc/PID/syscall).
bool wait_until_in_syscall(pid_t pid, long nr) {
  const auto until = SteadyClock::now() + std::chrono::seconds(10);
  const std::string prefix = std::to_string(nr) + " ";
  while (SteadyClock::now() < until) {
    if (read_file("/proc/" + std::to_string(pid) + "/syscall").rfind(prefix, 0) == 0) return true;
    std::this_thread::yield();
  }
  return false;
}

class InjectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/inject-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    out_ = dir_ + "/probe.out";
  }
  void TearDown() override {
    ::unlink(out_.c_str());
    ::rmdir(dir_.c_str());
  }

  std::vector<std::string> probe_env() const { return {"INJECT_PROBE_OUT=" + out_}; }

  std::unique_ptr<Child> native(const std::vector<std::string>& args, std::vector<std::string> env = {}) {
    std::vector<std::string> argv{INJECT_TARGET_EXE};
    argv.insert(argv.end(), args.begin(), args.end());
    for (const std::string& e : probe_env()) env.push_back(e);
    auto child = std::make_unique<Child>(argv, env);
    EXPECT_TRUE(child->wait_for_line("ready")) << "target did not start";
    return child;
  }

  std::unique_ptr<Child> python(const std::string& exe, const std::string& code) {
    auto child = std::make_unique<Child>(std::vector<std::string>{exe, "-c", code}, probe_env());
    EXPECT_TRUE(child->wait_for_line("ready")) << exe << " did not start";
    return child;
  }

  // Injects the probe and checks it ran in `pid`.
  InjectReport inject_probe(pid_t pid) {
    Result<InjectReport> r = inject_library(pid, INJECT_PROBE_LIB);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    if (!r) return {};
    EXPECT_NE(r->handle, 0u);
    EXPECT_GE(r->attempts, 1);
    EXPECT_FALSE(r->how.empty());
    EXPECT_EQ(read_file(out_), "loaded " + std::to_string(pid) + "\n");
    Result<bool> mapped = has_mapped_library(pid, "libinject_probe.so");
    EXPECT_TRUE(mapped.is_ok() && *mapped);
    return *r;
  }

  std::string dir_;
  std::string out_;
};

// --- symbols ---------------------------------------------------------------------------------

TEST_F(InjectTest, FindsDlopenAtTheAddressTheLoaderGives) {
  // In our own process the loader's answer is known: the ELF lookup must agree with it.
  Result<std::uintptr_t> mine = find_remote_symbol(::getpid(), "dlopen");
  ASSERT_TRUE(mine.is_ok()) << mine.status().to_string();
  EXPECT_EQ(*mine, reinterpret_cast<std::uintptr_t>(::dlsym(RTLD_DEFAULT, "dlopen")));
  Result<std::uintptr_t> getpid_addr = find_remote_symbol(::getpid(), "getpid");
  ASSERT_TRUE(getpid_addr.is_ok());
  EXPECT_EQ(*getpid_addr, reinterpret_cast<std::uintptr_t>(::dlsym(RTLD_DEFAULT, "getpid")));
}

TEST_F(InjectTest, SeveralSymbolsOfOneObjectInOnePass) {
  // The object that defines getpid (the C library), read once for three names.
  Result<std::vector<Mapping>> maps = read_maps(::getpid());
  ASSERT_TRUE(maps.is_ok()) << maps.status().to_string();
  std::string libc;
  for (const std::string& object : mapped_files(*maps)) {
    if (resolve_symbol_in(::getpid(), *maps, object, "getpid").is_ok()) {
      libc = object;
      break;
    }
  }
  ASSERT_FALSE(libc.empty());
  Result<std::map<std::string, std::uintptr_t>> found =
      resolve_symbols_in(::getpid(), *maps, libc, {"getpid", "getppid", "no_such_symbol_anywhere_42"});
  ASSERT_TRUE(found.is_ok()) << found.status().to_string();
  EXPECT_EQ(found->size(), 2u);
  EXPECT_EQ(found->at("getpid"), reinterpret_cast<std::uintptr_t>(::dlsym(RTLD_DEFAULT, "getpid")));
  EXPECT_EQ(found->at("getppid"), reinterpret_cast<std::uintptr_t>(::dlsym(RTLD_DEFAULT, "getppid")));
  EXPECT_EQ(resolve_symbols_in(::getpid(), *maps, "/no/such/object.so", {"getpid"}).status().code(),
            Code::kNotFound);
  // A file that is not ELF is an error, not a file without the symbol.
  EXPECT_EQ(find_elf_dynamic_symbols("/proc/self/status", {"getpid"}).status().code(), Code::kInternal);
  EXPECT_EQ(find_elf_dynamic_symbols("/no/such/file", {"getpid"}).status().code(), Code::kUnavailable);
}

TEST_F(InjectTest, MissingSymbolIsNotFound) {
  auto child = native({"read"});
  Result<std::uintptr_t> r = find_remote_symbol(child->pid(), "no_such_symbol_anywhere_42");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_NE(r.status().message().find("no_such_symbol_anywhere_42"), std::string::npos);
}

TEST_F(InjectTest, PythonIsRecognisedByPyIsInitialized) {
  for (const std::string& exe : pythons()) {
    auto child = python(exe, "import sys; print('ready', flush=True); sys.stdin.read()");
    Result<std::uintptr_t> r = find_remote_symbol(child->pid(), "Py_IsInitialized");
    EXPECT_TRUE(r.is_ok()) << exe << ": " << r.status().to_string();
  }
  auto native_child = native({"read"});
  EXPECT_FALSE(find_remote_symbol(native_child->pid(), "Py_IsInitialized").is_ok());
}

// --- native targets --------------------------------------------------------------------------

TEST_F(InjectTest, SleepingTargetSleepsOnUnchanged) {
  const auto start = SteadyClock::now();
  auto child = native({"sleep", "1500"});
  Result<bool> before = has_mapped_library(child->pid(), "libinject_probe.so");
  ASSERT_TRUE(before.is_ok());
  EXPECT_FALSE(*before);
  ASSERT_TRUE(wait_until_in_syscall(child->pid(), SYS_clock_nanosleep));
  InjectReport r = inject_probe(child->pid());
  EXPECT_EQ(r.tid, child->pid());
  EXPECT_NE(r.how.find("nanosleep"), std::string::npos) << r.how;
  // nanosleep was restarted by the kernel, not cut short with EINTR.
  EXPECT_EQ(child->read_rest(), "slept rc=0 errno=0\nresult 499500\n");
  EXPECT_GE(SteadyClock::now() - start, milliseconds(1500));
  EXPECT_EQ(child->wait_exit(), 0);
}

TEST_F(InjectTest, TargetBlockedInReadStillReads) {
  auto child = native({"read"});
  ASSERT_TRUE(wait_until_in_syscall(child->pid(), SYS_read));
  InjectReport r = inject_probe(child->pid());
  EXPECT_NE(r.how.find("read"), std::string::npos) << r.how;
  child->write_stdin("hello\n");
  EXPECT_EQ(child->read_rest(), "read rc=6 errno=0 data=hello\n");
  EXPECT_EQ(child->wait_exit(), 0);
}

TEST_F(InjectTest, SpinningTargetIsBorrowedInItsExecutable) {
  auto child = native({"spin"});
  ASSERT_TRUE(wait_until_running(child->pid()));
  InjectReport r = inject_probe(child->pid());
  EXPECT_NE(r.how.find("running in inject_target"), std::string::npos) << r.how;
  // Still spinning (alive, on a CPU) afterwards.
  EXPECT_EQ(::kill(child->pid(), 0), 0);
}

TEST_F(InjectTest, ManyThreadsTargetKeepsWorking) {
  auto child = native({"threads", "100"});
  inject_probe(child->pid());
  child->write_stdin("after\n");
  EXPECT_EQ(child->read_rest(), "read rc=6 errno=0 data=after\n");
}

TEST_F(InjectTest, SignalsDuringTheCallAreDeliveredAfterwards) {
  auto child = native({"signals"}, {"INJECT_PROBE_DELAY_MS=400"});
  const pid_t pid = child->pid();
  auto injected = std::async(std::launch::async, [pid] { return inject_library(pid, INJECT_PROBE_LIB); });
  // The constructor writes its line first, then sleeps 400 ms inside the call: signal then.
  const auto until = SteadyClock::now() + std::chrono::seconds(10);
  while (read_file(out_).empty() && SteadyClock::now() < until) {
    std::this_thread::sleep_for(milliseconds(1));  // polling a file the target writes
  }
  ASSERT_FALSE(read_file(out_).empty());
  ASSERT_EQ(::kill(pid, SIGUSR1), 0);
  Result<InjectReport> r = injected.get();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  child->write_stdin("x\n");
  EXPECT_EQ(child->read_rest(), "read rc=2 errno=0 data=x\nusr1=1\n");
}

// --- lock waits: judged by the whole stack ---------------------------------------------------

// True once the main thread is blocked in futex (a lock or condition wait).
bool wait_until_in_futex(pid_t pid) { return wait_until_in_syscall(pid, SYS_futex); }

TEST_F(InjectTest, LockWaitIsNotBorrowedWithoutAStackReader) {
  auto child = native({"condwait", "60000"});
  ASSERT_TRUE(wait_until_in_futex(child->pid()));
  InjectOptions options;
  options.deadline = milliseconds(200);
  Result<InjectReport> r = inject_library(child->pid(), INJECT_PROBE_LIB, options);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), Code::kTimeout);
  // Each thread is listed with its reason.
  EXPECT_NE(r.status().message().find("thread " + std::to_string(child->pid()) +
                                      " \"inject_target\": blocked in futex"),
            std::string::npos)
      << r.status().message();
  EXPECT_EQ(read_file(out_), "");
}

TEST_F(InjectTest, LockWaitIsBorrowedWhenItsStackIsSafe) {
  const auto start = SteadyClock::now();
  auto child = native({"condwait", "1500"});
  ASSERT_TRUE(wait_until_in_futex(child->pid()));
  Result<std::unique_ptr<StackReader>> stacks = native::open_stack_reader(child->pid());
  ASSERT_TRUE(stacks.is_ok()) << stacks.status().to_string();
  InjectOptions options;
  options.stacks = stacks->get();
  options.deadline = milliseconds(2000);
  Result<InjectReport> r = inject_library(child->pid(), INJECT_PROBE_LIB, options);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_NE(r->how.find("blocked in futex (pthread_cond_timedwait called from inject_target)"),
            std::string::npos)
      << r->how;
  EXPECT_EQ(read_file(out_), "loaded " + std::to_string(child->pid()) + "\n");
  // The wait goes on to its timeout: the interruption was not a wakeup the program could see.
  EXPECT_EQ(child->read_rest(), "cond rc=110\n");
  EXPECT_GE(SteadyClock::now() - start, milliseconds(1500));
  EXPECT_EQ(child->wait_exit(), 0);
}

TEST_F(InjectTest, LockWaitUnderTheLoadersLockIsRefused) {
  auto child = native({"iterate"});
  ASSERT_TRUE(wait_until_in_futex(child->pid()));
  Result<std::unique_ptr<StackReader>> stacks = native::open_stack_reader(child->pid());
  ASSERT_TRUE(stacks.is_ok()) << stacks.status().to_string();
  InjectOptions options;
  options.stacks = stacks->get();
  options.deadline = milliseconds(300);
  Result<InjectReport> r = inject_library(child->pid(), INJECT_PROBE_LIB, options);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), Code::kTimeout);
  EXPECT_NE(r.status().message().find("dl_iterate_phdr is on its stack"), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("the target was not changed"), std::string::npos);
  EXPECT_EQ(read_file(out_), "");
  Result<bool> mapped = has_mapped_library(child->pid(), "libinject_probe.so");
  ASSERT_TRUE(mapped.is_ok());
  EXPECT_FALSE(*mapped);
}

TEST_F(InjectTest, SecondInjectReturnsTheSameHandle) {
  auto child = native({"read"});
  InjectReport first = inject_probe(child->pid());
  Result<InjectReport> second = inject_library(child->pid(), INJECT_PROBE_LIB);
  ASSERT_TRUE(second.is_ok()) << second.status().to_string();
  EXPECT_EQ(second->handle, first.handle);
}

TEST_F(InjectTest, TwentyFreshProcessesInARow) {
  for (int i = 0; i < 20; ++i) {
    ::unlink(out_.c_str());
    auto child = native({i % 2 == 0 ? "read" : "spin"});
    inject_probe(child->pid());
    if (HasFailure()) FAIL() << "failed at process " << i;
  }
}

// --- Python targets --------------------------------------------------------------------------

TEST_F(InjectTest, PythonSleepingInTimeSleep) {
  ASSERT_FALSE(pythons().empty());
  for (const std::string& exe : pythons()) {
    SCOPED_TRACE(exe);
    ::unlink(out_.c_str());
    auto child = python(exe,
                        "import time\n"
                        "print('ready', flush=True)\n"
                        "t = time.monotonic(); time.sleep(1.0)\n"
                        "print('result', sum(range(1000)), time.monotonic() - t >= 1.0, flush=True)\n");
    ASSERT_TRUE(wait_until_in_syscall(child->pid(), SYS_clock_nanosleep));
    const auto start = SteadyClock::now();
    InjectReport r = inject_probe(child->pid());
    const auto took = std::chrono::duration<double, std::milli>(SteadyClock::now() - start).count();
    std::printf("[ timing ] inject into %s sleeping in time.sleep: %.2f ms (%s)\n", exe.c_str(), took,
                r.how.c_str());
    EXPECT_NE(r.how.find("clock_nanosleep"), std::string::npos) << r.how;
    EXPECT_EQ(child->read_rest(), "result 499500 True\n");
    EXPECT_EQ(child->wait_exit(), 0);
  }
}

TEST_F(InjectTest, PythonSpinningInPurePython) {
  for (const std::string& exe : pythons()) {
    SCOPED_TRACE(exe);
    ::unlink(out_.c_str());
    auto child = python(exe, "x = 0\nprint('ready', flush=True)\nwhile True:\n    x += 1\n");
    ASSERT_TRUE(wait_until_running(child->pid()));
    InjectReport r = inject_probe(child->pid());
    // Startup's CPU time counts too, so the thread may still be returning from the write of
    // "ready"; either way it was not parked in a blocking call.
    EXPECT_TRUE(r.how.find("running in") != std::string::npos || r.how.find("returning from") != std::string::npos)
        << r.how;
    EXPECT_EQ(::kill(child->pid(), 0), 0);
  }
}

TEST_F(InjectTest, PythonBlockedOnStdinStillReads) {
  for (const std::string& exe : pythons()) {
    SCOPED_TRACE(exe);
    ::unlink(out_.c_str());
    auto child = python(exe,
                        "import sys\nprint('ready', flush=True)\n"
                        "line = sys.stdin.readline()\nprint('got', line.strip(), flush=True)\n");
    inject_probe(child->pid());
    child->write_stdin("42 apples\n");
    EXPECT_EQ(child->read_rest(), "got 42 apples\n");
    EXPECT_EQ(child->wait_exit(), 0);
  }
}

TEST_F(InjectTest, PythonWithAHundredThreads) {
  for (const std::string& exe : pythons()) {
    SCOPED_TRACE(exe);
    ::unlink(out_.c_str());
    auto child = python(exe,
                        "import sys, threading, time\n"
                        "stop = threading.Event()\n"
                        "def sleeper():\n"
                        "    while not stop.is_set(): time.sleep(0.01)\n"
                        "def waiter(): stop.wait()\n"
                        "ts = [threading.Thread(target=sleeper if i % 2 else waiter, daemon=True) for i in range(100)]\n"
                        "[t.start() for t in ts]\n"
                        "print('ready', flush=True)\n"
                        "line = sys.stdin.readline(); stop.set(); [t.join() for t in ts]\n"
                        "print('got', line.strip(), threading.active_count(), flush=True)\n");
    inject_probe(child->pid());
    child->write_stdin("done\n");
    EXPECT_EQ(child->read_rest(), "got done 1\n");
    EXPECT_EQ(child->wait_exit(), 0);
  }
}

// --- errors ----------------------------------------------------------------------------------

TEST_F(InjectTest, DeadPid) {
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(pid, nullptr, 0), pid);
  Result<InjectReport> r = inject_library(pid, INJECT_PROBE_LIB);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_EQ(r.status().message(), "no process " + std::to_string(pid));
}

TEST_F(InjectTest, Zombie) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  // Not reaped yet: a zombie once it has exited; waitid(WNOWAIT) says when, without reaping.
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT), 0);
  Result<InjectReport> r = inject_library(pid, INJECT_PROBE_LIB);
  ::waitpid(pid, nullptr, 0);
  ::close(ready[0]);
  ::close(ready[1]);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().message(), "process " + std::to_string(pid) + " is a zombie");
}

TEST_F(InjectTest, LibraryMissingInTarget) {
  auto child = native({"read"});
  Result<InjectReport> r = inject_library(child->pid(), "/nonexistent/libnothing.so");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_NE(r.status().message().find("does not exist"), std::string::npos) << r.status().message();
  EXPECT_EQ(::kill(child->pid(), 0), 0);
}

TEST_F(InjectTest, DlopenFailureCarriesDlerror) {
  auto child = native({"read"});
  Result<InjectReport> r = inject_library(child->pid(), INJECT_BAD_LIB);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("undefined symbol: inject_probe_symbol_that_does_not_exist"),
            std::string::npos)
      << r.status().message();
  child->write_stdin("ok\n");
  EXPECT_EQ(child->read_rest(), "read rc=3 errno=0 data=ok\n");
}

TEST_F(InjectTest, AlreadyTracedBySomeoneElse) {
  auto child = native({"read"});
  const pid_t target = child->pid();
  int sync[2];
  ASSERT_EQ(::pipe(sync), 0);
  pid_t debugger = ::fork();
  if (debugger == 0) {
    char ok = ::ptrace(PTRACE_SEIZE, target, nullptr, nullptr) == 0 ? 'y' : 'n';
    if (::write(sync[1], &ok, 1) != 1) ::_exit(1);
    ::pause();
    ::_exit(0);
  }
  char ok = 0;
  ASSERT_EQ(::read(sync[0], &ok, 1), 1);
  ASSERT_EQ(ok, 'y');
  Result<InjectReport> r = inject_library(target, INJECT_PROBE_LIB);
  ::kill(debugger, SIGKILL);
  ::waitpid(debugger, nullptr, 0);
  ::close(sync[0]);
  ::close(sync[1]);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("already traced by pid " + std::to_string(debugger)),
            std::string::npos)
      << r.status().message();
}

TEST_F(InjectTest, PermissionDeniedExplainsWhy) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to drop to another uid";
  auto child = native({"read"});
  const pid_t target = child->pid();
  int result[2];
  ASSERT_EQ(::pipe(result), 0);
  pid_t helper = ::fork();
  if (helper == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(2);
    Result<InjectReport> r = inject_library(target, INJECT_PROBE_LIB);
    std::string text = r.is_ok() ? "ok" : std::to_string(static_cast<int>(r.status().code())) + " " +
                                              r.status().message();
    if (::write(result[1], text.data(), text.size()) < 0) ::_exit(1);
    ::_exit(0);
  }
  ::close(result[1]);
  std::string text;
  char buf[1024];
  ssize_t n;
  while ((n = ::read(result[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<std::size_t>(n));
  ::close(result[0]);
  ::waitpid(helper, nullptr, 0);
  EXPECT_EQ(text.rfind(std::to_string(static_cast<int>(Code::kPermissionDenied)) + " ", 0), 0u) << text;
  EXPECT_NE(text.find("CAP_SYS_PTRACE"), std::string::npos) << text;
  EXPECT_NE(text.find("ptrace_scope"), std::string::npos) << text;
  EXPECT_NE(text.find("see docs/attach.md"), std::string::npos) << text;
}

TEST_F(InjectTest, RelativePathIsRefused) {
  auto child = native({"read"});
  Result<InjectReport> r = inject_library(child->pid(), "libinject_probe.so");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
}

// --- the stack policy, on stacks made up for it -----------------------------------------------

PlacedFrame in(ObjectKind kind, const std::string& object, const std::string& function = "") {
  PlacedFrame f;
  f.pc = 0x1000;
  f.mapped = true;
  f.kind = kind;
  f.object = object;
  f.function = function;
  return f;
}

// A Python thread waiting for a threading.Lock: libc's wait, libpython, the thread's start.
std::vector<PlacedFrame> python_lock_wait() {
  return {in(ObjectKind::kLibc, "libc.so.6"),
          in(ObjectKind::kLibc, "libc.so.6"),
          in(ObjectKind::kLibpython, "libpython3.11.so.1.0", "PyThread_acquire_lock_timed"),
          in(ObjectKind::kLibpython, "libpython3.11.so.1.0"),
          in(ObjectKind::kLibc, "libc.so.6", "start_thread"),
          in(ObjectKind::kLibc, "libc.so.6", "clone3")};
}

TEST(StackPolicy, PlainNamesJoinGlibcAliases) {
  EXPECT_EQ(plain_function_name("___pthread_cond_timedwait64"), "pthread_cond_timedwait");
  EXPECT_EQ(plain_function_name("__GI___pthread_mutex_lock"), "pthread_mutex_lock");
  EXPECT_EQ(plain_function_name("__new_sem_wait_slow64.constprop.0"), "new_sem_wait_slow");
  EXPECT_EQ(plain_function_name("__clock_nanosleep_time64"), "clock_nanosleep");
  EXPECT_EQ(plain_function_name("malloc@@GLIBC_2.2.5"), "malloc");
  EXPECT_EQ(plain_function_name("pread64"), "pread");
  EXPECT_EQ(plain_function_name(""), "");
}

TEST(StackPolicy, WaitsCalledFromTheProgramAreSafe) {
  EXPECT_EQ(judge_stack(python_lock_wait(), true, Parked::kLockWait, "sem_clockwait"), "");
  EXPECT_EQ(judge_stack(python_lock_wait(), true, Parked::kLockWait, "__pthread_cond_timedwait64"), "");
  EXPECT_EQ(judge_stack(python_lock_wait(), true, Parked::kLockWait, "pthread_mutex_lock"), "");
  // libgomp's barrier makes the futex call itself: no C library frame on top.
  std::vector<PlacedFrame> gomp{in(ObjectKind::kOther, "libgomp.so.1"),
                                in(ObjectKind::kOther, "libgomp.so.1"),
                                in(ObjectKind::kLibc, "libc.so.6", "start_thread")};
  EXPECT_EQ(judge_stack(gomp, true, Parked::kLockWait, ""), "");
  // libstdc++'s condition_variable is the program's, not the unwinder's.
  std::vector<PlacedFrame> cv = python_lock_wait();
  cv[2] =
      in(ObjectKind::kRuntime, "libstdc++.so.6", "_ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE");
  EXPECT_EQ(judge_stack(cv, true, Parked::kLockWait, "pthread_cond_wait"), "");
}

TEST(StackPolicy, WaitsThatMayHoldALockDlopenNeedsAreRefused) {
  EXPECT_NE(judge_stack(python_lock_wait(), true, Parked::kLockWait, "malloc").find("malloc"),
            std::string::npos);
  EXPECT_NE(judge_stack(python_lock_wait(), true, Parked::kLockWait, "").find("could not be decoded"),
            std::string::npos);
  EXPECT_NE(judge_stack(python_lock_wait(), false, Parked::kLockWait, "sem_wait").find("unwound to the end"),
            std::string::npos);

  std::vector<PlacedFrame> stack = python_lock_wait();
  stack.insert(stack.begin() + 4, in(ObjectKind::kLibc, "libc.so.6", "dl_iterate_phdr"));
  EXPECT_NE(judge_stack(stack, true, Parked::kLockWait, "sem_wait").find("dl_iterate_phdr is on its stack"),
            std::string::npos);
  // The same frame under a running thread or a read() is refused too.
  EXPECT_NE(judge_stack(stack, true, Parked::kRunning, "").find("dl_iterate_phdr"), std::string::npos);
  EXPECT_NE(judge_stack(stack, true, Parked::kSyscall, "").find("dl_iterate_phdr"), std::string::npos);

  stack = python_lock_wait();
  stack.insert(stack.begin() + 3, in(ObjectKind::kLibc, "libc.so.6"));  // unnamed, mid-stack
  EXPECT_NE(judge_stack(stack, true, Parked::kLockWait, "sem_wait").find("unnamed C library function"),
            std::string::npos);
  EXPECT_EQ(judge_stack(stack, true, Parked::kSyscall, ""), "");

  stack = python_lock_wait();
  stack[3].after_signal = true;
  EXPECT_NE(judge_stack(stack, true, Parked::kLockWait, "sem_wait").find("signal handler"),
            std::string::npos);

  stack = python_lock_wait();
  stack.insert(stack.begin() + 3, in(ObjectKind::kLoader, "ld-linux-x86-64.so.2", "_dl_catch_exception"));
  EXPECT_NE(judge_stack(stack, true, Parked::kLockWait, "sem_wait").find("dynamic loader"),
            std::string::npos);

  stack = python_lock_wait();
  stack.insert(stack.begin() + 3, in(ObjectKind::kRuntime, "libgcc_s.so.1", "_Unwind_Find_FDE"));
  EXPECT_NE(judge_stack(stack, true, Parked::kLockWait, "sem_wait").find("unwinding"), std::string::npos);

  stack = python_lock_wait();
  stack.insert(stack.begin() + 2, in(ObjectKind::kAllocator, "libjemalloc.so.2"));
  EXPECT_NE(judge_stack(stack, true, Parked::kLockWait, "").find("libjemalloc"), std::string::npos);

  stack = python_lock_wait();
  stack.insert(stack.begin() + 3,
               in(ObjectKind::kLibc, "libc.so.6", "malloc_stats"));  // arena locks, then write()
  EXPECT_NE(judge_stack(stack, true, Parked::kSyscall, "").find("malloc_stats"), std::string::npos);

  stack = python_lock_wait();
  PlacedFrame jit;  // code outside any file: unwound without CFI, frames may have been skipped
  jit.pc = 0x7f0000001000;
  stack.insert(stack.begin() + 3, jit);
  EXPECT_NE(judge_stack(stack, true, Parked::kLockWait, "sem_wait").find("outside any file"),
            std::string::npos);
  stack[3].object = "[vdso]";
  EXPECT_EQ(judge_stack(stack, true, Parked::kLockWait, "sem_wait"), "");

  std::vector<PlacedFrame> only_libc{in(ObjectKind::kLibc, "libc.so.6"), in(ObjectKind::kLibc, "libc.so.6")};
  EXPECT_NE(judge_stack(only_libc, true, Parked::kLockWait, ""), "");
  EXPECT_NE(judge_stack({}, true, Parked::kRunning, ""), "");
}

}  // namespace
}  // namespace probing::inject
