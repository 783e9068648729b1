#include "core/proc_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <sstream>

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

}  // namespace probing
