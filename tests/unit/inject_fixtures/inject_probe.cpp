// The library the injector tests load into targets. Its constructor appends "loaded <pid>" to
// the file named by INJECT_PROBE_OUT (default /tmp/inject-probe-<pid>), then, when
// INJECT_PROBE_DELAY_MS is set, sleeps that long (so a test can send signals mid-call).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace {

__attribute__((constructor)) void inject_probe_loaded() {
  char fallback[64];
  const char* out = std::getenv("INJECT_PROBE_OUT");
  if (out == nullptr) {
    std::snprintf(fallback, sizeof fallback, "/tmp/inject-probe-%d", static_cast<int>(getpid()));
    out = fallback;
  }
  int fd = open(out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd >= 0) {
    char line[64];
    int n = std::snprintf(line, sizeof line, "loaded %d\n", static_cast<int>(getpid()));
    if (n > 0 && write(fd, line, static_cast<size_t>(n)) < 0) {
      // nothing to do: the test will see the file empty
    }
    close(fd);
  }
  if (const char* delay = std::getenv("INJECT_PROBE_DELAY_MS")) {
    long ms = std::strtol(delay, nullptr, 10);
    timespec left{ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
  }
}

}  // namespace

extern "C" int inject_probe_marker() { return 42; }
