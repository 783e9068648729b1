#include "inspect/elf.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace probing::inspect {
namespace {

// Caps what we read from one file, so a corrupt header cannot make us allocate gigabytes.
constexpr std::uint64_t kMaxTableBytes = 64ull << 20;

class File {
 public:
  explicit File(int fd) : fd_(fd) {}
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File() {
    if (fd_ >= 0) ::close(fd_);
  }
  int fd() const { return fd_; }

 private:
  int fd_;
};

class ElfReader {
 public:
  ElfReader(int fd, std::uint64_t size, std::string path)
      : fd_(fd), size_(size), path_(std::move(path)) {}

  // Reads `length` bytes at `offset` into `out`; fails when the range is outside the file.
  Status read(std::uint64_t offset, void* out, std::uint64_t length) const {
    if (offset > size_ || length > size_ - offset) {
      return Status(Code::kInternal, path_ + ": range [" + std::to_string(offset) + ", +" +
                                         std::to_string(length) + ") is outside the file (" +
                                         std::to_string(size_) + " bytes)");
    }
    auto* p = static_cast<char*>(out);
    std::uint64_t done = 0;
    while (done < length) {
      ssize_t n = ::pread(fd_, p + done, length - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno_status("reading " + path_);
      if (n == 0) return Status(Code::kInternal, path_ + ": unexpected end of file");
      done += static_cast<std::uint64_t>(n);
    }
    return Status::ok();
  }

  Status read_table(std::uint64_t offset, std::uint64_t length, std::vector<char>& out) const {
    if (length > kMaxTableBytes) {
      return Status(Code::kInternal, path_ + ": table of " + std::to_string(length) +
                                         " bytes is implausibly large");
    }
    out.resize(length);
    return read(offset, out.data(), length);
  }

  const std::string& path() const { return path_; }

 private:
  int fd_;
  std::uint64_t size_;
  std::string path_;
};

Status check_header(const Elf64_Ehdr& eh, const std::string& path) {
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) {
    return Status(Code::kInternal, path + " is not an ELF file");
  }
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
  if (eh.e_shnum == 0 || eh.e_shentsize != sizeof(Elf64_Shdr)) {
    return Status(Code::kUnsupported, path + " has no usable section headers");
  }
  if (eh.e_phnum == 0 || eh.e_phentsize != sizeof(Elf64_Phdr)) {
    return Status(Code::kInternal, path + " has no usable program headers");
  }
  return Status::ok();
}

}  // namespace

Result<ElfSymbol> find_elf_dynamic_symbol(const std::string& path, const std::string& symbol) {
  File file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (file.fd() < 0) {
    // Not kNotFound: that code means "read, and the symbol is not there".
    const int err = errno;
    return Status(Code::kUnavailable, errno_status("opening " + path, err).message());
  }
  struct stat st {};
  if (::fstat(file.fd(), &st) != 0) return errno_status("stat " + path);
  ElfReader elf(file.fd(), static_cast<std::uint64_t>(st.st_size), path);

  Elf64_Ehdr eh{};
  PROBING_RETURN_IF_ERROR(elf.read(0, &eh, sizeof eh));
  PROBING_RETURN_IF_ERROR(check_header(eh, path));

  std::vector<Elf64_Shdr> sections(eh.e_shnum);
  PROBING_RETURN_IF_ERROR(elf.read(eh.e_shoff, sections.data(), sections.size() * sizeof(Elf64_Shdr)));
  std::vector<Elf64_Phdr> segments(eh.e_phnum);
  PROBING_RETURN_IF_ERROR(elf.read(eh.e_phoff, segments.data(), segments.size() * sizeof(Elf64_Phdr)));

  const Elf64_Shdr* dynsym = nullptr;
  const Elf64_Shdr* versym = nullptr;
  for (const Elf64_Shdr& s : sections) {
    if (s.sh_type == SHT_DYNSYM && dynsym == nullptr) dynsym = &s;
    if (s.sh_type == SHT_GNU_versym && versym == nullptr) versym = &s;
  }
  if (dynsym == nullptr) return Status(Code::kNotFound, path + " has no .dynsym");
  if (dynsym->sh_entsize != sizeof(Elf64_Sym) || dynsym->sh_link >= sections.size()) {
    return Status(Code::kInternal, path + ": malformed .dynsym header");
  }
  const Elf64_Shdr& strtab = sections[dynsym->sh_link];

  std::vector<char> sym_bytes;
  std::vector<char> names;
  std::vector<char> versions;
  PROBING_RETURN_IF_ERROR(elf.read_table(dynsym->sh_offset, dynsym->sh_size, sym_bytes));
  PROBING_RETURN_IF_ERROR(elf.read_table(strtab.sh_offset, strtab.sh_size, names));
  const std::size_t count = sym_bytes.size() / sizeof(Elf64_Sym);
  if (versym != nullptr && versym->sh_size == count * sizeof(Elf64_Half)) {
    PROBING_RETURN_IF_ERROR(elf.read_table(versym->sh_offset, versym->sh_size, versions));
  }

  const Elf64_Sym* best = nullptr;
  bool best_is_default = false;
  for (std::size_t i = 0; i < count; ++i) {
    Elf64_Sym sym;
    std::memcpy(&sym, sym_bytes.data() + i * sizeof(Elf64_Sym), sizeof sym);
    if (sym.st_shndx == SHN_UNDEF || sym.st_name >= names.size()) continue;
    const unsigned bind = ELF64_ST_BIND(sym.st_info);
    if (bind != STB_GLOBAL && bind != STB_WEAK) continue;
    // Compare against the NUL-terminated name without running off the table's end.
    const std::size_t room = names.size() - sym.st_name;
    if (symbol.size() >= room || std::memcmp(names.data() + sym.st_name, symbol.data(), symbol.size()) != 0 ||
        names[sym.st_name + symbol.size()] != '\0') {
      continue;
    }
    bool is_default = true;
    if (!versions.empty()) {
      Elf64_Half v;
      std::memcpy(&v, versions.data() + i * sizeof v, sizeof v);
      is_default = (v & 0x8000) == 0;  // VERSYM_HIDDEN marks name@VERSION, not name@@VERSION
    }
    if (best == nullptr || (is_default && !best_is_default)) {
      best = reinterpret_cast<const Elf64_Sym*>(sym_bytes.data() + i * sizeof(Elf64_Sym));
      best_is_default = is_default;
    }
  }
  if (best == nullptr) return Status(Code::kNotFound, path + " does not define " + symbol);

  Elf64_Sym sym;
  std::memcpy(&sym, best, sizeof sym);
  ElfSymbol out;
  out.value = sym.st_value;
  out.size = sym.st_size;
  out.ifunc = ELF64_ST_TYPE(sym.st_info) == STT_GNU_IFUNC;
  for (const Elf64_Phdr& seg : segments) {
    if (seg.p_type != PT_LOAD) continue;
    if (sym.st_value >= seg.p_vaddr && sym.st_value - seg.p_vaddr < seg.p_filesz) {
      out.file_offset = sym.st_value - seg.p_vaddr + seg.p_offset;
      return out;
    }
  }
  return Status(Code::kUnsupported, path + ": " + symbol + " is not inside a loaded file segment");
}

}  // namespace probing::inspect
