#include "inspect/process.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <fstream>
#include <sstream>

namespace probing::inspect {
namespace {

std::string proc_dir(pid_t pid, pid_t tid) {
  std::string dir = "/proc/" + std::to_string(pid);
  if (tid != 0) dir += "/task/" + std::to_string(tid);
  return dir;
}

std::string no_process(pid_t pid, pid_t tid) {
  if (tid == 0 || tid == pid) return "no process " + std::to_string(pid);
  return "no thread " + std::to_string(tid) + " in process " + std::to_string(pid);
}

std::string read_small_file(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  if (in) text << in.rdbuf();
  return text.str();
}

std::string ptrace_scope_text() {
  std::string scope = read_small_file("/proc/sys/kernel/yama/ptrace_scope");
  while (!scope.empty() && (scope.back() == '\n' || scope.back() == ' ')) scope.pop_back();
  if (scope.empty()) return "Yama is not active here (no /proc/sys/kernel/yama/ptrace_scope)";
  std::string meaning;
  if (scope == "0") meaning = "classic: same uid may trace";
  if (scope == "1") meaning = "restricted: only a parent, or with CAP_SYS_PTRACE";
  if (scope == "2") meaning = "admin-only: CAP_SYS_PTRACE required";
  if (scope == "3") meaning = "no attach: ptrace is disabled until reboot";
  return "/proc/sys/kernel/yama/ptrace_scope is " + scope + (meaning.empty() ? "" : " (" + meaning + ")");
}

}  // namespace

Result<ProcStatus> read_proc_status(pid_t pid, pid_t tid) {
  const std::string path = proc_dir(pid, tid) + "/status";
  std::ifstream in(path);
  if (!in) {
    const int err = errno;
    if (err == ENOENT || err == ESRCH) return Status(Code::kNotFound, no_process(pid, tid));
    // /proc mounted with hidepid, or another user's process: the same refusal as ptrace's.
    if (err == EACCES || err == EPERM) return ptrace_denied(pid, "reading " + path);
    return errno_status("opening " + path, err);
  }
  ProcStatus st;
  std::string line;
  bool have_state = false;
  for (int i = 0; i < 64 && std::getline(in, line); ++i) {
    if (line.rfind("Name:", 0) == 0) {
      st.name = line.substr(5);
      st.name.erase(0, st.name.find_first_not_of(" \t"));
    } else if (line.rfind("State:", 0) == 0) {
      std::size_t p = line.find_first_not_of(" \t", 6);
      if (p != std::string::npos) {
        st.state = line[p];
        have_state = true;
      }
    } else if (line.rfind("TracerPid:", 0) == 0) {
      std::string v = line.substr(10);
      v.erase(0, v.find_first_not_of(" \t"));
      std::from_chars(v.data(), v.data() + v.size(), st.tracer);
    }
  }
  if (!have_state) {
    // The file vanished between open and read: the process is gone.
    return Status(Code::kNotFound, no_process(pid, tid));
  }
  return st;
}

Result<std::vector<pid_t>> list_threads(pid_t pid) {
  const std::string path = proc_dir(pid, 0) + "/task";
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) {
    const int err = errno;
    if (err == ENOENT || err == ESRCH) return Status(Code::kNotFound, no_process(pid, 0));
    return errno_status("listing " + path, err);
  }
  std::vector<pid_t> tids;
  constexpr std::size_t kMaxThreads = 1 << 16;
  while (dirent* e = ::readdir(dir)) {
    pid_t tid = 0;
    const char* name = e->d_name;
    auto [ptr, ec] = std::from_chars(name, name + std::char_traits<char>::length(name), tid);
    if (ec == std::errc() && *ptr == '\0' && tid > 0) tids.push_back(tid);
    if (tids.size() >= kMaxThreads) break;
  }
  ::closedir(dir);
  std::sort(tids.begin(), tids.end());
  auto main = std::find(tids.begin(), tids.end(), pid);
  if (main != tids.end()) std::rotate(tids.begin(), main, main + 1);
  if (tids.empty()) return Status(Code::kNotFound, no_process(pid, 0));
  return tids;
}

SyscallHint read_syscall_hint(pid_t pid, pid_t tid) {
  SyscallHint hint;
  const std::string text = read_small_file(proc_dir(pid, tid) + "/syscall");
  if (text.empty()) return hint;
  hint.known = true;
  if (text.rfind("running", 0) == 0) {
    hint.running = true;
    return hint;
  }
  // "nr arg1 .. arg6 sp pc" or "-1 sp pc"; numbers other than nr in 0x-hex.
  std::istringstream in(text);
  std::vector<std::string> fields;
  std::string f;
  while (fields.size() < 9 && in >> f) fields.push_back(f);
  if (fields.size() < 3) {
    hint.known = false;
    return hint;
  }
  hint.nr = std::strtol(fields[0].c_str(), nullptr, 10);
  hint.sp = std::strtoull(fields[fields.size() - 2].c_str(), nullptr, 16);
  hint.pc = std::strtoull(fields[fields.size() - 1].c_str(), nullptr, 16);
  return hint;
}

Status ptrace_denied(pid_t pid, const std::string& what) {
  std::string msg = what + ": not permitted. Attaching needs the same uid as process " +
                    std::to_string(pid) + " (or root), CAP_SYS_PTRACE inside a container " +
                    "(docker run --cap-add=SYS_PTRACE; Kubernetes securityContext.capabilities.add: " +
                    "[SYS_PTRACE]), and Yama's permission: " + ptrace_scope_text() +
                    "; see docs/attach.md";
  return Status(Code::kPermissionDenied, std::move(msg));
}

}  // namespace probing::inspect
