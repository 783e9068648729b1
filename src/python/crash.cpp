#include "python/crash.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>

#include "core/log.h"
#include "core/settings.h"
#include "layout/memory.h"
#include "python/capi.h"
#include "python/gil_free.h"

// glibc before 2.34 names no SYS_close_range (Linux 5.9); its number is 436 on every architecture.
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

namespace probing::python {
namespace {

constexpr int kSignals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
constexpr double kChildTimeoutS = 5;
constexpr int kMaxNativeFrames = 256;

// What was installed before ours, per signal; read by the handler.
struct sigaction g_previous[NSIG];
std::atomic<bool> g_enabled{false};
// Ours was put in place for this signal and not taken out since (it may be under another now).
std::atomic<bool> g_installed[NSIG];
// 0: no report yet; 1: a thread writes one; 2: written (or given up).
std::atomic<int> g_report{0};
std::atomic<pid_t> g_writer{0};  // the thread that writes it

// A number's decimal digits, without the heap (snprintf may take locks).
struct Decimal {
  explicit Decimal(long v) {
    char digits[24];
    int n = 0;
    unsigned long u = v < 0 ? 0UL - static_cast<unsigned long>(v) : static_cast<unsigned long>(v);
    do {
      digits[n++] = static_cast<char>('0' + u % 10);
      u /= 10;
    } while (u != 0);
    if (v < 0) digits[n++] = '-';
    for (int i = 0; i < n; ++i) text[i] = digits[n - 1 - i];
    text[n] = '\0';
  }
  char text[24];
};

// A fixed buffer written out with write(2): formatting that is safe in a signal handler.
class Out {
 public:
  explicit Out(int fd) : fd_(fd) {}
  ~Out() { flush(); }
  Out(const Out&) = delete;
  Out& operator=(const Out&) = delete;

  Out& str(const char* s) {
    while (*s != '\0') put(*s++);
    return *this;
  }
  Out& dec(long v) { return str(Decimal(v).text); }
  Out& hex(unsigned long v) {
    str("0x");
    for (int shift = 60; shift >= 0; shift -= 4) put("0123456789abcdef"[(v >> shift) & 0xf]);
    return *this;
  }
  void flush() {
    size_t done = 0;
    while (done < n_) {
      const ssize_t w = ::write(fd_, buf_ + done, n_ - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) break;
      done += static_cast<size_t>(w);
    }
    n_ = 0;
  }

 private:
  void put(char c) {
    if (n_ == sizeof(buf_)) flush();
    buf_[n_++] = c;
  }
  int fd_;
  char buf_[512];
  size_t n_ = 0;
};

const char* signal_name(int sig) {
  switch (sig) {
    case SIGSEGV:
      return "SIGSEGV";
    case SIGBUS:
      return "SIGBUS";
    case SIGILL:
      return "SIGILL";
    case SIGFPE:
      return "SIGFPE";
    case SIGABRT:
      return "SIGABRT";
    default:
      return "signal";
  }
}

// What si_code says, in the words of sigaction(2); "" when it adds nothing.
const char* code_name(int sig, int code) {
  if (code == SI_USER) return "sent by kill";
  if (code == SI_TKILL) return sig == SIGABRT ? "abort() or raise()" : "sent by tgkill or raise()";
  if (code <= 0) return "";
  switch (sig) {
    case SIGSEGV:
      return code == SEGV_MAPERR ? "address not mapped" : code == SEGV_ACCERR ? "no permission" : "";
    case SIGBUS:
      return code == BUS_ADRALN   ? "misaligned address"
             : code == BUS_ADRERR ? "no such physical address"
             : code == BUS_OBJERR ? "object error (a truncated mapped file)"
                                  : "";
    case SIGFPE:
      return code == FPE_INTDIV ? "integer divide by zero" : code == FPE_INTOVF ? "integer overflow" : "";
    case SIGILL:
      return code == ILL_ILLOPC ? "illegal opcode" : "";
    default:
      return "";
  }
}

// `s` with control characters (a newline in a command line or a thread's name) as '?', in place:
// the report is made of lines.
char* printable(char* s) {
  for (char* c = s; *c != '\0'; ++c) {
    if (static_cast<unsigned char>(*c) < 0x20 || *c == 0x7f) *c = '?';
  }
  return s;
}

// A small file of /proc read whole into buf (NUL-terminated), without the heap; its length.
size_t read_small(const char* path, char* buf, size_t size) {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return buf[0] = '\0', 0;
  size_t n = 0;
  while (n + 1 < size) {
    const ssize_t r = ::read(fd, buf + n, size - 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += static_cast<size_t>(r);
  }
  ::close(fd);
  buf[n] = '\0';
  return n;
}

// Appends text and decimals into a fixed buffer, without the heap.
class Text {
 public:
  Text(char* buf, size_t size) : buf_(buf), size_(size) { buf_[0] = '\0'; }
  Text& str(const char* s) {
    while (*s != '\0' && n_ + 1 < size_) buf_[n_++] = *s++;
    buf_[n_] = '\0';
    return *this;
  }
  Text& dec(long v) { return str(Decimal(v).text); }

 private:
  char* buf_;
  size_t size_;
  size_t n_ = 0;
};

// The kernel's name of thread `tid` of process `pid`.
void comm_of(long pid, long tid, char* buf, size_t size) {
  char path[64];
  Text(path, sizeof(path)).str("/proc/").dec(pid).str("/task/").dec(tid).str("/comm");
  const size_t n = read_small(path, buf, size);
  if (n > 0 && buf[n - 1] == '\n') buf[n - 1] = '\0';
}

// Python text from the copy: a control character (a newline in a thread's or a file's name)
// would break the report's lines.
std::string one_line(std::string s) {
  printable(s.data());
  return s;
}

// What the copy reads; it has one thread, and globals outlive the switch to its own stack.
struct CopyJob {
  int fd = -1;
  pid_t parent = 0;
  pid_t tid = 0;
};
CopyJob g_copy;

void write_all(int fd, const std::string& text) {
  for (size_t done = 0; done < text.size();) {
    const ssize_t w = ::write(fd, text.data() + done, text.size() - done);
    if (w <= 0) break;
    done += static_cast<size_t>(w);
  }
}

// Every Python stack, run on a stack of the copy's own: the crashed thread may be on a small
// alternate signal stack.
void report_python_stacks() noexcept {
  try {
    std::string text = "--- python\n";
    if (Result<const CApi*> api = load_capi(); api.is_ok()) {
      Result<layout::PythonVersion> v = interpreter_version(**api);
      if (v.is_ok()) text += "version " + v->text + "\n";
    }
    layout::GilFreeLimits limits;
    limits.max_frames = 256;
    Result<layout::GilFreeSnapshot> snap = read_stacks_gil_free(limits);
    if (!snap.is_ok()) {
      text += "note the Python stacks could not be read: " + one_line(snap.status().message()) + "\n";
    } else {
      for (const layout::RawThread& t : snap->threads) {
        char comm[64] = "";
        if (t.native_thread_id != 0) comm_of(g_copy.parent, t.native_thread_id, comm, sizeof(comm));
        text += "thread " + std::to_string(t.thread_id) + " tid " + std::to_string(t.native_thread_id) +
                (t.holds_gil ? " gil" : "") + (t.native_thread_id == g_copy.tid ? " crashed" : "") +
                " name " + one_line(comm) + "\n";
        for (const layout::RawFrame& f : t.frames) {
          text += "  " + std::to_string(f.lineno) + " " + one_line(f.func) + " " + one_line(f.file) + "\n";
        }
        if (t.truncated) text += "  ...\n";
        if (!t.error.empty()) text += "  ! " + one_line(t.error) + "\n";
      }
    }
    write_all(g_copy.fd, text);
  } catch (...) {
    write_all(g_copy.fd, "note the Python stacks could not be read: out of memory\n");
  }
}

// The copy's part: the crashed thread's native stack (the copy is that thread, inside the handler,
// so its unwinding goes through the signal frame to the faulting code) and every Python stack.
// The copy is kept from outliving the process, from dumping core, from holding the process's
// files and sockets, and from ever returning into its code.
[[noreturn]] void report_stacks(int fd, unsigned long fault_pc, pid_t parent, pid_t tid) noexcept {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(1);
  ::prctl(PR_SET_DUMPABLE, 0);  // reading its own memory needs no dumpability
  if ((fd > 0 && ::syscall(SYS_close_range, 0U, static_cast<unsigned>(fd) - 1, 0U) != 0) ||
      ::syscall(SYS_close_range, static_cast<unsigned>(fd) + 1, ~0U, 0U) != 0) {
    for (int other = 0; other < 1024; ++other) {
      if (other != fd) ::close(other);
    }
  }
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGALRM, &dfl, nullptr);
  sigset_t alarm_only;
  sigemptyset(&alarm_only);
  sigaddset(&alarm_only, SIGALRM);
  ::sigprocmask(SIG_UNBLOCK, &alarm_only, nullptr);
  ::alarm(static_cast<unsigned>(kChildTimeoutS) + 1);
  layout::refresh_self_pid();  // the reader reads this copy's memory, which is the crash's
  {
    Out out(fd);
    void* pcs[kMaxNativeFrames];
    const int n = ::backtrace(pcs, kMaxNativeFrames);
    // Frames from the one that faulted on: the handler's own are left out.
    int first = 0;
    for (int i = 0; i < n; ++i) {
      if (reinterpret_cast<unsigned long>(pcs[i]) == fault_pc) {
        first = i;
        break;
      }
    }
    out.str("--- native\n");
    for (int i = first; i < n; ++i) out.hex(reinterpret_cast<unsigned long>(pcs[i])).str("\n");
  }
  g_copy = {fd, parent, tid};
  constexpr size_t kStack = 1 << 20;
  void* stack = ::mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ucontext_t here{}, there{};
  if (stack != MAP_FAILED && ::getcontext(&there) == 0) {
    there.uc_stack.ss_sp = stack;
    there.uc_stack.ss_size = kStack;
    there.uc_link = &here;
    ::makecontext(&there, report_python_stacks, 0);
    ::swapcontext(&here, &there);
  } else {
    report_python_stacks();
  }
  ::_exit(0);
}

// Runs report_stacks in a bare copy of the process and waits for it, at most kChildTimeoutS.
void copy_and_wait(Out& out, int fd, unsigned long fault_pc, pid_t pid, pid_t tid) {
  out.flush();
  // No exit signal: the program's SIGCHLD handler never hears of the copy (and cannot reap it).
  // Untraced: a debugger that follows clones (gdb, strace -f) does not take it for a thread.
  const long child =
      ::syscall(SYS_clone, static_cast<long>(CLONE_UNTRACED), nullptr, nullptr, nullptr, nullptr);
  if (child == 0) report_stacks(fd, fault_pc, pid, tid);
  if (child < 0) {
    out.str("--- note the stacks were not read: clone failed (errno ").dec(errno).str(")\n");
    return;
  }
  const timespec tick{0, 10 * 1000 * 1000};
  bool killed = false;
  for (int waited = 0;; ++waited) {
    int status = 0;
    const pid_t r = ::waitpid(static_cast<pid_t>(child), &status, __WALL | WNOHANG);
    if (r == child || (r < 0 && errno != EINTR)) break;
    if (!killed && waited * 0.01 >= kChildTimeoutS) {
      ::kill(static_cast<pid_t>(child), SIGKILL);
      killed = true;
      out.str("--- note the stacks took longer than ")
          .dec(static_cast<long>(kChildTimeoutS))
          .str(" s to read\n");
    }
    if (killed && waited * 0.01 >= kChildTimeoutS + 1) break;  // in an uninterruptible sleep: left
    ::nanosleep(&tick, nullptr);
  }
}

void write_report(int sig, const siginfo_t* info, const void* context) {
  const pid_t pid = static_cast<pid_t>(::syscall(SYS_getpid));
  const pid_t tid = static_cast<pid_t>(::syscall(SYS_gettid));
  char path[64];
  Text(path, sizeof(path)).str("/var/tmp/probing-").dec(pid).str(".crash");
  // An old report of this pid goes; a file someone else put here stays, and then none is written.
  ::unlink(path);
  const int fd = ::open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_APPEND, 0600);
  if (fd < 0) return;
  unsigned long fault_pc = 0;
#if defined(__x86_64__)
  if (context != nullptr) fault_pc = static_cast<const ucontext_t*>(context)->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
  if (context != nullptr) fault_pc = static_cast<const ucontext_t*>(context)->uc_mcontext.pc;
#endif
  {
    Out out(fd);
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    char buf[1024];
    out.str("probing crash report\n");
    out.str("pid ").dec(pid).str("\n");
    comm_of(pid, tid, buf, sizeof(buf));
    out.str("thread ").dec(tid).str(" ").str(printable(buf)).str("\n");
    out.str("signal ").dec(sig).str(" ").str(signal_name(sig)).str("\n");
    if (info != nullptr) {
      out.str("code ").dec(info->si_code).str(" ").str(code_name(sig, info->si_code)).str("\n");
      if (info->si_code > 0)
        out.str("address ").hex(reinterpret_cast<unsigned long>(info->si_addr)).str("\n");
      if (info->si_code <= 0) out.str("sender ").dec(info->si_pid).str("\n");
    }
    if (fault_pc != 0) out.str("pc ").hex(fault_pc).str("\n");
    const long ms = now.tv_nsec / 1000000;
    out.str("time ").dec(now.tv_sec).str(ms < 10 ? ".00" : ms < 100 ? ".0" : ".").dec(ms).str("\n");
    char cmdline[32];
    Text(cmdline, sizeof(cmdline)).str("/proc/").dec(pid).str("/cmdline");
    const size_t n = read_small(cmdline, buf, sizeof(buf));
    for (size_t i = 0; i + 1 < n; ++i) {
      if (buf[i] == '\0') buf[i] = ' ';
    }
    out.str("command ").str(printable(buf)).str("\n");
    copy_and_wait(out, fd, fault_pc, pid, tid);
    out.str("--- maps\n");
    out.flush();
    const int maps = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    for (ssize_t r; maps >= 0 && (r = ::read(maps, buf, sizeof(buf))) > 0;) {
      if (::write(fd, buf, static_cast<size_t>(r)) != r) break;
    }
    if (maps >= 0) ::close(maps);
    out.str("--- end\n");
  }
  ::close(fd);
  // One line on stderr, with SIGPIPE held back: a reader of stderr that has gone must not turn
  // the signal the process dies of into SIGPIPE.
  sigset_t pipe, mask, pending;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  ::sigpending(&pending);
  const bool was_pending = sigismember(&pending, SIGPIPE) == 1;
  ::pthread_sigmask(SIG_BLOCK, &pipe, &mask);
  {
    Out err(STDERR_FILENO);
    err.str("probing: ")
        .str(signal_name(sig))
        .str(" in thread ")
        .dec(tid)
        .str(": crash report in ")
        .str(path);
    err.str(" (probing crash-report ").dec(pid).str(")\n");
  }
  if (!was_pending && ::sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
    const timespec zero{0, 0};
    ::sigtimedwait(&pipe, nullptr, &zero);
  }
  ::pthread_sigmask(SIG_SETMASK, &mask, nullptr);
}

void on_fatal_signal(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  const pid_t me = static_cast<pid_t>(::syscall(SYS_gettid));
  if (g_enabled.load()) {
    int idle = 0;
    if (g_report.compare_exchange_strong(idle, 1)) {
      g_writer.store(me);
      write_report(sig, info, context);
      g_report.store(2);
    } else if (g_writer.load() != me) {
      // Another thread writes the report: the process ends when it is done, not before. (The
      // writer itself, reached by a second signal while it writes, goes on at once.)
      const timespec tick{0, 10 * 1000 * 1000};
      for (int i = 0; i < 1000 && g_report.load() == 1; ++i) ::nanosleep(&tick, nullptr);
    }
  }
  // What would have happened without the agent: the previous disposition, for this signal and
  // from now on, and the signal sent again: blocked while this runs, it arrives on return, with
  // the faulting context (a fault the kernel raised would happen again at the same instruction
  // too, but not every one with a positive si_code does).
  ::sigaction(sig, &g_previous[sig], nullptr);
  g_installed[sig].store(false);
  ::syscall(SYS_tgkill, ::syscall(SYS_getpid), me, sig);
  errno = saved_errno;
}

bool is_ours(const struct sigaction& sa) {
  return (sa.sa_flags & SA_SIGINFO) != 0 && sa.sa_sigaction == on_fatal_signal;
}

// Install and uninstall. Held across fork() by the forking thread (the atfork handlers of
// start_crash_capture), so that a forked child never starts with it held by a thread it has not
// got: the agent's housekeeping thread takes it every few seconds (capture_crashes_again).
std::mutex g_mu;

// PyTorch's handler in a DataLoader worker: it calls no handler that was there before it.
bool is_torchs(const struct sigaction& sa) {
  void* handler = reinterpret_cast<void*>(sa.sa_sigaction);
  Dl_info in_handler{};
  return (sa.sa_flags & SA_SIGINFO) != 0 && (sa.sa_flags & SA_NODEFER) != 0 &&
         ::dladdr(handler, &in_handler) != 0 && in_handler.dli_fname != nullptr &&
         std::strstr(in_handler.dli_fname, "/libtorch_python.") != nullptr;
}

// Whether the handler in place ends the process anyway, so that a report before it harms nothing:
// the default action; faulthandler's handler (CPython's, and the only one of CPython's set with
// SA_NODEFER: the signal module's are not), which dumps the tracebacks and raises the signal
// again; or PyTorch's in a DataLoader worker, which prints "Unexpected segmentation fault
// encountered in worker" and does the same. A handler of the program's own may recover from the
// fault (a guard page, a JIT's trap): that one is left alone, and ours is not put in front of it.
bool ends_the_process(const struct sigaction& sa) {
  void* handler = (sa.sa_flags & SA_SIGINFO) != 0 ? reinterpret_cast<void*>(sa.sa_sigaction)
                                                  : reinterpret_cast<void*>(sa.sa_handler);
  if (handler == reinterpret_cast<void*>(SIG_DFL)) return true;
  if (handler == reinterpret_cast<void*>(SIG_IGN)) return false;
  if (is_torchs(sa)) return true;
  Dl_info in_handler{}, in_cpython{};
  void* cpython = ::dlsym(RTLD_DEFAULT, "Py_IsInitialized");
  return (sa.sa_flags & SA_NODEFER) != 0 && cpython != nullptr && ::dladdr(handler, &in_handler) != 0 &&
         ::dladdr(cpython, &in_cpython) != 0 && in_handler.dli_fbase == in_cpython.dli_fbase;
}

bool same_action(const struct sigaction& a, const struct sigaction& b) {
  return a.sa_flags == b.sa_flags &&
         reinterpret_cast<void*>(a.sa_sigaction) == reinterpret_cast<void*>(b.sa_sigaction);
}

// REQUIRES: g_mu held.
void install() {
  // backtrace() loads libgcc_s on its first call; a crash must not be that call.
  void* warm[4];
  (void)::backtrace(warm, 4);
  struct sigaction ours {};
  ours.sa_sigaction = on_fatal_signal;
  ours.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&ours.sa_mask);
  std::string left;
  for (int sig : kSignals) {
    struct sigaction current {};
    if (::sigaction(sig, nullptr, &current) != 0 || is_ours(current)) continue;
    // Ours is still in place under a handler set since, which calls it in turn (faulthandler,
    // enabled after the agent): going in front again would make a loop of the two. Only
    // PyTorch's, which calls nothing before it, is gone in front of.
    if (g_installed[sig].load() && !is_torchs(current)) continue;
    if (!ends_the_process(current)) {
      left += std::string(left.empty() ? "" : ", ") + signal_name(sig);
      continue;
    }
    g_previous[sig] = current;
    struct sigaction replaced {};
    if (::sigaction(sig, &ours, &replaced) != 0) continue;
    if (!same_action(replaced, current)) {  // set meanwhile by another thread: that one stays
      ::sigaction(sig, &replaced, nullptr);
      continue;
    }
    g_installed[sig].store(true);
  }
  g_enabled.store(true);
  // Under g_mu: install() runs again every few seconds (capture_crashes_again). Never destroyed: the
  // probing-exc thread may still be here while the host exits.
  static auto& said = *new std::string;
  if (left != said && !left.empty())
    log_info("no crash report for " + left + ": the program handles it itself");
  said = left;
}

// REQUIRES: g_mu held.
void uninstall() {
  g_enabled.store(false);  // a handler of ours still reached (chained by a later one) only passes on
  for (int sig : kSignals) {
    struct sigaction current {};
    if (::sigaction(sig, nullptr, &current) != 0 || !is_ours(current)) continue;
    struct sigaction replaced {};
    if (::sigaction(sig, &g_previous[sig], &replaced) != 0) continue;
    if (!is_ours(replaced)) {  // set meanwhile by another thread: that one stays
      ::sigaction(sig, &replaced, nullptr);
      continue;
    }
    g_installed[sig].store(false);
  }
}

// REQUIRES: g_mu held.
void follow_setting() {
  const bool on = settings().get_bool("crash.capture");
  if (on == g_enabled.load()) return;  // a SET to the same value changes nothing
  if (on) {
    install();
  } else {
    uninstall();
  }
}

}  // namespace

void capture_crashes_again() noexcept {
  try {
    // Not waited for (the atfork handlers keep it free across a fork; this is a second guard):
    // called from a forked worker's first Python, nothing may stall it.
    std::unique_lock<std::mutex> lock(g_mu, std::try_to_lock);
    if (lock.owns_lock() && g_enabled.load()) install();
  } catch (...) {
  }
}

void start_crash_capture() {
  static std::once_flag once;
  std::call_once(once, [] {
    ::pthread_atfork([] { g_mu.lock(); }, [] { g_mu.unlock(); }, [] { g_mu.unlock(); });
    settings().observe("crash.capture", [](const std::string&, const std::string&) {
      std::lock_guard<std::mutex> lock(g_mu);
      follow_setting();
    });
    {
      std::lock_guard<std::mutex> lock(g_mu);
      follow_setting();
    }
    if (g_enabled.load()) log_info("fatal signals write a crash report to /var/tmp/probing-<pid>.crash");
  });
}

}  // namespace probing::python
