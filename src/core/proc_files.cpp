#include "core/proc_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <sstream>

#include "core/syscalls.h"

namespace probing {

std::string read_proc_file(const std::string& path, size_t max_bytes) noexcept {
  try {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return {};
    std::string text;
    char buf[8192];
    while (text.size() < max_bytes) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      text.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    if (text.size() > max_bytes) text.resize(max_bytes);
    return text;
  } catch (...) {  // out of memory
    return {};
  }
}

std::string ProcStat::field(int n) const {
  size_t i = static_cast<size_t>(n - 3);
  return n >= 3 && i < fields.size() ? fields[i] : std::string();
}

double ProcStat::number(int n) const { return std::strtod(field(n).c_str(), nullptr); }

unsigned long ProcStat::flags() const { return std::strtoul(field(9).c_str(), nullptr, 10); }

std::optional<ProcStat> parse_proc_stat(const std::string& text) {
  size_t open = text.find('(');
  size_t close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
  ProcStat st;
  st.comm = text.substr(open + 1, close - open - 1);
  std::istringstream rest(text.substr(close + 1));
  std::string f;
  while (rest >> f) st.fields.push_back(f);
  return st;
}

std::optional<ProcStat> read_proc_stat(pid_t pid, pid_t tid) {
  std::string path = "/proc/" + std::to_string(pid);
  if (tid > 0) path += "/task/" + std::to_string(tid);
  return parse_proc_stat(read_proc_file(path + "/stat", 4096));
}

pid_t pid_in_own_namespace(pid_t pid, pid_t tid) {
  const pid_t ours = tid > 0 ? tid : pid;
  const std::string dir = "/proc/" + std::to_string(pid) + (tid > 0 ? "/task/" + std::to_string(tid) : "");
  const std::string status = read_proc_file(dir + "/status", 1 << 16);
  size_t at = status.find("\nNSpid:");
  if (at == std::string::npos) return ours;
  size_t end = status.find('\n', at + 1);
  std::string line = status.substr(at + 7, end == std::string::npos ? std::string::npos : end - at - 7);
  size_t last = line.find_last_of(" \t");
  long own = std::atol(line.c_str() + (last == std::string::npos ? 0 : last + 1));
  return own > 0 ? static_cast<pid_t>(own) : ours;
}

pid_t tid_from_own_namespace(pid_t pid, pid_t own_tid) {
  if (own_tid <= 0) return 0;
  if (pid_in_own_namespace(pid) == pid) return own_tid;  // the process shares our pid namespace
  DIR* dir = ::opendir(("/proc/" + std::to_string(pid) + "/task").c_str());
  if (dir == nullptr) return 0;
  pid_t found = 0;
  while (dirent* e = ::readdir(dir)) {
    const long tid = std::atol(e->d_name);
    if (tid > 0 && pid_in_own_namespace(pid, static_cast<pid_t>(tid)) == own_tid) {
      found = static_cast<pid_t>(tid);
      break;
    }
  }
  ::closedir(dir);
  return found;
}

std::string thread_activity(pid_t pid, pid_t tid) {
  const std::string proc = pid == 0 ? std::string("/proc/self") : "/proc/" + std::to_string(pid);
  const std::string task = proc + "/task/" + std::to_string(tid);
  std::optional<ProcStat> st = parse_proc_stat(read_proc_file(task + "/stat", 4096));
  if (!st) return "";
  // The system call a blocked thread waits in: the first number of its syscall file ("running"
  // while it runs, -1 outside any).
  auto blocked_in = [&]() -> std::string {
    const std::string text = read_proc_file(task + "/syscall", 256);
    char* end = nullptr;
    const long nr = std::strtol(text.c_str(), &end, 10);
    return end != text.c_str() && nr >= 0 ? " in " + syscall_name(nr) : "";
  };
  switch (st->state()) {
    case 'R': return "running";
    case 'S': return "sleeping" + blocked_in();
    case 'D': return "waiting on the disk" + blocked_in();
    case 'T': return "stopped";
    case 't': return "traced";
    case 'Z':
    case 'X': return "exited";
    case 'I': return "idle";
    default: return std::string(1, st->state());
  }
}

}  // namespace probing
