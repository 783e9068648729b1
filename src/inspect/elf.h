// Dynamic symbols of an ELF file on disk (.dynsym), for finding functions in another process.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"

namespace probing::inspect {

// A defined dynamic symbol of an ELF file.
struct ElfSymbol {
  std::uint64_t value = 0;        // st_value: the link-time virtual address
  std::uint64_t file_offset = 0;  // where `value` lies in the file (through its PT_LOAD segment)
  std::uint64_t size = 0;         // st_size
  bool ifunc = false;             // STT_GNU_IFUNC: `value` is a resolver, not the function
};

// Looks `symbol` up in the .dynsym of the 64-bit ELF file at `path` (native byte order only).
// Of several definitions (versioned symbols) the default version (name@@VERSION) wins.
// kNotFound only when the file was read and does not define it; kUnavailable when it cannot be
// opened; kUnsupported for 32-bit or foreign-endian files
// and files without section headers; kInternal for a malformed file. Every read is bounds-checked.
Result<ElfSymbol> find_elf_dynamic_symbol(const std::string& path, const std::string& symbol);

}  // namespace probing::inspect
