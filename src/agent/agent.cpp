// libprobing.so's entry points. However the library arrives — LD_PRELOAD, dlopen by the
// injector, or ctypes from `probing.init()` — its constructor starts one thread and returns:
// no Python runs at load time, and nothing here can take the host process down.
#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>

#include "agent/exceptions.h"
#include "agent/subprocesses.h"
#include "bindings/table_binding.h"
#include "build_info.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/settings.h"
#include "layout/version.h"
#include "profile/sampler.h"
#include "python/capi.h"
#include "python/crash.h"
#include "server/audit.h"
#include "server/auth.h"
#include "server/cluster.h"
#include "server/http_server.h"
#include "server/routes.h"
#include "sql/tables/tables.h"
#include "torch/hooks.h"
#include "torch/torch_trace.h"

#define PROBING_EXPORT extern "C" __attribute__((visibility("default")))

namespace probing::agent {
namespace {

std::atomic<bool> g_started{false};
std::atomic<int> g_listen_fd{-1};
std::atomic<int> g_tcp_listen_fd{-1};
std::atomic<server::HttpServer*> g_server{nullptr};

// How long the host's exit may wait for the agent's I/O thread to leave what it is doing.
constexpr std::chrono::milliseconds kExitWait{200};

// Runs from exit(), before the library state that exit() tears down (OpenSSL's, Boost's, the C++
// runtime's): registered after each of them (see bootstrap), and exit handlers run in reverse.
// Agent threads may go on after it, but only in code that uses nothing exit() destroys: the
// agent's own objects are never destroyed, and no reply reaches the I/O thread.
void stop_serving_at_exit() noexcept {
  server::stop_cluster_membership(kExitWait);
  if (server::HttpServer* srv = g_server.load()) srv->stop_serving(kExitWait);
}

// In a forked child (a DataLoader worker, a multiprocessing fork) none of the agent's threads
// exist. The child closes the inherited listening socket, so @probing-<parent pid> keeps meaning
// the parent; the child itself runs without an agent (one that execs starts its own).
void after_fork_in_child() {
  // The exit handler is inherited too; it must not touch the parent's server (whose I/O thread
  // the child does not have, and whose locks it may have copied held).
  g_server.store(nullptr);
  for (std::atomic<int>* listener : {&g_listen_fd, &g_tcp_listen_fd}) {
    int fd = listener->exchange(-1);
    if (fd >= 0) ::close(fd);
  }
  bindings::on_fork_child();
  torch::on_fork_child();
}

// Reads and deletes the settings `probing PID inject -D` left for this process. Only a file owned
// by this process's user or root, and writable by nobody else, is trusted.
void apply_inject_settings(Settings& s) {
  std::string path = inject_settings_path(::getpid());
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  struct stat st {};
  bool trusted = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
                 (st.st_uid == ::geteuid() || st.st_uid == 0) && (st.st_mode & (S_IWGRP | S_IWOTH)) == 0 &&
                 st.st_size < (1 << 16);
  std::string text;
  if (trusted) {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (!trusted) {
    log_warn("ignored " + path + ": not owned by this user, or writable by others");
    return;
  }
  ::unlink(path.c_str());
  for (const Status& err : s.apply_lines(text)) log_warn("inject setting: " + err.message());
}

// Who holds the abstract socket `name` (its listener's credentials), or nullopt when nobody
// answers on it.
std::optional<ucred> holder_of(const std::string& name) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  size_t n = std::min(name.size(), sizeof addr.sun_path - 1);
  std::memcpy(addr.sun_path + 1, name.data(), n);
  ucred cred{};
  socklen_t len = sizeof cred;
  auto addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), addr_len) == 0 &&
            ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0;
  ::close(fd);
  return ok ? std::optional<ucred>(cred) : std::nullopt;
}

void bootstrap() noexcept {
  try {
    // Every agent thread is named probing-*: `inject` tells a forked child, whose inherited
    // agent has no threads, from a process whose agent is still starting.
    ::pthread_setname_np(::pthread_self(), "probing-agent");
    init_logging_from_env();
    Settings& s = settings();
    declare_builtin_settings(s);
    for (const Status& st : s.apply_environment()) log_warn(st.message());
    if (const char* t = ::getenv("PROBING_TORCH");
        t != nullptr && *t != '\0') {  // short for PROBING_TORCH_TRACE
      if (Status st = s.set("torch.trace", t); !st.is_ok()) log_warn("PROBING_TORCH: " + st.message());
    }
    apply_inject_settings(s);
    if (Status st = sql::add_builtin_tables(); !st.is_ok()) log_error("SQL tables: " + st.message());
    if (Status st = profile::add_profile_tables(sql::Engine::get()); !st.is_ok()) {
      log_error("profile tables: " + st.message());
    }
    auto* info = new server::AgentInfo;  // lives as long as the server: forever
    info->version = PROBING_VERSION;
    info->socket = "@probing-" + std::to_string(::getpid());
    info->started_at = unix_now_s();
    info->subprocesses = subprocess_agents_state;
    server::ServerOptions options;
    options.abstract_name = info->socket.substr(1);
    options.max_connections = static_cast<int>(s.get_int("server.max_connections"));
    options.request_timeout_s = s.get_double("server.request_timeout_s");
    options.max_body_bytes = static_cast<size_t>(s.get_int("server.max_body_bytes"));
    options.inline_paths = {"/health"};
    Result<server::RemoteOptions> remote = server::remote_options_from_env();
    if (remote.is_ok() && remote->enabled && remote->port != 0 && loaded_by_a_fork()) {
      // A DataLoader worker inherits PROBING_PORT (and RANK): that port is its parent's.
      remote = Status(Code::kAlreadyExists, "a forked child: port " + std::to_string(remote->port) +
                                                " is its parent's; it serves its unix socket only");
    }
    if (remote.is_ok()) {
      options.remote = *remote;
      options.max_tcp_connections = options.max_connections;
      info->remote = *remote;
    } else {
      // TCP stays off; the rest of the agent, and the process, go on. (Errors reach stderr.)
      if (remote.status().code() == Code::kAlreadyExists) {
        log_info("not listening on TCP: " + remote.status().message());  // a launcher of ranks
      } else {
        log_error("not listening on TCP: " + remote.status().message());
      }
    }
    server::add_audit_table();
    Result<server::HttpServer*> srv = server::HttpServer::start(options, server::make_router(*info));
    if (!srv.is_ok()) {
      if (srv.status().code() == Code::kAlreadyExists) {
        std::optional<ucred> holder = holder_of(options.abstract_name);
        if (holder && holder->pid != ::getpid()) {
          log_warn(info->socket + " is held by process " + std::to_string(holder->pid) + " (uid " +
                   std::to_string(holder->uid) +
                   "), not by this process: the agent does not serve, and clients " +
                   "refuse to talk to the holder");
        } else {
          log_info("another copy of the agent already serves this process");
        }
      } else {
        log_error("the agent could not start: " + srv.status().message());
      }
      return;
    }
    g_server.store(*srv);
    // The server's construction initialized OpenSSL and Boost's statics (their exit handlers are
    // registered by now), and this runs after libprobing's load-time constructors: registered
    // now, the agent stops serving before any of them is torn down.
    if (std::atexit(stop_serving_at_exit) != 0) log_warn("could not register the agent's exit handler");
    g_listen_fd.store((*srv)->listen_fd());
    g_tcp_listen_fd.store((*srv)->tcp_listen_fd());
    log_info("agent listening on " + info->socket);
    if (Result<const python::CApi*> api = python::load_capi(); api.is_ok() && (*api)->free_threaded) {
      // Said at start, on the host's stderr: every Python request will be refused the same way.
      Result<layout::PythonVersion> v = python::interpreter_version(**api);
      layout::PythonVersion version = v.is_ok() ? *v : layout::PythonVersion{3, 13, 0, "3.13"};
      log_error(layout::check_not_free_threaded(version, true).message());
    }
    // Only the copy that serves the process samples and traces it: a second copy (another
    // libprobing.so file loaded too) stops above with nothing started.
    sql::start_metrics_sampler();
    profile::start_sampler();
    torch::start_torch_tracing();
    start_subprocess_agents();
    start_exception_capture();
    python::start_crash_capture();
    if (options.remote.enabled) {
      info->remote_address = (*srv)->remote_address();
      if (!info->remote_address.empty()) {
        const server::RemoteOptions& r = options.remote;
        std::string how = std::string(r.tls_cert.empty() ? "" : "TLS, ") +
                          (r.token.empty() && r.read_token.empty() ? "no token: this user and root only"
                                                                   : "token required") +
                          (r.allow.empty() ? "" : ", PROBING_ALLOW networks only");
        std::fprintf(stderr, "Probing server listening on %s (%s)\n", info->remote_address.c_str(),
                     how.c_str());
        log_info("listening on " + info->remote_address + " (" + how + ")");
      } else {
        log_error("not listening on TCP: " + (*srv)->remote_error());
      }
    }
    server::start_cluster_membership(*info);
  } catch (const std::exception& e) {
    log_error(std::string("the agent could not start: ") + e.what());
  } catch (...) {
    log_error("the agent could not start");
  }
}

}  // namespace

// Starts the agent once per process; later calls do nothing. Returns 0.
int start() noexcept {
  if (g_started.exchange(true)) return 0;
  try {
    // `probing launch` preloads the agent into every program the command runs; only Python
    // processes get a thread.
    if (!python::process_has_python()) {
      init_logging_from_env();
      log_info("not a Python process; the agent stays idle");
      return 0;
    }
    pthread_atfork(nullptr, nullptr, after_fork_in_child);
    std::thread(bootstrap).detach();
  } catch (...) {
    g_started.store(false);
    return -1;
  }
  return 0;
}

}  // namespace probing::agent

// Called by `probing.init()` through ctypes. Idempotent; 0 on success.
PROBING_EXPORT int probing_agent_start() { return probing::agent::start(); }

// The agent's version text, so a client library can tell which agent it loaded.
PROBING_EXPORT const char* probing_agent_version() { return PROBING_VERSION; }

// The native functions of the probing package (probing.table), for ctypes.PyDLL: called with the
// GIL held; returns a new reference, or NULL with a Python error set.
PROBING_EXPORT void* probing_native() { return probing::bindings::native_functions(); }

__attribute__((constructor)) static void probing_agent_load() {
  // PROBING_DISABLE=1 keeps a preloaded or injected library idle.
  const char* off = ::getenv("PROBING_DISABLE");
  if (off != nullptr && off[0] != '\0' && off[0] != '0') return;
  probing::agent::start();
}
