// Dynamic symbols of an ELF file on disk (.dynsym), for finding functions and data in another
// process. Read with elfutils' libelf, bounds-checked, several names in one pass.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"

namespace probing::inspect {

// A defined dynamic symbol of an ELF file.
struct ElfSymbol {
  std::uint64_t value = 0;        // st_value: the link-time virtual address
  std::uint64_t file_offset = 0;  // where `value` lies in the file (through its PT_LOAD segment)
  std::uint64_t size = 0;         // st_size
  bool ifunc = false;             // STT_GNU_IFUNC: `value` is a resolver, not the function
};

// Looks each of `names` up in the .dynsym of the 64-bit ELF file at `path` (native byte order
// only), in one pass over the table. A name the file does not define (or defines outside its
// loaded segments) is absent from the result. Of several definitions (versioned symbols) the
// default version (name@@VERSION) wins. kUnavailable when the file cannot be opened;
// kUnsupported for 32-bit or foreign-endian files; kInternal for a file that is not ELF.
Result<std::map<std::string, ElfSymbol>> find_elf_dynamic_symbols(const std::string& path,
                                                                 const std::vector<std::string>& names);

// One name: kNotFound when the file was read and does not define it; other errors as above.
Result<ElfSymbol> find_elf_dynamic_symbol(const std::string& path, const std::string& symbol);

}  // namespace probing::inspect
