#include "inspect/process_tree.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <optional>
#include <regex>
#include <set>

#include "core/proc_files.h"
#include "inspect/maps.h"

namespace probing::inspect {
namespace {

std::string proc_path(pid_t pid, const char* file) { return "/proc/" + std::to_string(pid) + "/" + file; }

std::vector<pid_t> numbers_in(const std::string& text) {
  std::vector<pid_t> out;
  const char* p = text.c_str();
  char* end = nullptr;
  for (long v = std::strtol(p, &end, 10); end != p; v = std::strtol(p, &end, 10)) {
    if (v > 0) out.push_back(static_cast<pid_t>(v));
    p = end;
  }
  return out;
}

std::vector<pid_t> numeric_entries(const std::string& dir) {
  std::vector<pid_t> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      char* end = nullptr;
      const long v = std::strtol(e->d_name, &end, 10);
      if (end != e->d_name && *end == '\0' && v > 0) out.push_back(static_cast<pid_t>(v));
    }
    ::closedir(d);
  }
  return out;
}

// The children of `pid`: from each of its threads' children files, else (no such file in this
// kernel) nullopt.
std::optional<std::vector<pid_t>> children_from_task_files(pid_t pid) {
  std::set<pid_t> kids;
  bool any_file = false;
  for (pid_t tid : numeric_entries(proc_path(pid, "task"))) {
    const std::string path = proc_path(pid, "task") + "/" + std::to_string(tid) + "/children";
    if (::access(path.c_str(), R_OK) != 0) continue;
    any_file = true;
    for (pid_t kid : numbers_in(read_proc_file(path, 1 << 20))) kids.insert(kid);
  }
  if (!any_file) return std::nullopt;
  return std::vector<pid_t>(kids.begin(), kids.end());
}

std::vector<std::string> cmdline_of(pid_t pid) {
  std::string text = read_proc_file(proc_path(pid, "cmdline"), 1 << 16);
  std::vector<std::string> args;
  for (size_t at = 0; at < text.size();) {
    size_t nul = text.find('\0', at);
    if (nul == std::string::npos) nul = text.size();
    args.push_back(text.substr(at, nul - at));
    at = nul + 1;
  }
  return args;
}

}  // namespace

bool runs_agent_threads(pid_t pid) {
  for (pid_t tid : numeric_entries(proc_path(pid, "task"))) {
    std::optional<ProcStat> st = read_proc_stat(pid, tid);
    if (st && st->comm.rfind("probing-", 0) == 0) return true;
  }
  return false;
}

std::string mapped_python_version(pid_t pid) {
  static const std::regex kName(R"((?:^|/)(?:lib)?python(3\.[0-9]+)[a-z]*(?:\.so[.0-9]*)?$)");
  Result<std::vector<Mapping>> maps = read_maps(pid);
  if (!maps.is_ok()) return "";
  for (const Mapping& m : *maps) {
    std::smatch match;
    if (m.is_file() && std::regex_search(m.path, match, kName)) return match[1].str();
  }
  return "";
}

Result<std::vector<TreeProcess>> process_tree(pid_t root, const TreeLimits& limits, bool* truncated) {
  if (truncated != nullptr) *truncated = false;
  if (!read_proc_stat(root)) return Status(Code::kNotFound, "no process " + std::to_string(root));
  // Where the kernel has no children files: every process's parent, read once.
  std::optional<std::map<pid_t, std::vector<pid_t>>> by_parent;
  auto children_of = [&](pid_t pid) -> std::vector<pid_t> {
    if (std::optional<std::vector<pid_t>> kids = children_from_task_files(pid)) return *kids;
    if (!by_parent) {
      by_parent.emplace();
      for (pid_t p : numeric_entries("/proc")) {
        std::optional<ProcStat> st = read_proc_stat(p);
        if (st) (*by_parent)[static_cast<pid_t>(st->number(4))].push_back(p);
      }
    }
    auto it = by_parent->find(pid);
    return it == by_parent->end() ? std::vector<pid_t>() : it->second;
  };

  std::vector<TreeProcess> out;
  std::vector<std::pair<pid_t, int>> stack = {{root, 0}};  // depth-first, in pid order
  std::set<pid_t> seen;
  while (!stack.empty()) {
    auto [pid, depth] = stack.back();
    stack.pop_back();
    if (!seen.insert(pid).second) continue;
    std::optional<ProcStat> st = read_proc_stat(pid);
    if (!st) continue;  // it has exited since
    if (out.size() >= limits.max_processes) {
      if (truncated != nullptr) *truncated = true;
      break;
    }
    TreeProcess p;
    p.pid = pid;
    p.ppid = static_cast<pid_t>(st->number(4));
    p.depth = depth;
    p.state = st->state();
    p.comm = st->comm;
    if (p.state != 'Z' && p.state != 'X') {
      p.cmdline = cmdline_of(pid);
      p.python = mapped_python_version(pid);
      if (Result<std::vector<Mapping>> maps = read_maps(pid); maps.is_ok()) {
        p.agent_mapped = std::any_of(maps->begin(), maps->end(), [](const Mapping& m) {
          return m.is_file() && path_basename(m.path).rfind("libprobing", 0) == 0;
        });
      }
    }
    if (!out.empty()) {
      for (const TreeProcess& parent : out) {
        if (parent.pid == p.ppid) p.forked = !p.cmdline.empty() && p.cmdline == parent.cmdline;
      }
    }
    out.push_back(std::move(p));
    if (depth >= limits.max_depth) {
      if (truncated != nullptr && !children_of(pid).empty()) *truncated = true;
      continue;
    }
    std::vector<pid_t> kids = children_of(pid);
    std::sort(kids.rbegin(), kids.rend());
    for (pid_t kid : kids) stack.emplace_back(kid, depth + 1);
  }
  return out;
}

}  // namespace probing::inspect
