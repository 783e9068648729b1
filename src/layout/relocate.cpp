#include "layout/relocate.h"

#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/proc_files.h"

namespace probing::layout {
namespace {

struct FileMapping {
  uintptr_t start = 0, end = 0;
  uint64_t offset = 0;
  unsigned dev_major = 0, dev_minor = 0;
  uint64_t inode = 0;
};

// The file mappings of /proc/`who`/maps ("self" or a pid).
std::vector<FileMapping> file_mappings(const std::string& who) {
  std::vector<FileMapping> out;
  const std::string text = read_proc_file("/proc/" + who + "/maps", 16 << 20);
  for (size_t at = 0; at < text.size();) {
    size_t eol = text.find('\n', at);
    if (eol == std::string::npos) eol = text.size();
    const std::string line = text.substr(at, eol - at);
    at = eol + 1;
    FileMapping m;
    unsigned long start = 0, end = 0;
    unsigned long long offset = 0, inode = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx %*4s %llx %x:%x %llu", &start, &end, &offset, &m.dev_major,
                    &m.dev_minor, &inode) != 6 ||
        inode == 0) {
      continue;
    }
    m.start = start;
    m.end = end;
    m.offset = offset;
    m.inode = inode;
    out.push_back(m);
  }
  return out;
}

std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> kids;
  const std::string task = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(task.c_str());
  if (d == nullptr) return kids;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const std::string text = read_proc_file(task + "/" + e->d_name + "/children", 1 << 20);
    const char* p = text.c_str();
    char* end = nullptr;
    for (long v = std::strtol(p, &end, 10); end != p; v = std::strtol(p, &end, 10)) {
      if (v > 0) kids.push_back(static_cast<pid_t>(v));
      p = end;
    }
  }
  ::closedir(d);
  return kids;
}

}  // namespace

Result<uintptr_t> relocate_to(pid_t pid, uintptr_t address) {
  const FileMapping* here = nullptr;
  const std::vector<FileMapping> mine = file_mappings("self");
  for (const FileMapping& m : mine) {
    if (address >= m.start && address < m.end) here = &m;
  }
  if (here == nullptr) return Status(Code::kNotFound, "the address is in no file this process maps");
  const uint64_t file_offset = address - here->start + here->offset;
  const std::vector<FileMapping> theirs = file_mappings(std::to_string(pid));
  if (theirs.empty()) return Status(Code::kUnavailable, "cannot read /proc/" + std::to_string(pid) + "/maps");
  for (const FileMapping& m : theirs) {
    if (m.inode == here->inode && m.dev_major == here->dev_major && m.dev_minor == here->dev_minor &&
        file_offset >= m.offset && file_offset < m.offset + (m.end - m.start)) {
      return m.start + (file_offset - m.offset);
    }
  }
  return Status(Code::kNotFound, "process " + std::to_string(pid) + " does not run this interpreter's file");
}

std::vector<pid_t> descendants(size_t max, int max_depth) {
  std::vector<pid_t> out;
  std::vector<pid_t> level = {::getpid()};
  for (int depth = 0; depth < max_depth && !level.empty() && out.size() < max; ++depth) {
    std::vector<pid_t> next;
    for (pid_t parent : level) {
      for (pid_t kid : children_of(parent)) {
        if (out.size() >= max) break;
        out.push_back(kid);
        next.push_back(kid);
      }
    }
    level = std::move(next);
  }
  return out;
}

}  // namespace probing::layout
