#include "server/cluster.h"

#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "client/client.h"
#include "core/clock.h"
#include "core/job.h"
#include "core/log.h"
#include "core/settings.h"
#include "python/helpers.h"
#include "python/runtime.h"

namespace probing::server {
namespace {

// Members come and go by registering; one the registry has not heard from in this many
// heartbeats is shown as silent (never dropped: a dead rank is what the user looks for).
constexpr double kSilentAfterBeats = 3;

std::string hostname() {
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  return name;
}

bool wildcard(const std::string& host) { return host == "0.0.0.0" || host == "::" || host.empty(); }

// "10.0.0.3:51234" or "[fd00::1]:51234" -> the address alone.
std::string address_of_peer(const std::string& peer) {
  std::string host = peer.substr(0, peer.rfind(':'));
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  return host;
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1" ||
         host.rfind("::ffff:127.", 0) == 0;
}

struct Member {
  int rank = -1;
  int local_rank = -1;
  std::string address;   // where clients reach its agent
  std::string hostname;  // the machine's name, for people
  int port = 0;
  long pid = 0;
  std::string unreachable;  // why clients cannot reach it, or ""
  double seen_at = 0;       // monotonic seconds on this agent's clock
};

nlohmann::json to_json(const Member& m, double now) {
  return {{"rank", m.rank},
          {"local_rank", m.local_rank},
          {"address", m.address},
          {"hostname", m.hostname},
          {"port", m.port},
          {"pid", m.pid},
          {"unreachable", m.unreachable.empty() ? nlohmann::json(nullptr) : nlohmann::json(m.unreachable)},
          {"seen_s_ago", std::max(0.0, now - m.seen_at)}};
}

// What this agent knows of its job: on rank 0 the registry itself, elsewhere the registry's last
// list. Bounded by WORLD_SIZE entries.
struct Membership {
  std::mutex mu;
  std::map<int, Member> members;
  unsigned long long version = 0;  // the registry's, bumped when a member is added or moves
  std::string registry_error;      // the last heartbeat's failure, "" after a success
  double registry_ok_at = 0;       // monotonic time of the last successful heartbeat
  // Where the job's registry is ("" while not known): MASTER_ADDR and the base PROBING_PORT, or
  // rank 0's entry in the job's torch.distributed store; and which of the two said so.
  std::string registry_host;
  int registry_port = 0;
  std::string registry_from;
  std::string store;         // the store's "host:port" once this rank wrote its entry there
  std::string store_note;    // why the store is not used, or ""
  std::string self_address;  // rank 0: its address as the store exchange found it, or ""

  // Adds or refreshes a member; true when the list changed.
  bool put(Member m) {
    std::lock_guard lock(mu);
    auto it = members.find(m.rank);
    const bool changed = it == members.end() || it->second.address != m.address ||
                         it->second.port != m.port || it->second.pid != m.pid ||
                         it->second.unreachable != m.unreachable;
    if (changed) ++version;
    members[m.rank] = std::move(m);
    return changed;
  }
};

Membership& membership() {
  static auto* m = new Membership;  // never destroyed: agent threads may use it during exit
  return *m;
}

// Rank 0's address for the other ranks when its agent bound a wildcard: as the store exchange
// found it, unless that is a loopback and MASTER_ADDR is not. REQUIRES: ms.mu held.
std::string rank0_address(const Membership& ms, const JobInfo& job) {
  const bool usable =
      !ms.self_address.empty() && (!is_loopback(ms.self_address) || is_loopback(job.master_addr));
  return usable ? ms.self_address : job.master_addr;
}

nlohmann::json job_json(const JobInfo& job) {
  return {{"rank", job.rank},
          {"world_size", job.world_size},
          {"local_rank", job.local_rank},
          {"group_rank", job.group_rank},
          {"master_addr", job.master_addr},
          {"master_port", job.master_port},
          {"run_id", job.run_id},
          {"key", job.key()}};
}

double heartbeat_s() { return std::max(0.2, settings().get_double("cluster.heartbeat_s")); }

// The TCP port the agent listens on (PROBING_PORT=0 picks one).
int listening_port(const AgentInfo& info) {
  const size_t colon = info.remote_address.rfind(':');
  return colon != std::string::npos ? std::atoi(info.remote_address.c_str() + colon + 1) : info.remote.port;
}

// This rank as a member, with the address it is reached at when that is known here (a specific
// bind address); the registry fills in a wildcard bind from the connection it came on.
Member self_member(const AgentInfo& info, const JobInfo& job) {
  Member m;
  m.rank = job.rank;
  m.local_rank = job.local_rank;
  m.address = wildcard(info.remote.host) ? "" : info.remote.host;
  m.hostname = hostname();
  m.port = listening_port(info);
  m.pid = ::getpid();
  m.seen_at = monotonic_s();
  return m;
}

// ---- The heartbeat's transport. ----
//
// The process may exit while a heartbeat is under way, and exit() destroys Boost's and OpenSSL's
// statics after the agent's exit handler: the heartbeat must then be out of them. So the
// connection is made with plain sockets, polled in short slices that give up once the agent
// exits (a registry whose host is down keeps a connect waiting for seconds), and a plain HTTP
// request needs nothing else. Over TLS the request goes through the client library, only once
// the connection was just made, and the exit handler waits for it (stop_cluster_membership).

std::atomic<bool> g_exiting{false};
std::atomic<bool> g_in_client{false};  // a TLS heartbeat is inside the client library

constexpr double kSlice = 0.05;  // seconds between two looks at g_exiting while waiting

// Waits for `events` on fd until `deadline` (monotonic seconds); false on timeout or exit.
bool wait_fd(int fd, short events, double deadline) {
  while (!g_exiting.load()) {
    const double left = deadline - monotonic_s();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min(left, kSlice) * 1000) + 1);
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
  return false;
}

// A connected TCP socket to host:port, or why not.
Result<int> connect_tcp(const std::string& host, int port, double deadline) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0) {
    return Status(Code::kNotFound, std::string("cannot resolve ") + host + ": " + ::gai_strerror(rc));
  }
  std::string error = "no address";
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0 ||
        (errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline))) {
      int err = 0;
      socklen_t len = sizeof err;
      if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) {
        ::freeaddrinfo(found);
        return fd;
      }
      error = std::strerror(err);
    } else {
      error = g_exiting.load() ? "the process is exiting" : errno == EINPROGRESS ? "timed out" : std::strerror(errno);
    }
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return Status(Code::kUnavailable, "cannot connect: " + error);
}

// POST /cluster/register over a plain socket: (HTTP status, body).
Result<std::pair<int, std::string>> post_plain(int fd, const std::string& host, const std::string& token,
                                               const std::string& body, double deadline) {
  std::string request = "POST /cluster/register HTTP/1.1\r\nHost: " + host +
                        "\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\n";
  if (!token.empty()) request += "Authorization: Bearer " + token + "\r\n";
  request += "\r\n" + body;
  for (size_t sent = 0; sent < request.size();) {
    if (!wait_fd(fd, POLLOUT, deadline)) return Status(Code::kTimeout, "no room to send the request in time");
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) return Status(Code::kUnavailable, std::strerror(errno));
    if (n > 0) sent += static_cast<size_t>(n);
  }
  std::string reply;
  char buf[16384];
  for (;;) {  // Connection: close: the reply ends where the stream does
    if (!wait_fd(fd, POLLIN, deadline)) return Status(Code::kTimeout, "no reply in time");
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) break;
    if (n < 0 && errno != EAGAIN && errno != EINTR) return Status(Code::kUnavailable, std::strerror(errno));
    if (n > 0) reply.append(buf, static_cast<size_t>(n));
    if (reply.size() > (64u << 20)) return Status(Code::kUnavailable, "the reply is too large");
  }
  const size_t head_end = reply.find("\r\n\r\n");
  if (reply.rfind("HTTP/1.", 0) != 0 || reply.size() < 12 || head_end == std::string::npos) {
    return Status(Code::kUnavailable, "the reply is not HTTP (is the registry using TLS?)");
  }
  return std::make_pair(std::atoi(reply.c_str() + 9), reply.substr(head_end + 4));
}

Result<std::pair<int, std::string>> post_to_registry(const AgentInfo& info, const std::string& host, int port,
                                                     const std::string& body) {
  const double timeout = std::min(5.0, heartbeat_s());
  const double deadline = monotonic_s() + timeout;
  Result<int> fd = connect_tcp(host, port, deadline);
  if (!fd.is_ok()) return fd.status();
  if (info.remote.tls_cert.empty()) {
    Result<std::pair<int, std::string>> r = post_plain(*fd, host, info.remote.token, body, deadline);
    ::close(*fd);
    return r;
  }
  ::close(*fd);  // the registry answers: now over TLS, through the client library
  g_in_client.store(true);
  if (g_exiting.load()) {
    g_in_client.store(false);
    return Status(Code::kUnavailable, "the process is exiting");
  }
  client::Target target;
  target.kind = client::Target::Kind::kTcp;
  target.host = host;
  target.port = port;
  target.text = host + ":" + std::to_string(port);
  client::ConnectOptions options;
  options.token = info.remote.token;  // every rank of a job has its launcher's environment
  options.cacert = info.remote.tls_cert;
  Result<std::pair<int, std::string>> out = Status(Code::kUnavailable, "no reply");
  Result<std::unique_ptr<client::Client>> c = client::Client::connect(target, timeout, options);
  if (c.is_ok()) {
    Result<client::Response> r = (*c)->request("POST", "/cluster/register", body, timeout);
    out = r.is_ok() ? Result<std::pair<int, std::string>>(std::make_pair(r->status, r->body))
                    : Result<std::pair<int, std::string>>(r.status());
  } else {
    out = c.status();
  }
  c = Status(Code::kUnavailable, "closed");  // the connection goes before the flag
  g_in_client.store(false);
  return out;
}

// ---- The job's torch.distributed store. ----
//
// Once the job's process group exists, each rank writes its entry (address, port, pid, host name)
// under probing/<ATTEMPT>/rank/<RANK> in the job's own store, and a rank with no base PROBING_PORT
// reads rank 0's entry there to find the registry. The store is reached over a connection of the agent's own
// (a TCPStore client made for it and dropped at once), never through the job's store object: that
// one may be blocked in a rendezvous the agent must not wait behind, and its requests must not
// interleave with the agent's. The entry is read with compare_set on a value no entry holds, which
// answers at once and writes nothing (`get` would wait for the key).
//
// Imports nothing at its top: json imports threading on 3.13+, and an agent thread must not be
// the first to import it (it would become the program's main thread). Past the check that
// torch.distributed has a process group, the program has imported them all.
constexpr char kStoreHelperSource[] = R"PY(
import sys

_ABSENT = "\0probing: no entry"


def _tcp_store(store):
    for _ in range(16):  # PrefixStores over the TCPStore
        if any(t.__name__ == "TCPStore" for t in type(store).__mro__):
            return store
        store = getattr(store, "underlying_store", None)
        if store is None:
            return None
    return None


def _loopback(host):
    return host == "localhost" or host.startswith("127.") or host == "::1"


def exchange(rank, entry, want, timeout_s):
    dist = sys.modules.get("torch.distributed")
    c10d = sys.modules.get("torch.distributed.distributed_c10d")
    if dist is None or c10d is None or not dist.is_available() or not dist.is_initialized():
        return '{"group": false}'
    import json
    import socket
    from datetime import timedelta

    job_store = c10d._get_default_store()
    store = _tcp_store(job_store)
    if store is None:
        return json.dumps({"group": True, "store": None,
                           "note": "the job's store is a %s, not a TCPStore" % type(job_store).__name__})
    host, port = store.host, store.port
    entry = json.loads(entry) if entry else None
    if entry is not None and not entry.get("address"):
        # The address this host reaches the store's host from is the one the job's other hosts
        # reach this one at. (A datagram socket's connect sends nothing.)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            entry["address"] = s.getsockname()[0]
    # PyTorch 1.x holds the GIL while a TCPStore connects: see first that the store answers.
    if str(getattr(sys.modules.get("torch"), "__version__", "1")).startswith(("0.", "1.")):
        socket.create_connection((host, port), timeout=timeout_s).close()
    # The C++ class itself: a subclass of the program's might run its code.
    cls = next(t for t in type(store).__mro__
               if t.__name__ == "TCPStore" and t.__module__.startswith("torch._C"))
    options = {"use_libuv": False} if "use_libuv" in (cls.__init__.__doc__ or "") else {}
    own = cls(host, port, None, False, timedelta(seconds=timeout_s), wait_for_workers=False, **options)
    # torchrun's store outlives a restart of the workers: each attempt has keys of its own.
    prefix = "probing/%s/rank/" % sys.modules["os"].environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    found = None
    try:
        if entry is not None:
            own.set(prefix + str(rank), json.dumps(entry))
        if want >= 0:
            value = own.compare_set(prefix + str(want), _ABSENT, _ABSENT)
            if value != _ABSENT.encode():
                found = json.loads(value)
                # An entry on the store's own host may say loopback (its name resolves so there):
                # from here that host is the store's.
                if _loopback(found.get("address", "")) and not _loopback(host):
                    found["address"] = host
    finally:
        del own
    return json.dumps({"group": True, "store": "%s:%d" % (host, port),
                       "address": entry["address"] if entry else None, "entry": found})
)PY";
constexpr python::HelperSource kStoreHelper{kStoreHelperSource, "probing._cluster_store"};

constexpr double kStoreTimeoutS = 2;

// One exchange with the job's store: writes this rank's entry (unless `publish` is false) and
// reads rank `want`'s (none when < 0). The reply is the helper's JSON: "group" false while the job
// has no process group.
Result<nlohmann::json> exchange_with_store(const AgentInfo& info, const JobInfo& job, bool publish,
                                           int want) {
  Result<python::PythonRuntime*> rt = python::PythonRuntime::get();
  if (!rt.is_ok()) return rt.status();
  std::string entry;
  if (publish) {
    const Member self = self_member(info, job);
    entry = nlohmann::json{{"rank", self.rank},       {"local_rank", self.local_rank},
                           {"address", self.address}, {"hostname", self.hostname},
                           {"port", self.port},       {"pid", self.pid}}
                .dump();
  }
  // The GIL within a second (else the next heartbeat tries again); the store's connect and two
  // requests within its timeout each.
  return python::call_helper(**rt, kStoreHelper, "exchange", {job.rank, entry, want, kStoreTimeoutS},
                             python::HelperCall(1.0, 3 * kStoreTimeoutS + 1));
}

// One exchange with the store, and what it taught: this rank's entry written (*published), the
// registry found (in membership()).
void learn_from_store(const AgentInfo& info, const JobInfo& job, bool* published, std::string* last_error) {
  Membership& ms = membership();
  bool registry_known = false;
  {
    std::lock_guard lock(ms.mu);
    registry_known = !ms.registry_host.empty();
  }
  const int want = registry_known || job.rank == 0 ? -1 : 0;
  Result<nlohmann::json> r = exchange_with_store(info, job, !*published, want);
  if (!r.is_ok()) {
    // Once per kind of failure: a timeout's message names the GIL's holder, which changes.
    const std::string kind = std::to_string(static_cast<int>(r.status().code()));
    if (kind != *last_error && r.status().code() != Code::kUnavailable) {
      log_warn("cluster: the job's torch.distributed store: " + r.status().message());
    }
    *last_error = kind;
    return;
  }
  last_error->clear();
  if (!r->value("group", false)) return;
  std::lock_guard lock(ms.mu);
  if (r->value("store", nlohmann::json()).is_null()) {
    ms.store_note = r->value("note", std::string("no store"));
    *published = true;
    return;
  }
  ms.store = r->value("store", "");
  *published = true;
  if (r->value("address", nlohmann::json()).is_string()) ms.self_address = (*r)["address"].get<std::string>();
  if (job.rank == 0 && ms.registry_host.empty()) {
    ms.registry_host = rank0_address(ms, job);
    ms.registry_port = listening_port(info);
    ms.registry_from = "torch.distributed store";
  }
  const nlohmann::json& e = (*r)["entry"];
  if (want == 0 && e.is_object() && e.value("port", 0) > 0 && !e.value("address", "").empty()) {
    ms.registry_host = e["address"].get<std::string>();
    ms.registry_port = e["port"].get<int>();
    ms.registry_from = "torch.distributed store";
  }
}

// One heartbeat to the registry; the reply's member list replaces the cached one.
Status register_once(const AgentInfo& info, const JobInfo& job) {
  Membership& ms = membership();
  const Member self = self_member(info, job);
  std::string registry_host;
  int registry_port = 0;
  {
    std::lock_guard lock(ms.mu);
    registry_host = ms.registry_host;
    registry_port = ms.registry_port;
  }
  if (job.rank == 0) {  // the registry is here
    Member m = self;
    if (m.address.empty()) {
      std::lock_guard lock(ms.mu);
      m.address = rank0_address(ms, job);
    }
    ms.put(m);
    std::lock_guard lock(ms.mu);
    ms.registry_error.clear();
    ms.registry_ok_at = monotonic_s();
    return Status::ok();
  }
  unsigned long long known = 0;
  {
    std::lock_guard lock(ms.mu);
    known = ms.version;
  }
  nlohmann::json body = {
      {"key", job.key()},        {"rank", job.rank},          {"local_rank", job.local_rank},
      {"address", self.address}, {"hostname", self.hostname}, {"port", self.port},
      {"pid", self.pid},         {"version", known}};
  const std::string where = registry_host + ":" + std::to_string(registry_port);
  Result<std::pair<int, std::string>> r = post_to_registry(info, registry_host, registry_port, body.dump());
  if (!r.is_ok()) return r.status().with_context("the registry at " + where);
  nlohmann::json reply = nlohmann::json::parse(r->second, nullptr, /*allow_exceptions=*/false);
  if (r->first != 200) {
    const nlohmann::json error = reply.is_object() ? reply.value("error", nlohmann::json()) : nlohmann::json();
    return Status(Code::kUnavailable, "the registry at " + where + " refused (HTTP " + std::to_string(r->first) +
                                          "): " + (error.is_object() ? error.value("message", "") : ""));
  }
  if (!reply.is_object()) return Status(Code::kUnavailable, "the registry's reply is not JSON");
  const double now = monotonic_s();
  std::lock_guard lock(ms.mu);
  if (reply.contains("members") && reply["members"].is_array()) {
    ms.members.clear();
    for (const nlohmann::json& j : reply["members"]) {
      Member m;
      m.rank = j.value("rank", -1);
      if (m.rank < 0 || m.rank >= job.world_size) continue;
      m.local_rank = j.value("local_rank", -1);
      m.address = j.value("address", "");
      m.hostname = j.value("hostname", "");
      m.port = j.value("port", 0);
      m.pid = j.value("pid", 0L);
      if (j.contains("unreachable") && j["unreachable"].is_string()) m.unreachable = j["unreachable"];
      m.seen_at = now - j.value("seen_s_ago", 0.0);
      ms.members[m.rank] = std::move(m);
    }
  }
  ms.version = reply.value("version", ms.version);
  ms.registry_error.clear();
  ms.registry_ok_at = now;
  return Status::ok();
}

void heartbeat_loop(const AgentInfo* info) {
  ::pthread_setname_np(::pthread_self(), "probing-cluster");
  const JobInfo& job = this_job();
  Membership& ms = membership();
  std::minstd_rand jitter(static_cast<unsigned>(::getpid()));
  std::string last_error;
  std::string store_error;
  bool published = false;  // this rank's entry is in the job's store, or the store is not usable
  int beats = 0;
  int failures = 0;   // heartbeats in a row the registry did not take
  double wait = 0.2;  // quickly at first: rank 0's agent may not listen yet
  while (!g_exiting.load()) {
    for (double slept = 0; slept < wait && !g_exiting.load(); slept += kSlice) {
      std::this_thread::sleep_for(std::chrono::duration<double>(std::min(kSlice, wait - slept)));
    }
    if (g_exiting.load()) break;
    const double beat = heartbeat_s();
    bool registry_known = false;
    {
      std::lock_guard lock(ms.mu);
      // A registry found in the store that stopped answering may have moved (rank 0 restarted
      // with a new port): its entry is read again.
      if (failures >= 3 && job.rank != 0 && ms.registry_from == "torch.distributed store") {
        ms.registry_host.clear();
        failures = 0;
      }
      registry_known = !ms.registry_host.empty();
    }
    // With a registry at hand the store is asked for the process group every sixth heartbeat
    // only: a job may never make one.
    if (!registry_known || (!published && beats++ % 6 == 0)) {
      try {
        learn_from_store(*info, job, &published, &store_error);
      } catch (const std::exception& e) {
        store_error = e.what();
      }
      std::lock_guard lock(ms.mu);
      registry_known = !ms.registry_host.empty();
      if (!registry_known && job.rank != 0) {
        ms.registry_error = published ? "the job's store has no entry of rank 0 (yet)"
                                      : "waiting for the job's torch.distributed process group";
        if (!ms.store_note.empty()) ms.registry_error = ms.store_note;
        wait = std::min(beat, wait * 2);
        continue;
      }
    }
    Status st = Status::ok();
    try {
      st = register_once(*info, job);
    } catch (const std::exception& e) {
      st = Status(Code::kInternal, e.what());
    }
    failures = st.is_ok() ? 0 : failures + 1;
    if (st.is_ok()) {
      if (!last_error.empty()) log_info("cluster: registered with the job's registry again");
      last_error.clear();
      // Spread over ±10 % so that a job's ranks do not all arrive at once.
      wait = beat * (0.9 + 0.2 * static_cast<double>(jitter() % 1000) / 1000.0);
    } else {
      {
        std::lock_guard lock(ms.mu);
        ms.registry_error = st.message();
      }
      if (st.message() != last_error)
        log_warn("cluster: cannot register with rank 0's agent: " + st.message());
      last_error = st.message();
      wait = std::min(beat, wait * 2);
    }
  }
}

}  // namespace

void stop_cluster_membership(std::chrono::milliseconds wait) noexcept {
  g_exiting.store(true);
  const auto until = std::chrono::steady_clock::now() + wait;
  while (g_in_client.load() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

void start_cluster_membership(const AgentInfo& info) {
  const JobInfo& job = this_job();
  if (!job.in_job()) return;
  if (info.remote_address.empty()) {
    log_info("cluster: rank " + std::to_string(job.rank) +
             " does not register (no PROBING_PORT); clients find the ranks of this host by their pids");
    return;
  }
  if (info.remote.base_port != 0) {
    if (job.master_addr.empty()) {
      log_warn("cluster: MASTER_ADDR is not set; this rank cannot find the job's registry");
      return;
    }
    Membership& ms = membership();
    std::lock_guard lock(ms.mu);
    ms.registry_host = job.master_addr;
    ms.registry_port = info.remote.base_port;
    ms.registry_from = "PROBING_PORT";
  }
  // Without a base port the registry is found in the job's torch.distributed store, once the
  // process group exists.
  std::thread(heartbeat_loop, &info).detach();
}

HttpResponse handle_cluster(const HttpRequest&, const AgentInfo& info) {
  const JobInfo& job = this_job();
  if (!job.in_job()) {
    return json_response({{"job", nullptr},
                          {"message",
                           "this process is not a rank of a job (no RANK and WORLD_SIZE in its "
                           "environment)"}});
  }
  Membership& ms = membership();
  const double now = monotonic_s();
  const double silent_after = kSilentAfterBeats * heartbeat_s();
  const Member self = self_member(info, job);
  nlohmann::json members = nlohmann::json::array();
  nlohmann::json out;
  {
    std::lock_guard lock(ms.mu);
    for (const auto& [rank, m] : ms.members) {
      nlohmann::json j = to_json(m, now);
      // Only the registry hears each rank; a member's copy says where the ranks are, not whether
      // they are alive (a client asks them).
      if (job.rank == 0) {
        j["silent"] = now - m.seen_at > silent_after;
      } else {
        j["seen_s_ago"] = nullptr;
        j["silent"] = nullptr;
      }
      members.push_back(std::move(j));
    }
    auto text_or_null = [](const std::string& text) {
      return text.empty() ? nlohmann::json(nullptr) : nlohmann::json(text);
    };
    const bool ipv6 = ms.registry_host.find(':') != std::string::npos;
    out = {{"job", job_json(job)},
           {"self", to_json(self, now)},
           {"registry", ms.registry_host.empty()
                            ? nlohmann::json(nullptr)
                            : nlohmann::json((ipv6 ? "[" + ms.registry_host + "]" : ms.registry_host) + ":" +
                                             std::to_string(ms.registry_port))},
           {"registry_from", text_or_null(ms.registry_from)},
           {"store", text_or_null(ms.store)},
           {"store_note", text_or_null(ms.store_note)},
           {"role", job.rank == 0 ? "registry" : "member"},
           {"registry_error",
            ms.registry_error.empty() ? nlohmann::json(nullptr) : nlohmann::json(ms.registry_error)},
           {"registry_seen_s_ago",
            ms.registry_ok_at > 0 ? nlohmann::json(now - ms.registry_ok_at) : nlohmann::json(nullptr)},
           {"heartbeat_s", heartbeat_s()},
           {"version", ms.version},
           {"members", std::move(members)}};
  }
  return json_response(out);
}

HttpResponse handle_cluster_register(const HttpRequest& request) {
  const JobInfo& job = this_job();
  if (!job.in_job() || job.rank != 0) {
    return error_response(409, "NotRegistry", "this agent is not its job's registry (rank 0's agent is)");
  }
  nlohmann::json body = nlohmann::json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (!body.is_object() || !body.contains("rank") || !body["rank"].is_number_integer() ||
      !body.contains("port") || !body["port"].is_number_integer()) {
    return error_response(400, "BadRequest", R"(expected {"key", "rank", "port", "pid", ...})");
  }
  if (body.value("key", "") != job.key()) {
    return error_response(409, "OtherJob",
                          "this registry serves job " + job.key() + ", not " + body.value("key", ""));
  }
  Member m;
  m.rank = body["rank"].get<int>();
  if (m.rank < 0 || m.rank >= job.world_size) {
    return error_response(
        400, "BadRequest",
        "rank " + std::to_string(m.rank) + " is not in a job of " + std::to_string(job.world_size));
  }
  m.local_rank = body.value("local_rank", -1);
  m.port = body["port"].get<int>();
  m.pid = body.value("pid", 0L);
  m.hostname = body.value("hostname", "");
  const std::string peer = address_of_peer(request.peer.address);
  const std::string bound = body.value("address", "");
  m.address = bound.empty() ? peer : bound;
  if (is_loopback(bound) && !is_loopback(peer) && !request.peer.local) {
    m.unreachable = "its agent listens on " + bound + " only (start the job with PROBING_HOST=0.0.0.0)";
  }
  m.seen_at = monotonic_s();
  Membership& ms = membership();
  ms.put(std::move(m));
  const unsigned long long known = body.value("version", 0ULL);
  std::lock_guard lock(ms.mu);
  nlohmann::json reply = {{"version", ms.version}};
  if (known != ms.version) {
    nlohmann::json members = nlohmann::json::array();
    const double now = monotonic_s();
    for (const auto& [rank, member] : ms.members) members.push_back(to_json(member, now));
    reply["members"] = std::move(members);
  }
  return json_response(reply);
}

}  // namespace probing::server
