#include "core/agent_copy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

namespace probing {

Result<std::string> copy_agent_library(const std::string& lib, const std::string& root,
                                       const std::string& name) {
  struct stat mine {};
  if (::stat(lib.c_str(), &mine) != 0) return errno_status("reading " + lib);
  const std::string dir = "/tmp/probing-agent-" + std::to_string(::geteuid()) + "-" +
                          std::to_string(static_cast<long long>(mine.st_size)) + "-" +
                          std::to_string(static_cast<long long>(mine.st_mtime));
  const std::string copy = dir + "/" + name;
  const std::string where = root.empty() ? std::string() : " in the target's filesystem";
  // The directory first: its name can be guessed, so another user may have made it, or put a
  // link in it. Only a directory of this user's that nobody else may write holds copies we trust.
  if (::mkdir((root + dir).c_str(), 0755) != 0 && errno != EEXIST) {
    return errno_status("making " + dir + where + " for a copy of the agent library");
  }
  struct stat d {};
  if (::lstat((root + dir).c_str(), &d) != 0 || !S_ISDIR(d.st_mode) || d.st_uid != ::geteuid() ||
      (d.st_mode & 0022) != 0) {
    return Status(Code::kPermissionDenied,
                  dir + where + " is not a private directory of this user; remove it and try again");
  }
  struct stat have {};
  if (::lstat((root + copy).c_str(), &have) == 0 && S_ISREG(have.st_mode) && have.st_size == mine.st_size &&
      have.st_uid == ::geteuid()) {
    return copy;  // copied before (a regular file, never a link)
  }
  // Written as an unnamed file, named once whole: a copier killed half-way (a fork that exits
  // at once) leaves nothing behind, and two copiers at once each put one whole library in place.
  int in = ::open(lib.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return errno_status("reading " + lib);
  std::string part;  // the named temporary file, where the filesystem has no unnamed ones
  int out = ::open((root + dir).c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0755);
  if (out < 0) {
    part = root + copy + ".part" + std::to_string(::getpid());
    out = ::open(part.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0755);
  }
  if (out < 0) {
    ::close(in);
    return errno_status("writing a copy of the agent library to " + dir + where);
  }
  // In the kernel where it can (no trip through this process; a reflink on filesystems that
  // share blocks), else through a buffer.
  ssize_t n = 0;
  bool ok = true;
  off_t copied = 0;
  while ((n = ::copy_file_range(in, nullptr, out, nullptr, 1 << 30, 0)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) copied += n;
  }
  if (n < 0 && copied == 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
    char buf[1 << 16];
    n = 0;
    while (ok && ((n = ::read(in, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))) {
      if (n > 0) ok = ::write(out, buf, static_cast<size_t>(n)) == n;
      if (n > 0 && ok) copied += n;
    }
  }
  // A short copy is never named: a truncated library would fault whoever loads it.
  ok = ok && n == 0 && copied == mine.st_size;
  const struct timespec times[2] = {mine.st_atim, mine.st_mtim};
  ok = ok && n == 0 && ::fchmod(out, 0755) == 0 && ::fsync(out) == 0 && ::futimens(out, times) == 0;
  ::close(in);
  if (ok && part.empty()) {
    const std::string self = "/proc/self/fd/" + std::to_string(out);
    ok = ::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, (root + copy).c_str(), AT_SYMLINK_FOLLOW) == 0;
    if (!ok && errno == EEXIST) {  // another copier was first: its file, if it is whole
      ok = ::lstat((root + copy).c_str(), &have) == 0 && S_ISREG(have.st_mode) &&
           have.st_size == mine.st_size && have.st_uid == ::geteuid();
    }
  } else if (ok) {
    ok = ::rename(part.c_str(), (root + copy).c_str()) == 0;
  }
  const int saved = errno;
  ok = ::close(out) == 0 && ok;
  if (!ok) {
    if (!part.empty()) ::unlink(part.c_str());
    return errno_status("copying the agent library to " + copy + where, saved);
  }
  return copy;
}

std::string fork_copy_name(const std::string& basename) {
  const std::string prefix = "libprobing-fork";
  if (basename.rfind(prefix, 0) == 0) {
    const int n = std::atoi(basename.c_str() + prefix.size());  // 0 for "libprobing-fork.so"
    return prefix + std::to_string(n == 0 ? 2 : n + 1) + ".so";
  }
  return prefix + ".so";
}

}  // namespace probing
