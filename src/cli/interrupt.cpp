#include "cli/interrupt.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <iostream>
#include <mutex>
#include <thread>

#include "inspect/process.h"
#include "core/syscalls.h"

namespace probing::cli {
namespace {

int g_pipe[2] = {-1, -1};  // written by the SIGINT handler

extern "C" void on_sigint(int) {
  int saved = errno;
  char c = 'i';
  ssize_t n = ::write(g_pipe[1], &c, 1);
  (void)n;  // a full pipe already says "interrupted"
  errno = saved;
}

// Where the thread running the eval is, when the target is a process here: "it waits in
// clock_nanosleep" — so the user knows why the interrupt waits. "" when not known.
std::string where_the_code_is(const Context& ctx, const nlohmann::json& reply) {
  Result<client::Target> target = client::parse_target(ctx.target);
  if (!target.is_ok() || target->kind != client::Target::Kind::kPid) return "";
  if (!reply.is_object() || !reply.value("thread", nlohmann::json()).is_number_integer()) return "";
  pid_t tid = reply["thread"].get<pid_t>();
  if (tid <= 0) return "";
  inspect::SyscallHint hint = inspect::read_syscall_hint(target->pid, tid);
  if (!hint.known || hint.running || hint.nr < 0) return "";
  return "; it waits in " + syscall_name(hint.nr) + " now, which Python lets finish first";
}

// POST /interrupt for the eval `id`, and what it means for the user, on stderr.
void send_interrupt(const Context& ctx, const std::string& id) {
  auto client = connect_target(ctx, 2);
  if (!client.is_ok()) return;  // the eval's own reply will say what happened
  nlohmann::json body = {{"id", id}};
  Result<client::Response> reply = (*client)->request("POST", "/interrupt", body.dump(), 5);
  if (!reply.is_ok()) return;
  if (reply->status == 404) return;  // it has just finished: its reply is on the way
  if (reply->status == 503) {
    std::cerr
        << "\nprobing: the code has not started yet (it waits for the GIL); Ctrl-C again to stop waiting\n";
    return;
  }
  if (reply->status != 200) {
    std::cerr << "\nprobing: could not interrupt: " << reply->error_message() << "\n";
    return;
  }
  std::cerr << "\nprobing: KeyboardInterrupt sent; it is raised when the code next runs Python"
            << where_the_code_is(ctx, reply->json()) << ". Ctrl-C again to stop waiting.\n"
            << std::flush;
}

}  // namespace

SigintPipe::SigintPipe() {
  if (::pipe2(g_pipe, O_NONBLOCK | O_CLOEXEC) != 0) return;
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sa.sa_flags = SA_RESTART;  // reads at a prompt go on; waits poll the pipe
  sigemptyset(&sa.sa_mask);
  ok_ = ::sigaction(SIGINT, &sa, &previous_) == 0;
}

SigintPipe::~SigintPipe() {
  if (ok_) ::sigaction(SIGINT, &previous_, nullptr);
  for (int& fd : g_pipe) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
}

int SigintPipe::fd() const { return g_pipe[0]; }

void SigintPipe::drain() const {
  char buf[64];
  while (::read(g_pipe[0], buf, sizeof buf) > 0) {
  }
}

std::optional<Result<client::Response>> eval_interruptibly(const Context& ctx,
                                                           std::shared_ptr<client::Client> client,
                                                           const nlohmann::json& body, double wait_s,
                                                           const SigintPipe& sigint) {
  // Shared by the thread that sends the eval and this one, which may stop waiting first.
  struct Pending {
    int fds[2] = {-1, -1};
    std::mutex mu;
    std::optional<Result<client::Response>> reply;
    ~Pending() {
      for (int fd : fds)
        if (fd >= 0) ::close(fd);
    }
  };
  auto pending = std::make_shared<Pending>();
  if (::pipe2(pending->fds, O_CLOEXEC) != 0) return Result<client::Response>(errno_status("pipe"));
  sigint.drain();
  std::thread([pending, client, text = body.dump(), wait_s] {
    Result<client::Response> r = client->request("POST", "/eval", text, wait_s);
    {
      std::lock_guard<std::mutex> lock(pending->mu);
      pending->reply.emplace(std::move(r));
    }
    char c = 'd';
    ssize_t n = ::write(pending->fds[1], &c, 1);
    (void)n;
  }).detach();
  int interrupts = 0;
  for (;;) {
    pollfd fds[2] = {{sigint.fd(), POLLIN, 0}, {pending->fds[0], POLLIN, 0}};
    int n = ::poll(fds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (fds[1].revents != 0) break;
    if (fds[0].revents != 0) {
      sigint.drain();
      if (++interrupts == 1) {
        send_interrupt(ctx, body.value("id", ""));
      } else {
        std::cerr << "\nprobing: stopped waiting; the code may still be running in the target\n";
        return std::nullopt;
      }
    }
  }
  std::lock_guard<std::mutex> lock(pending->mu);
  return std::move(pending->reply);
}

}  // namespace probing::cli
