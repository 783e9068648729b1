// Built into the agent and the CLI only when they are built against an older C library than the
// compiler's (cmake/sysroot.cmake: glibc 2.31). GCC 12's libstdc++.a, linked in statically, was
// compiled against a newer glibc and refers to two symbols that 2.31 lacks; they are defined here,
// hidden, so the static libstdc++ binds to these and the C library is asked for neither.
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

extern "C" {

// glibc 2.32: nonzero while the process has a single thread, so that libstdc++ may skip atomic
// reference counting. Zero means "always atomic", which is right in every process.
__attribute__((visibility("hidden"))) char __libc_single_threaded = 0;

// glibc 2.36: the source behind std::random_device("arc4random"), which the agent never asks for.
// getrandom(2); /dev/urandom where the kernel lacks it.
__attribute__((visibility("hidden"))) uint32_t arc4random(void) {
  uint32_t v = 0;
  for (;;) {
    const ssize_t n = ::getrandom(&v, sizeof v, 0);
    if (n == static_cast<ssize_t>(sizeof v)) return v;
    if (n < 0 && errno != EINTR) break;
  }
  const int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    const ssize_t n = ::read(fd, &v, sizeof v);
    ::close(fd);
    if (n == static_cast<ssize_t>(sizeof v)) return v;
  }
  timespec t{};
  ::clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<uint32_t>(t.tv_nsec) ^ static_cast<uint32_t>(::getpid()) << 16;
}

}  // extern "C"
