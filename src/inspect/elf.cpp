#include "inspect/elf.h"

#include <elf.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <unordered_map>

namespace probing::inspect {
namespace {

// An open ELF file, closed with its descriptor.
class ElfFile {
 public:
  ElfFile(const ElfFile&) = delete;
  ElfFile& operator=(const ElfFile&) = delete;
  ~ElfFile() {
    if (elf_ != nullptr) ::elf_end(elf_);
    if (fd_ >= 0) ::close(fd_);
  }

  static Result<std::unique_ptr<ElfFile>> open(const std::string& path) {
    static std::once_flag version_once;
    std::call_once(version_once, [] { ::elf_version(EV_CURRENT); });
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      // Not kNotFound: that code means "read, and the symbol is not there".
      const int err = errno;
      return Status(Code::kUnavailable, errno_status("opening " + path, err).message());
    }
    std::unique_ptr<ElfFile> file(new ElfFile(fd, ::elf_begin(fd, ELF_C_READ_MMAP, nullptr)));
    if (file->elf_ == nullptr || ::elf_kind(file->elf_) != ELF_K_ELF) {
      return Status(Code::kInternal, path + " is not an ELF file");
    }
    return file;
  }

  Elf* get() const { return elf_; }

 private:
  ElfFile(int fd, Elf* elf) : fd_(fd), elf_(elf) {}
  int fd_;
  Elf* elf_;
};

Status check_header(Elf* elf, const std::string& path) {
  GElf_Ehdr eh;
  if (::gelf_getehdr(elf, &eh) == nullptr) return Status(Code::kInternal, path + ": " + ::elf_errmsg(-1));
  if (eh.e_ident[EI_CLASS] != ELFCLASS64) {
    return Status(Code::kUnsupported, path + " is not a 64-bit ELF file");
  }
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  constexpr unsigned char kNativeData = ELFDATA2LSB;
#else
  constexpr unsigned char kNativeData = ELFDATA2MSB;
#endif
  if (eh.e_ident[EI_DATA] != kNativeData) {
    return Status(Code::kUnsupported, path + " has a foreign byte order");
  }
  if (eh.e_type != ET_DYN && eh.e_type != ET_EXEC) {
    return Status(Code::kInternal, path + " is neither a shared object nor an executable");
  }
  return Status::ok();
}

// Where the link-time address `value` lies in the file, through the PT_LOAD segment holding it.
std::optional<std::uint64_t> file_offset_of(Elf* elf, std::uint64_t value) {
  size_t count = 0;
  if (::elf_getphdrnum(elf, &count) != 0) return std::nullopt;
  for (size_t i = 0; i < count; ++i) {
    GElf_Phdr seg;
    if (::gelf_getphdr(elf, static_cast<int>(i), &seg) == nullptr || seg.p_type != PT_LOAD) continue;
    if (value >= seg.p_vaddr && value - seg.p_vaddr < seg.p_filesz) return value - seg.p_vaddr + seg.p_offset;
  }
  return std::nullopt;
}

}  // namespace

Result<std::map<std::string, ElfSymbol>> find_elf_dynamic_symbols(const std::string& path,
                                                                 const std::vector<std::string>& names) {
  Result<std::unique_ptr<ElfFile>> file = ElfFile::open(path);
  if (!file.is_ok()) return file.status();
  Elf* elf = (*file)->get();
  PROBING_RETURN_IF_ERROR(check_header(elf, path));

  Elf_Scn* dynsym = nullptr;
  Elf_Scn* versym = nullptr;
  GElf_Shdr dynsym_header{};
  for (Elf_Scn* scn = ::elf_nextscn(elf, nullptr); scn != nullptr; scn = ::elf_nextscn(elf, scn)) {
    GElf_Shdr sh;
    if (::gelf_getshdr(scn, &sh) == nullptr) continue;
    if (sh.sh_type == SHT_DYNSYM && dynsym == nullptr) {
      dynsym = scn;
      dynsym_header = sh;
    }
    if (sh.sh_type == SHT_GNU_versym && versym == nullptr) versym = scn;
  }
  std::map<std::string, ElfSymbol> found;
  if (dynsym == nullptr || dynsym_header.sh_entsize == 0) return found;
  Elf_Data* symbols = ::elf_getdata(dynsym, nullptr);
  Elf_Data* versions = versym != nullptr ? ::elf_getdata(versym, nullptr) : nullptr;
  if (symbols == nullptr) return Status(Code::kInternal, path + ": .dynsym: " + ::elf_errmsg(-1));

  struct Best {
    GElf_Sym sym;
    bool is_default;
  };
  std::unordered_map<std::string_view, std::optional<Best>> wanted;
  for (const std::string& name : names) wanted.emplace(name, std::nullopt);
  const size_t count = dynsym_header.sh_size / dynsym_header.sh_entsize;
  for (size_t i = 0; i < count; ++i) {
    GElf_Sym sym;
    if (::gelf_getsym(symbols, static_cast<int>(i), &sym) == nullptr) break;
    if (sym.st_shndx == SHN_UNDEF) continue;
    const unsigned bind = GELF_ST_BIND(sym.st_info);
    if (bind != STB_GLOBAL && bind != STB_WEAK) continue;
    const char* name = ::elf_strptr(elf, dynsym_header.sh_link, sym.st_name);
    if (name == nullptr) continue;
    auto it = wanted.find(name);
    if (it == wanted.end()) continue;
    bool is_default = true;
    GElf_Versym v;
    if (versions != nullptr && ::gelf_getversym(versions, static_cast<int>(i), &v) != nullptr) {
      is_default = (v & 0x8000) == 0;  // VERSYM_HIDDEN marks name@VERSION, not name@@VERSION
    }
    if (!it->second || (is_default && !it->second->is_default)) it->second = Best{sym, is_default};
  }
  for (const auto& [name, best] : wanted) {
    if (!best) continue;
    std::optional<std::uint64_t> offset = file_offset_of(elf, best->sym.st_value);
    if (!offset) continue;
    found[std::string(name)] = ElfSymbol{best->sym.st_value, *offset, best->sym.st_size,
                                         GELF_ST_TYPE(best->sym.st_info) == STT_GNU_IFUNC};
  }
  return found;
}

Result<ElfSymbol> find_elf_dynamic_symbol(const std::string& path, const std::string& symbol) {
  Result<std::map<std::string, ElfSymbol>> found = find_elf_dynamic_symbols(path, {symbol});
  if (!found.is_ok()) return found.status();
  auto it = found->find(symbol);
  if (it == found->end()) return Status(Code::kNotFound, path + " does not define " + symbol);
  return it->second;
}

}  // namespace probing::inspect
