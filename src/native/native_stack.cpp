#include "native/native_stack.h"

#include <cxxabi.h>
#include <elfutils/libdwfl.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>

#include "core/proc_files.h"
#include "inspect/maps.h"
#include "inspect/process.h"
#include "inspect/symbols.h"
#include "inspect/tracee.h"
#include "layout/interpreter_reader.h"
#include "layout/memory.h"

namespace probing::native {
namespace {

// The stack pointer's DWARF register number.
#if defined(__x86_64__)
constexpr unsigned kStackPointerRegister = 7;
#elif defined(__aarch64__)
constexpr unsigned kStackPointerRegister = 31;
#else
#error "probing's native unwinder knows x86_64 and aarch64"
#endif

using Clock = std::chrono::steady_clock;

std::string read_comm(pid_t pid, pid_t tid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/comm");
  std::string comm;
  std::getline(in, comm);
  return comm;
}

// "python3.10", "libpython3.10.so.1.0" -> 3.10; for interpreters without Py_Version (3.9-3.10).
bool version_from_name(const std::string& base, layout::PythonVersion* v) {
  size_t at = base.find("python3.");
  if (at == std::string::npos) return false;
  int minor = std::atoi(base.c_str() + at + 8);
  if (minor <= 0) return false;
  v->major = 3;
  v->minor = minor;
  v->text = "3." + std::to_string(minor);
  return true;
}

// Where CPython lives in `pid`: the executable or libpython that defines _PyRuntime.
Result<layout::PythonProcess> find_python(pid_t pid, const std::vector<inspect::Mapping>& maps) {
  for (const std::string& path : inspect::mapped_files(maps)) {
    const std::string base = inspect::path_basename(path);
    if (inspect::classify_object(path) != inspect::ObjectKind::kLibpython && base.rfind("python", 0) != 0)
      continue;
    // One pass over the object's .dynsym for every name.
    Result<std::map<std::string, uintptr_t>> found =
        inspect::resolve_symbols_in(pid, maps, path,
                                    {"_PyRuntime", "PyUnicode_Type", "PyCode_Type", "PyBytes_Type",
                                     "PyFrame_Type", "Py_Version", layout::kFreeThreadedSymbol});
    if (!found.is_ok() || found->count("_PyRuntime") == 0) continue;
    auto symbol = [&](const char* name) -> uintptr_t {
      auto it = found->find(name);
      return it == found->end() ? 0 : it->second;
    };
    layout::PythonProcess p;
    p.pid = pid;
    p.runtime = symbol("_PyRuntime");
    p.unicode_type = symbol("PyUnicode_Type");
    p.code_type = symbol("PyCode_Type");
    p.bytes_type = symbol("PyBytes_Type");
    p.frame_type = symbol("PyFrame_Type");
    p.free_threaded = symbol(layout::kFreeThreadedSymbol) != 0;
    uint64_t hex = 0;
    const uintptr_t version = symbol("Py_Version");  // 3.11+: PY_VERSION_HEX
    if (version != 0 && layout::read_memory(pid, version, &hex, sizeof hex) && (hex >> 24) == 3) {
      p.version.major = 3;
      p.version.minor = static_cast<int>((hex >> 16) & 0xff);
      p.version.micro = static_cast<int>((hex >> 8) & 0xff);
      p.version.text = "3." + std::to_string(p.version.minor) + "." + std::to_string(p.version.micro);
    } else if (!version_from_name(base, &p.version)) {
      return Status(Code::kUnsupported, "cannot tell which CPython " + path + " is");
    }
    return p;
  }
  return Status(Code::kNotFound,
                "no CPython found in the process (no _PyRuntime in its executable or libpython)");
}

// The Python stacks of every thread of `p`, read from outside.
Result<layout::GilFreeSnapshot> read_python_stacks(const layout::PythonProcess& p,
                                                   const layout::GilFreeLimits& limits) {
  Result<layout::InterpreterReader> reader = layout::InterpreterReader::open(p);
  if (!reader.is_ok()) return reader.status();
  return reader->stacks(limits);
}

// The readable name: C++ demangled, without the symbol version ("clock_nanosleep@GLIBC_2.2.5").
std::string demangle(const char* symbol) {
  if (symbol == nullptr) return "??";
  std::string plain(symbol, std::strcspn(symbol, "@"));
  const char* name = plain.c_str();
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> out(abi::__cxa_demangle(name, nullptr, nullptr, &status), std::free);
  return status == 0 && out ? std::string(out.get()) : plain;
}

// The interpreter's eval loop, or a part of it the compiler split off (".cold", ".isra.0").
bool is_eval_frame(const Frame& f) {
  constexpr std::string_view kEval = "_PyEval_EvalFrameDefault";
  return !f.python && f.func.compare(0, kEval.size(), kEval) == 0 &&
         (f.func.size() == kEval.size() || f.func[kEval.size()] == '.');
}

// What was read from one thread while it was stopped; names are looked up after.
struct Held {
  std::vector<Dwarf_Addr> pcs;  // for symbol lookup: return addresses moved back into the call
  std::vector<Dwarf_Addr> raw;
  std::vector<bool> exact;      // the pc is where the frame was interrupted (the first, or after a signal)
  std::vector<Dwarf_Word> sps;  // each frame's stack pointer; 0 when it could not be read
  int max = 0;
  bool truncated = false;
  std::vector<layout::RawFrame> python;
};

int on_frame(Dwfl_Frame* frame, void* arg) {
  auto* u = static_cast<Held*>(arg);
  Dwarf_Addr pc = 0;
  bool activation = false;
  if (!dwfl_frame_pc(frame, &pc, &activation)) return DWARF_CB_ABORT;
  Dwarf_Word sp = 0;
  if (dwfl_frame_reg(frame, kStackPointerRegister, &sp) != 0) sp = 0;
  u->raw.push_back(pc);
  u->sps.push_back(sp);
  u->exact.push_back(activation);
  u->pcs.push_back(activation || pc == 0 ? pc : pc - 1);
  if (static_cast<int>(u->pcs.size()) >= u->max) {
    u->truncated = true;
    return DWARF_CB_ABORT;
  }
  return DWARF_CB_OK;
}

Frame symbolize(Dwfl* dwfl, Dwarf_Addr pc, Dwarf_Addr raw) {
  Frame f;
  f.address = raw;
  f.func = "??";
  Dwfl_Module* module = dwfl != nullptr ? dwfl_addrmodule(dwfl, pc) : nullptr;
  if (module == nullptr) return f;
  const char* path = dwfl_module_info(module, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr);
  if (path != nullptr) f.file = path;
  GElf_Off offset = 0;
  GElf_Sym sym;
  const char* name = dwfl_module_addrinfo(module, pc, &offset, &sym, nullptr, nullptr, nullptr);
  if (name != nullptr) {
    f.func = demangle(name);
    f.offset = offset + (raw - pc);
  }
  return f;
}

Frame python_frame(const layout::RawFrame& r) {
  Frame f;
  f.python = true;
  f.func = r.func;
  f.file = r.file;
  f.lineno = r.lineno;
  return f;
}

// The first entry frame at or after `from` (the end of the Python frames one eval call runs).
const layout::RawFrame* entry_from(const std::vector<layout::RawFrame>& py, size_t from) {
  for (size_t i = from; i < py.size(); ++i) {
    if (py[i].entry) return &py[i];
  }
  return nullptr;
}

// Native frames with the Python frames put where their _PyEval_EvalFrameDefault call runs:
// each eval call stands for the frames from the current one out to its entry frame. A call is
// known by its name, or, where the interpreter has no symbol for it (a stripped 3.14 build
// splits the loop into unnamed parts), by holding the call's shim frame on its stack: native
// frame i owns the stack from sps[i] up to sps[i + 1].
void merge(std::vector<Frame> native, const std::vector<Dwarf_Word>& sps,
           const std::vector<layout::RawFrame>& py, ThreadStack* t) {
  size_t next = 0;
  int evals = 0;
  for (size_t i = 0; i < native.size(); ++i) {
    Frame& f = native[i];
    const layout::RawFrame* entry = next < py.size() ? entry_from(py, next) : nullptr;
    // Where the shim's place can be told, it alone decides: a named part and an unnamed part of
    // one call must not both take Python frames.
    const bool by_shim =
        entry != nullptr && entry->shim != 0 && i + 1 < sps.size() && sps[i] != 0 && sps[i + 1] != 0;
    const bool eval = by_shim ? sps[i] <= entry->shim && entry->shim < sps[i + 1] : is_eval_frame(f);
    if (next >= py.size() || !eval) {
      t->frames.push_back(std::move(f));
      continue;
    }
    ++evals;
    while (next < py.size()) {
      const bool entry = py[next].entry;
      t->frames.push_back(python_frame(py[next++]));
      if (entry) break;
    }
  }
  if (next < py.size() && t->note.empty()) {
    t->note = evals == 0
                  ? "no _PyEval_EvalFrameDefault among the native frames: Python frames shown outermost"
                  : "more Python frames than eval calls: the rest are shown outermost";
  }
  while (next < py.size()) t->frames.push_back(python_frame(py[next++]));
}

struct DwflDeleter {
  void operator()(Dwfl* d) const { dwfl_end(d); }
};
using DwflPtr = std::unique_ptr<Dwfl, DwflDeleter>;

// For each file the process being unwound maps, where to read it (inspect::readable_paths). Set
// by Unwinder::attach, read by find_elf (libdw's callback, which has no user pointer of its own).
std::mutex g_files_mutex;
std::map<std::string, std::vector<std::string>> g_files;

bool ends_with(const char* s, std::string_view suffix) {
  const size_t n = std::strlen(s);
  return n >= suffix.size() && std::string_view(s + n - suffix.size()) == suffix;
}

// A regular file opened read-only from one of `paths`; -1 when none is. A device mapping
// (/dev/nvidia0) is never opened: it may block on open, with a thread stopped.
int open_regular(const std::vector<std::string>& paths) {
  for (const std::string& path : paths) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | O_PATH);
    if (fd < 0) continue;
    struct stat st {};
    const bool regular = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    const int file =
        regular ? ::open(("/proc/self/fd/" + std::to_string(fd)).c_str(), O_RDONLY | O_CLOEXEC) : -1;
    ::close(fd);
    if (file >= 0) return file;
  }
  return -1;
}

// A library as the target maps it: the very file (/proc/PID/map_files), else its path under the
// target's root, so that a process in a chroot or a container is unwound and named from its own
// files, never the host's.
int find_elf(Dwfl_Module* module, void** userdata, const char* name, Dwarf_Addr base, char** file_name,
             Elf** elf) {
  if (name == nullptr || name[0] != '/' || ends_with(name, " (deleted)")) {
    // [vdso], a deleted file: libdw reads them from the process's memory.
    return dwfl_linux_proc_find_elf(module, userdata, name, base, file_name, elf);
  }
  std::vector<std::string> paths;
  {
    std::lock_guard<std::mutex> lock(g_files_mutex);
    if (auto it = g_files.find(name); it != g_files.end()) paths = it->second;
  }
  const int file = open_regular(paths);
  if (file < 0) return -1;
  *file_name = ::strdup(name);  // the target's name: libdw looks for its debug file by it
  *elf = nullptr;
  return file;  // libdw owns it now
}

// The file system the process of symbolize_offline saw ("" for this one's); the CLI's one thread.
std::string g_offline_root;

// A library of a process that is gone, opened by the path its maps gave (a regular file only).
int find_elf_by_path(Dwfl_Module*, void**, const char* name, Dwarf_Addr, char** file_name, Elf** elf) {
  if (name == nullptr || name[0] != '/') return -1;
  const int file = open_regular({g_offline_root + name});
  if (file < 0) return -1;
  *file_name = ::strdup(name);
  *elf = nullptr;
  return file;
}

// libdw over one process: its libraries as /proc/PID/maps lists them, and threads that the
// caller has ptrace-stopped (libdw attaches to nothing itself).
class Unwinder {
 public:
  static Result<Unwinder> open(pid_t pid) {
    Unwinder u;
    u.pid_ = pid;
    PROBING_RETURN_IF_ERROR(u.attach());
    return u;
  }

  // The stopped thread's return addresses into `held`; an error only when none could be read.
  Status unwind(pid_t tid, Held* held) {
    if (!dwfl_) {
      return Status(Code::kUnavailable, "native frames not read: libdw could not read the process again");
    }
    const int rc = dwfl_getthread_frames(dwfl_.get(), tid, on_frame, held);
    if (rc == 0 || held->truncated) return Status::ok();
    const std::string why = dwfl_errmsg(-1);
    if (!held->pcs.empty()) return Status(Code::kUnavailable, "native frames end early: " + why);
    // libdw keeps a failed thread's state (its register read failed: the thread was killed
    // meanwhile) and would assert on the next one: a fresh session serves it, or none at all.
    dwfl_.reset();
    (void)attach();
    return Status(Code::kUnavailable, "native frames not read: " + why);
  }

  Dwfl* dwfl() const { return dwfl_.get(); }

 private:
  Status attach() {
    // Symbols come from the files themselves (and local debug files); never from the network.
    ::unsetenv("DEBUGINFOD_URLS");
    static char* debuginfo_path = nullptr;
    static const Dwfl_Callbacks callbacks = {find_elf, dwfl_standard_find_debuginfo, nullptr,
                                             &debuginfo_path};
    Result<std::vector<inspect::Mapping>> maps = inspect::read_maps(pid_);
    if (!maps.is_ok()) return maps.status();
    {
      std::lock_guard<std::mutex> lock(g_files_mutex);
      g_files.clear();
      for (const inspect::Mapping& m : *maps) {
        if (m.is_file() && !g_files.count(m.path)) g_files.emplace(m.path, inspect::readable_paths(pid_, m));
      }
    }
    DwflPtr dwfl(dwfl_begin(&callbacks));
    if (!dwfl) return Status(Code::kInternal, std::string("libdw: ") + dwfl_errmsg(-1));
    int reported = 0;
    // A process that has only just exec'd (its loader has not mapped its libraries yet) reads as
    // ENOEXEC for a moment: asked again a few times before that is the answer.
    for (int tries = 0;; ++tries) {
      dwfl_report_begin(dwfl.get());
      reported = dwfl_linux_proc_report(dwfl.get(), pid_);
      dwfl_report_end(dwfl.get(), nullptr, nullptr);
      if (reported != ENOEXEC || tries == 4) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (reported != 0) {
      return Status(reported == ENOENT ? Code::kNotFound : Code::kUnavailable,
                    "reading the libraries of process " + std::to_string(pid_) + ": " +
                        (reported > 0 ? std::strerror(reported) : dwfl_errmsg(-1)));
    }
    if (int err = dwfl_linux_proc_attach(dwfl.get(), pid_, /*assume_ptrace_stopped=*/true); err != 0) {
      return Status(Code::kUnavailable, "libdw cannot read process " + std::to_string(pid_) + ": " +
                                            (err > 0 ? std::strerror(err) : dwfl_errmsg(-1)));
    }
    dwfl_ = std::move(dwfl);
    return Status::ok();
  }

  pid_t pid_ = 0;
  DwflPtr dwfl_;
};

// The whole stack of a stopped thread and the names of C library functions, for the injector.
class InjectStackReader : public inspect::StackReader {
 public:
  explicit InjectStackReader(Unwinder unwinder) : unwinder_(std::move(unwinder)) {}

  inspect::StackRead read(pid_t tid) override {
    constexpr int kMaxFrames = 1024;
    Held held;
    held.max = kMaxFrames;
    Status st = unwinder_.unwind(tid, &held);
    inspect::StackRead out;
    for (size_t i = 0; i < held.raw.size(); ++i) out.frames.push_back({held.raw[i], i > 0 && held.exact[i]});
    out.complete = st.is_ok() && !held.truncated;
    if (!st.is_ok()) out.error = st.message();
    if (held.truncated) out.error = "more than " + std::to_string(kMaxFrames) + " frames";
    return out;
  }

  std::string function_at(std::uintptr_t address) override {
    Dwfl* dwfl = unwinder_.dwfl();
    Dwfl_Module* module = dwfl != nullptr ? dwfl_addrmodule(dwfl, address) : nullptr;
    if (module == nullptr) return "";
    GElf_Off offset = 0;
    GElf_Sym sym;
    const char* name = dwfl_module_addrinfo(module, address, &offset, &sym, nullptr, nullptr, nullptr);
    // A symbol without a size, or one that ends before `address`, is only the nearest name.
    if (name == nullptr || sym.st_size == 0 || offset >= sym.st_size) return "";
    return name;
  }

 private:
  Unwinder unwinder_;
};

}  // namespace

std::vector<Frame> symbolize_offline(const std::string& maps_text, const std::vector<uint64_t>& pcs,
                                     const std::string& root) {
  std::vector<Frame> out;
  g_offline_root = root == "/" ? "" : root;
  ::unsetenv("DEBUGINFOD_URLS");
  static char* debuginfo_path = nullptr;
  static const Dwfl_Callbacks callbacks = {find_elf_by_path, dwfl_standard_find_debuginfo, nullptr,
                                           &debuginfo_path};
  DwflPtr dwfl(dwfl_begin(&callbacks));
  Result<std::vector<inspect::Mapping>> maps = inspect::parse_maps(maps_text);
  if (dwfl && maps.is_ok()) {
    // A module per mapping of a file from its start (a library; not a data file mapped from the
    // middle), to the end of the mappings of that file that follow it, before another file's
    // start: a file mapped twice (a data file, a library opened in two namespaces) is two modules,
    // never one whose range covers the libraries between them.
    struct Module {
      std::string path;
      Dwarf_Addr start, end;
    };
    std::vector<Module> modules;
    for (const inspect::Mapping& m : *maps) {
      if (!m.is_file() || m.deleted) continue;
      if (m.offset == 0) {
        modules.push_back({m.path, m.start, m.end});
      } else if (!modules.empty() && modules.back().path == m.path && m.start >= modules.back().end) {
        modules.back().end = m.end;
      }
    }
    dwfl_report_begin(dwfl.get());
    for (const Module& module : modules) {
      (void)dwfl_report_module(dwfl.get(), module.path.c_str(), module.start, module.end);
    }
    dwfl_report_end(dwfl.get(), nullptr, nullptr);
  }
  for (size_t i = 0; i < pcs.size(); ++i) {
    // A return address (every frame but the first) is looked up inside the call it returns from.
    const Dwarf_Addr pc = i == 0 || pcs[i] == 0 ? pcs[i] : pcs[i] - 1;
    Frame f = symbolize(dwfl.get(), pc, pcs[i]);
    if (f.file.empty() && maps.is_ok()) {
      if (const inspect::Mapping* m = inspect::find_mapping(*maps, pcs[i])) f.file = m->path;
    }
    out.push_back(std::move(f));
  }
  return out;
}

Result<std::unique_ptr<inspect::StackReader>> open_stack_reader(pid_t pid) {
  Result<Unwinder> unwinder = Unwinder::open(pid);
  if (!unwinder.is_ok()) return unwinder.status();
  return std::unique_ptr<inspect::StackReader>(std::make_unique<InjectStackReader>(std::move(*unwinder)));
}

pid_t tid_for_ident(pid_t pid, unsigned long ident) {
  Result<std::vector<inspect::Mapping>> maps = inspect::read_maps(pid);
  if (!maps.is_ok()) return 0;
  Result<layout::PythonProcess> py = find_python(pid, *maps);
  if (!py.is_ok()) return 0;
  layout::GilFreeLimits limits;
  limits.max_frames = 0;
  Result<layout::GilFreeSnapshot> snap = read_python_stacks(*py, limits);
  if (!snap.is_ok()) return 0;
  for (const auto& t : snap->threads) {
    if (t.thread_id == ident) return tid_from_own_namespace(pid, static_cast<pid_t>(t.native_thread_id));
  }
  return 0;
}

namespace {

// The Python runtime of `pid` for reading threads' Python frames from outside; an error says why
// they cannot be shown.
// `version`: which CPython it is, even where its frames cannot be shown.
Result<layout::PythonProcess> python_of(pid_t pid, const std::vector<inspect::Mapping>& maps,
                                        std::string* version) {
  Result<layout::PythonProcess> py = find_python(pid, maps);
  if (py.is_ok()) *version = py->version.text;
  if (py.is_ok() && py->version.minor < 11) {  // their thread states carry no kernel tid
    return Status(Code::kUnsupported, "on CPython " + py->version.text +
                                          " Python stacks cannot be matched to kernel threads (3.11+ only)");
  }
  return py;
}

// One thread stopped, read and let go. An error only for a process that may not be traced at
// all (denied on the first thread, `seized_any` false); anything else is a note on the thread.
// `late` keeps a thread that did not stop in time: let go after the others are read.
Status read_thread(pid_t pid, Result<layout::PythonProcess>& py, Unwinder& unwinder, const Options& options,
                   ThreadStack& t, Held& held, bool& seized_any, std::vector<inspect::Tracee>& late,
                   std::vector<std::string>& notes) {
  t.comm = read_comm(pid, t.tid);
  Result<inspect::ProcStatus> st = inspect::read_proc_status(pid, t.tid);
  if (!st.is_ok() || st->state == 'Z' || st->state == 'X') {
    t.note = "the thread has exited";
    return Status::ok();
  }
  if (st->state == 'D') {  // in uninterruptible sleep (a disk, an NFS mount): it would not stop
    t.note = "not read: the thread is in uninterruptible sleep (state D)";
    return Status::ok();
  }
  Result<inspect::Tracee> tracee = inspect::Tracee::seize(pid, t.tid);
  if (!tracee.is_ok()) {
    // Denied on the first thread: this process may not be traced at all. Later, or for a
    // thread that is exiting, it is about that thread only.
    Result<inspect::ProcStatus> now = inspect::read_proc_status(pid, t.tid);
    if (!now.is_ok() || now->state == 'Z' || now->state == 'X') {
      t.note = "the thread has exited";
      return Status::ok();
    }
    if (tracee.status().code() == Code::kPermissionDenied && !seized_any) return tracee.status();
    t.note = "not read: " + tracee.status().message();
    return Status::ok();
  }
  seized_any = true;
  if (!inspect::read_proc_status(pid, t.tid).is_ok()) {  // the tid was reused by another process
    t.note = "the thread has exited";
    return Status::ok();
  }
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(options.stop_timeout_s));
  if (Status s = tracee->interrupt(deadline); !s.is_ok()) {
    Result<inspect::ProcStatus> now = inspect::read_proc_status(pid);
    // (Seized by us, a stopped thread shows 't'; a group-stop is what makes interrupt() fail.)
    const bool stopped =
        s.code() == Code::kUnavailable && now.is_ok() && (now->state == 'T' || now->state == 't');
    t.note = stopped ? "not read: the process is stopped (SIGSTOP, SIGTSTP or Ctrl-Z); resume it with: "
                       "kill -CONT " +
                           std::to_string(pid)
                     : "not read: it did not stop (" + s.message() + ")";
    if (s.code() == Code::kTimeout) late.push_back(std::move(*tracee));
    return Status::ok();
  }
  const auto stopped = Clock::now();
  held.max = options.max_native_frames;
  if (Status s = unwinder.unwind(t.tid, &held); !s.is_ok()) t.note = s.message();
  if (py.is_ok()) {
    layout::GilFreeLimits limits;
    limits.max_frames = options.max_python_frames;
    limits.native_thread_id = pid_in_own_namespace(pid, t.tid);  // CPython keeps the tid it sees
    // The other threads run on while this one is stopped: one that starts or ends as the list of
    // thread states is walked can cut the walk short, or make it fail. A few more tries, where
    // that is what happened (an error, or no thread state for the main thread, which has one).
    Result<layout::GilFreeSnapshot> snap = read_python_stacks(*py, limits);
    for (int again = 0; again < 3 && (!snap.is_ok() || (snap->threads.empty() && t.tid == pid)); ++again) {
      snap = read_python_stacks(*py, limits);
    }
    if (!snap.is_ok()) {
      notes.push_back("Python frames not shown: " + snap.status().message());
      py = snap.status();
    } else if (!snap->threads.empty()) {
      layout::RawThread& rt = snap->threads.front();
      t.python = true;
      t.thread_id = rt.thread_id;
      t.holds_gil = rt.holds_gil;
      t.truncated = rt.truncated;
      if (!rt.error.empty()) t.note += (t.note.empty() ? "" : "; ") + rt.error;
      held.python = std::move(rt.frames);
    }
  }
  if (Status s = tracee->detach(0); !s.is_ok() && t.note.empty()) t.note = s.message();
  t.stopped_ms = std::chrono::duration<double, std::milli>(Clock::now() - stopped).count();
  return Status::ok();
}

// Each thread's native frames named (through `names`, when given, a cache by address) and merged
// with its Python frames; done with every thread running again.
void name_and_merge(Dwfl* dwfl, std::vector<Held>& held, Capture& out, std::map<Dwarf_Addr, Frame>* names) {
  for (size_t i = 0; i < out.threads.size(); ++i) {
    ThreadStack& t = out.threads[i];
    std::vector<Frame> native;
    native.reserve(held[i].pcs.size());
    for (size_t k = 0; k < held[i].pcs.size(); ++k) {
      if (names == nullptr) {
        native.push_back(symbolize(dwfl, held[i].pcs[k], held[i].raw[k]));
        continue;
      }
      auto it = names->find(held[i].raw[k]);
      if (it == names->end())
        it = names->emplace(held[i].raw[k], symbolize(dwfl, held[i].pcs[k], held[i].raw[k])).first;
      native.push_back(it->second);
    }
    if (held[i].truncated) t.truncated = true;
    merge(std::move(native), held[i].sps, held[i].python, &t);
  }
}

// What is read while threads are stopped, on the thread that stops them.
struct Stopped {
  Capture out;
  std::vector<Held> held;
  std::optional<Unwinder> unwinder;
};

Status read_stopped(pid_t pid, const std::vector<pid_t>& tids, const Options& options, Stopped* r) {
  Capture& out = r->out;
  Result<std::vector<inspect::Mapping>> maps = inspect::read_maps(pid);
  if (!maps.is_ok()) return maps.status();
  Result<layout::PythonProcess> py = python_of(pid, *maps, &out.python_version);
  if (!py.is_ok()) out.notes.push_back("Python frames not shown: " + py.status().message());
  Result<Unwinder> opened = Unwinder::open(pid);
  if (!opened.is_ok()) return opened.status();
  Unwinder& unwinder = r->unwinder.emplace(std::move(*opened));
  r->held.resize(tids.size());
  std::vector<inspect::Tracee> late;  // seized, not stopped in time: let go after the others are read
  bool seized_any = false;
  for (size_t i = 0; i < tids.size(); ++i) {
    ThreadStack& t = out.threads.emplace_back();
    t.tid = tids[i];
    PROBING_RETURN_IF_ERROR(
        read_thread(pid, py, unwinder, options, t, r->held[i], seized_any, late, out.notes));
  }
  // `late` goes out of scope: each gets one more chance to stop and be let go (Tracee's
  // destructor); whatever is still traced is let go by the kernel when this thread ends.
  return Status::ok();
}

}  // namespace

Result<Capture> capture(pid_t pid, const std::vector<pid_t>& tids, const Options& options) {
  // Threads are stopped from a thread of their own: should one be left traced (it never
  // stopped), the kernel lets it go when that thread ends, before anything is printed.
  Stopped r;
  Status status = Status(Code::kInternal, "the native stack reader stopped unexpectedly");
  std::thread reader([&] {
    try {
      status = read_stopped(pid, tids, options, &r);
    } catch (const std::exception& e) {
      status = Status(Code::kInternal, std::string("reading native stacks: ") + e.what());
    }
  });
  reader.join();
  if (!status.is_ok()) return status;
  name_and_merge(r.unwinder ? r.unwinder->dwfl() : nullptr, r.held, r.out, nullptr);
  return std::move(r.out);
}

struct Sampler::State {
  pid_t pid = 0;
  Options options;
  Result<layout::PythonProcess> py = Status(Code::kInternal, "");
  std::string version;
  std::optional<Unwinder> unwinder;
  std::map<Dwarf_Addr, Frame> names;
};

Sampler::Sampler(std::unique_ptr<State> state) : state_(std::move(state)) {}
Sampler::~Sampler() = default;
Sampler::Sampler(Sampler&&) noexcept = default;
Sampler& Sampler::operator=(Sampler&&) noexcept = default;

Result<Sampler> Sampler::open(pid_t pid, const Options& options) {
  auto state = std::make_unique<State>();
  state->pid = pid;
  state->options = options;
  Result<std::vector<inspect::Mapping>> maps = inspect::read_maps(pid);
  if (!maps.is_ok()) return maps.status();
  state->py = python_of(pid, *maps, &state->version);
  Result<Unwinder> unwinder = Unwinder::open(pid);
  if (!unwinder.is_ok()) return unwinder.status();
  state->unwinder.emplace(std::move(*unwinder));
  return Sampler(std::move(state));
}

std::string Sampler::python_version() const { return state_->version; }

std::string Sampler::python_note() const {
  return state_->py.is_ok() ? "" : "Python frames not shown: " + state_->py.status().message();
}

Result<Capture> Sampler::sample(const std::vector<pid_t>& tids, const Keep& keep) {
  State& s = *state_;
  Capture out;
  out.python_version = python_version();
  // Which threads hold the GIL, read without stopping any (no frames): for `keep`.
  std::map<pid_t, bool> gil;
  if (keep && s.py.is_ok()) {
    layout::GilFreeLimits limits;
    limits.max_frames = 0;
    Result<layout::GilFreeSnapshot> snap = read_python_stacks(*s.py, limits);
    if (snap.is_ok()) {
      for (const layout::RawThread& t : snap->threads) {
        gil[tid_from_own_namespace(s.pid, static_cast<pid_t>(t.native_thread_id))] = t.holds_gil;
      }
    }
  }
  std::vector<Held> held;
  held.reserve(tids.size());
  std::vector<inspect::Tracee> late;
  bool seized_any = false;
  for (pid_t tid : tids) {
    if (keep) {
      Result<inspect::ProcStatus> st = inspect::read_proc_status(s.pid, tid);
      auto holds = gil.find(tid);
      if (!st.is_ok() || !keep(tid, st->state, holds != gil.end() && holds->second)) continue;
    }
    ThreadStack& t = out.threads.emplace_back();
    t.tid = tid;
    PROBING_RETURN_IF_ERROR(read_thread(s.pid, s.py, *s.unwinder, s.options, t, held.emplace_back(),
                                        seized_any, late, out.notes));
  }
  late.clear();  // one more chance to stop and be let go, before the names are looked up
  name_and_merge(s.unwinder->dwfl(), held, out, &s.names);
  return out;
}

}  // namespace probing::native
