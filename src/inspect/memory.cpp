#include "inspect/memory.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "inspect/process.h"

namespace probing::inspect {
namespace {

std::string at(std::uintptr_t address) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%lx", static_cast<unsigned long>(address));
  return buf;
}

}  // namespace

Result<RemoteMemory> RemoteMemory::open(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/mem";
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == EACCES || err == EPERM) return ptrace_denied(pid, "opening " + path);
    return errno_status("opening " + path, err);
  }
  return RemoteMemory(pid, fd);
}

RemoteMemory::RemoteMemory(RemoteMemory&& other) noexcept : pid_(other.pid_), fd_(other.fd_) {
  other.fd_ = -1;
}

RemoteMemory::~RemoteMemory() {
  if (fd_ >= 0) ::close(fd_);
}

Result<std::vector<std::uint8_t>> RemoteMemory::read(std::uintptr_t address, std::size_t length) const {
  std::vector<std::uint8_t> out(length);
  std::size_t done = 0;
  while (done < length) {
    ssize_t n = ::pread(fd_, out.data() + done, length - done, static_cast<off_t>(address + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      return errno_status("reading " + std::to_string(length) + " bytes at " + at(address) +
                              " in process " + std::to_string(pid_), err);
    }
    done += static_cast<std::size_t>(n);
  }
  return out;
}

Status RemoteMemory::write(std::uintptr_t address, const void* data, std::size_t length) const {
  const auto* p = static_cast<const std::uint8_t*>(data);
  std::size_t done = 0;
  while (done < length) {
    ssize_t n = ::pwrite(fd_, p + done, length - done, static_cast<off_t>(address + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      return errno_status("writing " + std::to_string(length) + " bytes at " + at(address) +
                              " in process " + std::to_string(pid_), err);
    }
    done += static_cast<std::size_t>(n);
  }
  return Status::ok();
}

Result<std::string> RemoteMemory::read_c_string(std::uintptr_t address, std::size_t max_length) const {
  // Page by page, so a short string at the end of a mapping does not fail the read.
  constexpr std::uintptr_t kPage = 4096;
  std::string out;
  while (out.size() < max_length) {
    const std::uintptr_t here = address + out.size();
    const std::size_t chunk = std::min<std::size_t>(kPage - here % kPage, max_length - out.size());
    Result<std::vector<std::uint8_t>> bytes = read(here, chunk);
    if (!bytes) return bytes.status();
    const auto* nul = static_cast<const std::uint8_t*>(std::memchr(bytes->data(), 0, bytes->size()));
    if (nul != nullptr) {
      out.append(reinterpret_cast<const char*>(bytes->data()), static_cast<std::size_t>(nul - bytes->data()));
      return out;
    }
    out.append(reinterpret_cast<const char*>(bytes->data()), bytes->size());
  }
  return out;
}

}  // namespace probing::inspect
