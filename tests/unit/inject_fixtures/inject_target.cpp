// A small native target for the injector tests. Prints "ready" on stdout when it is in the
// state its mode names, then:
//   sleep MS   one nanosleep(MS); prints "slept rc=R errno=E" and "result 499500"
//   read       one read(0); prints "read rc=N data=<line>"
//   spin       spins in this executable forever
//   threads N  starts N threads that sleep in a loop, then does "read"
//   signals    counts SIGUSR1 (SA_RESTART), does "read", prints "usr1=C ..."
//   condwait MS  waits MS on a condition nobody signals; prints "cond rc=R" (110: ETIMEDOUT)
//   iterate    waits forever in a dl_iterate_phdr callback (the loader's list lock held)
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace {

volatile sig_atomic_t g_usr1 = 0;

void on_usr1(int) { g_usr1 = g_usr1 + 1; }

void* sleeper(void*) {
  for (;;) {
    timespec ts{0, 20 * 1000000L};
    nanosleep(&ts, nullptr);
  }
  return nullptr;
}

void ready() {
  std::printf("ready\n");
  std::fflush(stdout);
}

int do_read() {
  char buf[256];
  ssize_t n = read(0, buf, sizeof buf - 1);
  int err = errno;
  if (n < 0) n = -1;
  buf[n > 0 ? n : 0] = '\0';
  char* nl = std::strchr(buf, '\n');
  if (nl != nullptr) *nl = '\0';
  std::printf("read rc=%zd errno=%d data=%s\n", n, n < 0 ? err : 0, buf);
  std::fflush(stdout);
  return 0;
}

pthread_mutex_t g_mutex = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;

int wait_forever_in_callback(dl_phdr_info*, size_t, void*) {
  ready();
  pthread_mutex_lock(&g_mutex);
  for (;;) pthread_cond_wait(&g_cond, &g_mutex);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const char* mode = argv[1];
  if (std::strcmp(mode, "sleep") == 0 && argc > 2) {
    long ms = std::strtol(argv[2], nullptr, 10);
    timespec ts{ms / 1000, (ms % 1000) * 1000000L};
    ready();
    int rc = nanosleep(&ts, nullptr);
    int err = rc != 0 ? errno : 0;
    long sum = 0;
    for (int i = 0; i < 1000; ++i) sum += i;
    std::printf("slept rc=%d errno=%d\nresult %ld\n", rc, err, sum);
    return 0;
  }
  if (std::strcmp(mode, "read") == 0) {
    ready();
    return do_read();
  }
  if (std::strcmp(mode, "spin") == 0) {
    ready();
    volatile unsigned long x = 0;
    for (;;) x = x + 1;
  }
  if (std::strcmp(mode, "threads") == 0 && argc > 2) {
    int n = static_cast<int>(std::strtol(argv[2], nullptr, 10));
    for (int i = 0; i < n; ++i) {
      pthread_t t;
      if (pthread_create(&t, nullptr, sleeper, nullptr) != 0) return 3;
      pthread_detach(t);
    }
    ready();
    return do_read();
  }
  if (std::strcmp(mode, "signals") == 0) {
    struct sigaction sa {};
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, nullptr);
    ready();
    do_read();
    std::printf("usr1=%d\n", static_cast<int>(g_usr1));
    std::fflush(stdout);
    return 0;
  }
  if (std::strcmp(mode, "condwait") == 0 && argc > 2) {
    long ms = std::strtol(argv[2], nullptr, 10);
    timespec until{};
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
      until.tv_sec += 1;
      until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&g_mutex);
    ready();
    int rc = pthread_cond_timedwait(&g_cond, &g_mutex, &until);
    pthread_mutex_unlock(&g_mutex);
    std::printf("cond rc=%d\n", rc);
    return 0;
  }
  if (std::strcmp(mode, "iterate") == 0) {
    dl_iterate_phdr(wait_forever_in_callback, nullptr);
    return 0;
  }
  return 2;
}
