#include "server/auth.h"

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/job.h"
#include "core/proc_files.h"
#include "core/random.h"

namespace probing::server {
namespace {

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t");
  size_t e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : nullptr;
}

// "0100007F:1F90" (IPv4, 32-bit words in host order) or 32 hex digits (IPv6) -> 16 bytes, port.
bool parse_proc_address(const std::string& text, std::array<unsigned char, 16>* addr, int* port) {
  size_t colon = text.find(':');
  if (colon == std::string::npos) return false;
  std::string hex = text.substr(0, colon);
  *port = static_cast<int>(std::strtol(text.c_str() + colon + 1, nullptr, 16));
  addr->fill(0);
  if (hex.size() == 8) {
    uint32_t v = static_cast<uint32_t>(std::strtoul(hex.c_str(), nullptr, 16));
    (*addr)[10] = (*addr)[11] = 0xff;
    std::memcpy(addr->data() + 12, &v, 4);  // the kernel prints the word in host order
    return true;
  }
  if (hex.size() == 32) {
    for (int w = 0; w < 4; ++w) {
      uint32_t v = static_cast<uint32_t>(std::strtoul(hex.substr(static_cast<size_t>(w) * 8, 8).c_str(), nullptr, 16));
      std::memcpy(addr->data() + w * 4, &v, 4);
    }
    return true;
  }
  return false;
}

}  // namespace

const char* right_name(Right right) {
  switch (right) {
    case Right::kNone: return "none";
    case Right::kRead: return "read";
    case Right::kFull: return "full";
  }
  return "";
}

std::optional<std::array<unsigned char, 16>> parse_address(const std::string& text) {
  std::array<unsigned char, 16> out{};
  in_addr v4{};
  in6_addr v6{};
  if (::inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    out[10] = out[11] = 0xff;
    std::memcpy(out.data() + 12, &v4, 4);
    return out;
  }
  if (::inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
    std::memcpy(out.data(), &v6, 16);
    return out;
  }
  return std::nullopt;
}

bool Cidr::contains(const std::array<unsigned char, 16>& addr) const {
  int bits = prefix;
  for (size_t i = 0; i < 16 && bits > 0; ++i, bits -= 8) {
    unsigned char mask = bits >= 8 ? 0xff : static_cast<unsigned char>(0xff << (8 - bits));
    if ((addr[i] & mask) != (address[i] & mask)) return false;
  }
  return true;
}

Result<Cidr> parse_cidr(const std::string& text) {
  std::string t = trim(text);
  size_t slash = t.find('/');
  std::string host = t.substr(0, slash);
  std::optional<std::array<unsigned char, 16>> addr = parse_address(host);
  if (!addr) return Status(Code::kInvalidArgument, "'" + t + "' is not an address or network");
  bool v4 = host.find(':') == std::string::npos;
  Cidr c;
  c.address = *addr;
  c.prefix = 128;
  if (slash != std::string::npos) {
    char* end = nullptr;
    long p = std::strtol(t.c_str() + slash + 1, &end, 10);
    long max = v4 ? 32 : 128;
    if (end == t.c_str() + slash + 1 || *end != '\0' || p < 0 || p > max) {
      return Status(Code::kInvalidArgument, "'" + t + "' has a bad prefix length");
    }
    c.prefix = static_cast<int>(v4 ? p + 96 : p);
  }
  return c;
}

Result<std::vector<Cidr>> parse_allow_list(const std::string& text) {
  std::vector<Cidr> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (trim(item).empty()) continue;
    Result<Cidr> c = parse_cidr(item);
    if (!c.is_ok()) return c.status().with_context("PROBING_ALLOW");
    out.push_back(*c);
  }
  return out;
}

bool RemoteOptions::loopback() const {
  if (host == "localhost") return true;
  std::optional<std::array<unsigned char, 16>> a = parse_address(host);
  if (!a) return false;
  static const Cidr kV4 = *parse_cidr("127.0.0.0/8");
  static const Cidr kV6 = *parse_cidr("::1");
  return kV4.contains(*a) || kV6.contains(*a);
}

Result<RemoteOptions> remote_options_from_env() {
  RemoteOptions o;
  const char* port = env("PROBING_PORT");
  if (port == nullptr) return o;
  char* end = nullptr;
  long p = std::strtol(port, &end, 10);
  if (*end != '\0' || p < 0 || p > 65535) {
    return Status(Code::kInvalidArgument, std::string("PROBING_PORT=") + port + " is not a port (0 picks a free one)");
  }
  o.enabled = true;
  o.port = o.base_port = static_cast<int>(p);
  // A rank of a job takes the base port plus its local rank, so that the ranks of one host do
  // not collide; the launcher (torchrun's own Python, given PROBE=1 with the rest) takes none.
  const JobInfo& job = this_job();
  if (is_rank_launcher(read_proc_file("/proc/self/cmdline", 1 << 16), job)) {
    return Status(Code::kAlreadyExists, "this process launches a job's ranks (torchrun): PROBING_PORT=" +
                                            std::string(port) + " and the ports after it are the ranks'; " +
                                            "its agent serves the unix socket only");
  }
  if (job.in_job() && o.port != 0) {
    o.port += job.port_offset();
    if (o.port > 65535) {
      return Status(Code::kInvalidArgument, std::string("PROBING_PORT=") + port + " plus LOCAL_RANK " +
                                                std::to_string(job.port_offset()) + " is not a port");
    }
  }
  if (const char* h = env("PROBING_HOST")) o.host = h;
  if (o.host != "localhost" && !parse_address(o.host)) {
    return Status(Code::kInvalidArgument, "PROBING_HOST=" + o.host + " is not an IP address (0.0.0.0 for every interface)");
  }
  if (const char* t = env("PROBING_TOKEN")) o.token = t;
  if (const char* t = env("PROBING_READ_TOKEN")) o.read_token = t;
  if (!o.token.empty() && o.token == o.read_token) {
    return Status(Code::kInvalidArgument, "PROBING_TOKEN and PROBING_READ_TOKEN must differ");
  }
  if (const char* c = env("PROBING_TLS_CERT")) o.tls_cert = c;
  if (const char* k = env("PROBING_TLS_KEY")) o.tls_key = k;
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    return Status(Code::kInvalidArgument, "TLS needs both PROBING_TLS_CERT and PROBING_TLS_KEY");
  }
  if (const char* a = env("PROBING_ALLOW")) {
    Result<std::vector<Cidr>> allow = parse_allow_list(a);
    if (!allow.is_ok()) return allow.status();
    o.allow = *allow;
  }
  if (!o.loopback() && o.token.empty()) {
    return Status(Code::kPermissionDenied,
                  "refusing to listen on " + o.host + ":" + std::to_string(o.port) +
                      " without PROBING_TOKEN: eval over a network is code execution for whoever reaches "
                      "the port (set PROBING_TOKEN, or bind 127.0.0.1)");
  }
  return o;
}

Right right_of_token(const RemoteOptions& options, const std::string& authorization) {
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.size() <= kBearer.size() || authorization.compare(0, kBearer.size(), kBearer) != 0) {
    return Right::kNone;
  }
  std::string token = trim(authorization.substr(kBearer.size()));
  // Both comparisons always run, so the time does not tell which token matched.
  bool full = !options.token.empty() && equal_secrets(token, options.token);
  bool read = !options.read_token.empty() && equal_secrets(token, options.read_token);
  return full ? Right::kFull : read ? Right::kRead : Right::kNone;
}

namespace {

// The owner of one established TCP socket, asked of the kernel by its four addresses
// (NETLINK_SOCK_DIAG, an exact lookup): constant time, where /proc/net/tcp lists every socket of
// the machine. nullopt when netlink is not there (then /proc/net/tcp is read) or the socket is not.
std::optional<uid_t> sock_diag_uid(const std::array<unsigned char, 16>& peer, int peer_port,
                                   const std::array<unsigned char, 16>& local, int local_port,
                                   bool* answered) {
  *answered = false;
  static constexpr unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  const bool v4 = std::memcmp(peer.data(), kMapped, 12) == 0 && std::memcmp(local.data(), kMapped, 12) == 0;
  struct {
    nlmsghdr header;
    inet_diag_req_v2 request;
  } message{};
  message.header.nlmsg_len = sizeof message;
  message.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  message.header.nlmsg_flags = NLM_F_REQUEST;
  inet_diag_req_v2& r = message.request;
  r.sdiag_family = v4 ? AF_INET : AF_INET6;
  r.sdiag_protocol = IPPROTO_TCP;
  r.idiag_states = 1U << TCP_ESTABLISHED;
  // The client's socket: its source is the peer, its destination this listener.
  r.id.idiag_sport = htons(static_cast<uint16_t>(peer_port));
  r.id.idiag_dport = htons(static_cast<uint16_t>(local_port));
  std::memcpy(r.id.idiag_src, v4 ? peer.data() + 12 : peer.data(), v4 ? 4 : 16);
  std::memcpy(r.id.idiag_dst, v4 ? local.data() + 12 : local.data(), v4 ? 4 : 16);
  r.id.idiag_cookie[0] = r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  const int fd = ::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return std::nullopt;
  timeval timeout{0, 200000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  std::optional<uid_t> uid;
  if (::sendto(fd, &message, sizeof message, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) ==
      static_cast<ssize_t>(sizeof message)) {
    alignas(nlmsghdr) char buf[8192];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n >= static_cast<ssize_t>(sizeof(nlmsghdr))) {
      const auto* h = reinterpret_cast<const nlmsghdr*>(buf);
      if (NLMSG_OK(h, static_cast<unsigned>(n))) {
        *answered = true;  // an error reply (ENOENT) is an answer too: no such socket
        if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY && h->nlmsg_len >= NLMSG_LENGTH(sizeof(inet_diag_msg))) {
          const auto* m = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
          if (m->idiag_inode != 0) uid = m->idiag_uid;
        }
      }
    }
  }
  ::close(fd);
  return uid;
}

}  // namespace

std::optional<uid_t> loopback_peer_uid(const std::string& peer_ip, int peer_port, const std::string& local_ip,
                                       int local_port) {
  std::optional<std::array<unsigned char, 16>> peer = parse_address(peer_ip);
  std::optional<std::array<unsigned char, 16>> local = parse_address(local_ip);
  if (!peer || !local) return std::nullopt;
  bool answered = false;
  std::optional<uid_t> uid = sock_diag_uid(*peer, peer_port, *local, local_port, &answered);
  if (answered) return uid;
  for (const char* path : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string sl, loc, rem, st, queues, timer, retr, uid, timeout, inode;
      if (!(f >> sl >> loc >> rem >> st >> queues >> timer >> retr >> uid >> timeout >> inode)) continue;
      // Only a live socket with an owner: a closed one (TIME_WAIT, an orphan) shows uid 0 and
      // inode 0, and must not pass for root.
      if (st != "01" || inode == "0") continue;
      std::array<unsigned char, 16> la{}, ra{};
      int lp = 0, rp = 0;
      if (!parse_proc_address(loc, &la, &lp) || !parse_proc_address(rem, &ra, &rp)) continue;
      // A v4 socket on a v6 listener shows as ::ffff:a.b.c.d in tcp6: same 16-byte form.
      if (lp == peer_port && rp == local_port && la == *peer && ra == *local) {
        return static_cast<uid_t>(std::strtoul(uid.c_str(), nullptr, 10));
      }
    }
  }
  return std::nullopt;
}

}  // namespace probing::server
