#include "inspect/symbols.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <optional>

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

namespace {

const Mapping* first_mapping_of(const std::vector<Mapping>& maps, const std::string& object_path) {
  for (const Mapping& m : maps) {
    if (m.is_file() && m.path == object_path) return &m;
  }
  return nullptr;
}

// Where the file offset `offset` of `first`'s file is mapped in the process, if it is.
std::optional<std::uintptr_t> address_of(const std::vector<Mapping>& maps, const Mapping& first,
                                         std::uint64_t offset) {
  for (const Mapping& m : maps) {
    if (m.path != first.path || m.inode != first.inode) continue;
    if (offset >= m.offset && offset - m.offset < m.end - m.start) {
      return m.start + static_cast<std::uintptr_t>(offset - m.offset);
    }
  }
  return std::nullopt;
}

// The symbols of the first readable copy of `first`'s file.
Result<std::map<std::string, ElfSymbol>> read_symbols(pid_t pid, const Mapping& first,
                                                     const std::vector<std::string>& names) {
  Status last = Status(Code::kNotFound, "no readable copy of " + first.path);
  for (const std::string& path : readable_paths(pid, first)) {
    Result<std::map<std::string, ElfSymbol>> symbols = find_elf_dynamic_symbols(path, names);
    if (symbols.is_ok()) return symbols;
    last = symbols.status();
  }
  return last;
}

}  // namespace

Result<std::uintptr_t> resolve_symbol_in(pid_t pid, const std::vector<Mapping>& maps,
                                         const std::string& object_path, const std::string& symbol) {
  const Mapping* first = first_mapping_of(maps, object_path);
  if (first == nullptr) return Status(Code::kNotFound, object_path + " is not mapped");
  Result<std::map<std::string, ElfSymbol>> symbols = read_symbols(pid, *first, {symbol});
  if (!symbols.is_ok()) return symbols.status();
  auto sym = symbols->find(symbol);
  if (sym == symbols->end()) return Status(Code::kNotFound, object_path + " does not define " + symbol);
  if (sym->second.ifunc) return Status(Code::kUnsupported, object_path + ": " + symbol + " is an IFUNC");
  std::optional<std::uintptr_t> address = address_of(maps, *first, sym->second.file_offset);
  if (!address) {
    return Status(Code::kNotFound,
                  object_path + ": the part of the file holding " + symbol + " is not mapped");
  }
  return *address;
}

Result<std::map<std::string, std::uintptr_t>> resolve_symbols_in(pid_t pid, const std::vector<Mapping>& maps,
                                                                 const std::string& object_path,
                                                                 const std::vector<std::string>& names) {
  const Mapping* first = first_mapping_of(maps, object_path);
  if (first == nullptr) return Status(Code::kNotFound, object_path + " is not mapped");
  Result<std::map<std::string, ElfSymbol>> symbols = read_symbols(pid, *first, names);
  if (!symbols.is_ok()) return symbols.status();
  std::map<std::string, std::uintptr_t> addresses;
  for (const auto& [name, sym] : *symbols) {
    if (sym.ifunc) continue;
    if (std::optional<std::uintptr_t> a = address_of(maps, *first, sym.file_offset)) addresses[name] = *a;
  }
  return addresses;
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
