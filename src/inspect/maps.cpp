#include "inspect/maps.h"

#include "inspect/process.h"

#include <cerrno>
#include <charconv>
#include <fstream>
#include <sstream>
#include <string_view>

namespace probing::inspect {
namespace {

constexpr std::string_view kDeletedSuffix = " (deleted)";

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Parses a hexadecimal field at the front of `s` and advances `s` past it.
template <typename T>
bool take_hex(std::string_view& s, T& out) {
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out, 16);
  if (ec != std::errc() || ptr == s.data()) return false;
  s.remove_prefix(static_cast<std::size_t>(ptr - s.data()));
  return true;
}

bool take_char(std::string_view& s, char c) {
  if (s.empty() || s.front() != c) return false;
  s.remove_prefix(1);
  return true;
}

void skip_spaces(std::string_view& s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
}

std::string_view take_word(std::string_view& s) {
  std::size_t n = s.find(' ');
  if (n == std::string_view::npos) n = s.size();
  std::string_view word = s.substr(0, n);
  s.remove_prefix(n);
  return word;
}

// "start-end perms offset major:minor inode    path"
bool parse_line(std::string_view line, Mapping& m) {
  if (!take_hex(line, m.start) || !take_char(line, '-') || !take_hex(line, m.end)) return false;
  skip_spaces(line);
  m.perms = std::string(take_word(line));
  if (m.perms.size() != 4) return false;
  skip_spaces(line);
  if (!take_hex(line, m.offset)) return false;
  skip_spaces(line);
  if (take_word(line).find(':') == std::string_view::npos) return false;  // device
  skip_spaces(line);
  std::string_view inode = take_word(line);
  auto [ptr, ec] = std::from_chars(inode.data(), inode.data() + inode.size(), m.inode, 10);
  if (ec != std::errc() || ptr != inode.data() + inode.size()) return false;
  skip_spaces(line);
  std::string path(line);
  if (path.size() > kDeletedSuffix.size() &&
      std::string_view(path).substr(path.size() - kDeletedSuffix.size()) == kDeletedSuffix) {
    path.resize(path.size() - kDeletedSuffix.size());
    m.deleted = true;
  }
  m.path = std::move(path);
  return m.start < m.end;
}

}  // namespace

Result<std::vector<Mapping>> parse_maps(const std::string& text) {
  std::vector<Mapping> maps;
  std::istringstream in(text);
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    Mapping m;
    if (!parse_line(line, m)) {
      return Status(Code::kInternal, "maps line " + std::to_string(number) + " does not parse: \"" +
                                         line + "\"");
    }
    maps.push_back(std::move(m));
  }
  return maps;
}

Result<std::vector<Mapping>> read_maps(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/maps";
  std::ifstream file(path);
  if (!file) {
    const int err = errno;
    // The kernel applies the ptrace access check to maps: say what would grant it.
    if (err == EACCES || err == EPERM) return ptrace_denied(pid, "reading " + path);
    if (err == ENOENT || err == ESRCH) return Status(Code::kNotFound, "no process " + std::to_string(pid));
    return errno_status("opening " + path, err);
  }
  std::ostringstream text;
  text << file.rdbuf();
  if (file.bad()) return errno_status("reading " + path);
  Result<std::vector<Mapping>> maps = parse_maps(text.str());
  if (!maps) return maps.status().with_context("reading " + path);
  if (maps->empty()) {
    // A zombie or a process that is exiting has no address space left.
    return Status(Code::kUnavailable, path + " is empty (the process has no address space)");
  }
  return maps;
}

const Mapping* find_mapping(const std::vector<Mapping>& maps, std::uintptr_t address) {
  for (const Mapping& m : maps) {
    if (m.contains(address)) return &m;
  }
  return nullptr;
}

std::string path_basename(const std::string& path) {
  std::size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

ObjectKind classify_object(const std::string& path) {
  const std::string base = path_basename(path);
  if (starts_with(base, "ld-linux") || starts_with(base, "ld.so") || starts_with(base, "ld-musl") ||
      starts_with(base, "ld-2.") || starts_with(base, "ld64.so")) {
    return ObjectKind::kLoader;
  }
  if (starts_with(base, "libc.so") || starts_with(base, "libc-2.") || starts_with(base, "libc.musl")) {
    return ObjectKind::kLibc;
  }
  if (starts_with(base, "libdl.so") || starts_with(base, "libdl-2.")) return ObjectKind::kLibdl;
  if (starts_with(base, "libpthread.so") || starts_with(base, "libpthread-2.")) {
    return ObjectKind::kLibpthread;
  }
  if (starts_with(base, "libpython")) return ObjectKind::kLibpython;
  if (starts_with(base, "libgcc_s") || starts_with(base, "libstdc++") || starts_with(base, "libc++") ||
      starts_with(base, "libunwind")) {
    return ObjectKind::kRuntime;
  }
  if (starts_with(base, "libjemalloc") || starts_with(base, "libtcmalloc") || starts_with(base, "libmimalloc")) {
    return ObjectKind::kAllocator;
  }
  return ObjectKind::kOther;
}

}  // namespace probing::inspect
