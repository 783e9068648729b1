#include "inspect/symbols.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "inspect/elf.h"

namespace probing::inspect {
namespace {

std::string hex(std::uintptr_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%lx", static_cast<unsigned long>(v));
  return buf;
}

}  // namespace

std::vector<std::string> readable_paths(pid_t pid, const Mapping& m) {
  const std::string proc = "/proc/" + std::to_string(pid);
  std::vector<std::string> paths{proc + "/map_files/" + hex(m.start) + "-" + hex(m.end)};
  if (!m.deleted) paths.push_back(proc + "/root" + m.path);
  return paths;
}

std::vector<std::string> mapped_files(const std::vector<Mapping>& maps) {
  std::vector<std::string> files;
  for (const Mapping& m : maps) {
    if (m.is_file() && std::find(files.begin(), files.end(), m.path) == files.end()) {
      files.push_back(m.path);
    }
  }
  return files;
}

Result<std::uintptr_t> resolve_symbol_in(pid_t pid, const std::vector<Mapping>& maps,
                                         const std::string& object_path, const std::string& symbol) {
  const Mapping* first = nullptr;
  for (const Mapping& m : maps) {
    if (m.is_file() && m.path == object_path) {
      first = &m;
      break;
    }
  }
  if (first == nullptr) return Status(Code::kNotFound, object_path + " is not mapped");

  Status last = Status(Code::kNotFound, "no readable copy of " + object_path);
  for (const std::string& path : readable_paths(pid, *first)) {
    Result<ElfSymbol> sym = find_elf_dynamic_symbol(path, symbol);
    if (!sym) {
      last = sym.status();
      if (last.code() == Code::kNotFound) return last;  // read, and not defined there
      continue;
    }
    if (sym->ifunc) {
      return Status(Code::kUnsupported, object_path + ": " + symbol + " is an IFUNC");
    }
    for (const Mapping& m : maps) {
      if (m.path != object_path || m.inode != first->inode) continue;
      if (sym->file_offset >= m.offset && sym->file_offset - m.offset < m.end - m.start) {
        return m.start + static_cast<std::uintptr_t>(sym->file_offset - m.offset);
      }
    }
    return Status(Code::kNotFound, object_path + ": the part of the file holding " + symbol +
                                       " is not mapped");
  }
  return last;
}

Result<std::uintptr_t> find_remote_symbol(pid_t pid, const std::string& symbol) {
  Result<std::vector<Mapping>> maps = read_maps(pid);
  if (!maps) return maps.status().with_context("looking up " + symbol + " in process " + std::to_string(pid));
  for (const std::string& object : mapped_files(*maps)) {
    Result<std::uintptr_t> address = resolve_symbol_in(pid, *maps, object, symbol);
    if (address) return address;
    // Unreadable or odd objects (32-bit, no section headers) cannot define it for our purposes.
  }
  return Status(Code::kNotFound, "no object mapped in process " + std::to_string(pid) + " defines " + symbol);
}

Result<bool> has_mapped_library(pid_t pid, const std::string& basename) {
  Result<std::vector<Mapping>> maps = read_maps(pid);
  if (!maps) return maps.status();
  for (const Mapping& m : *maps) {
    if (m.is_file() && path_basename(m.path) == basename) return true;
  }
  return false;
}

}  // namespace probing::inspect
