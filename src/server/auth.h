// Who may do what over the network: the agent's remote options (PROBING_PORT, PROBING_HOST,
// PROBING_TOKEN, PROBING_READ_TOKEN, PROBING_TLS_CERT, PROBING_TLS_KEY, PROBING_ALLOW), the two
// rights, bearer tokens compared in constant time, and the networks clients may come from.
#pragma once

#include <netinet/in.h>
#include <sys/types.h>

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"

namespace probing::server {

// kRead: health, backtrace, query (without SET), config reads. kFull: also eval, repl,
// completion (it evaluates attribute lookups), interrupt, settings changes.
enum class Right { kNone, kRead, kFull };
const char* right_name(Right right);

// A network, "10.0.0.0/8", "192.168.1.7", "fd00::/8" or "::1".
struct Cidr {
  std::array<unsigned char, 16> address{};  // IPv4 as IPv4-mapped IPv6
  int prefix = 128;
  bool contains(const std::array<unsigned char, 16>& addr) const;
};
Result<Cidr> parse_cidr(const std::string& text);
// "10.0.0.0/8, 127.0.0.1" -> networks; kInvalidArgument naming the bad entry.
Result<std::vector<Cidr>> parse_allow_list(const std::string& text);
// An address as 16 bytes (IPv4 mapped), from its text form; nullopt when it is not one.
std::optional<std::array<unsigned char, 16>> parse_address(const std::string& text);

struct RemoteOptions {
  bool enabled = false;  // PROBING_PORT given
  std::string host = "127.0.0.1";
  int port = 0;          // 0: any free port; in a job, PROBING_PORT plus the local rank
  int base_port = 0;     // PROBING_PORT as given: rank 0's port in a job, where its registry is
  std::string token;       // full right
  std::string read_token;  // read right
  std::string tls_cert, tls_key;
  std::vector<Cidr> allow;  // empty: any address
  bool loopback() const;    // host is 127.0.0.0/8 or ::1 (or "localhost")
};

// From the environment. kInvalidArgument for a bad value, and for a bind that is not loopback
// without PROBING_TOKEN (then TCP must not start; the message says why); kAlreadyExists in a
// launcher of ranks (torchrun), whose ranks take the ports.
Result<RemoteOptions> remote_options_from_env();

// The right a bearer token (the header's value after "Bearer ") gives. Constant time in the
// token's length for each comparison; kNone for no match.
Right right_of_token(const RemoteOptions& options, const std::string& authorization);

// The uid owning the client end of a loopback TCP connection, from /proc/net/tcp{,6}: the socket
// whose local address is `peer` and remote address is `local`. nullopt when it cannot be found.
std::optional<uid_t> loopback_peer_uid(const std::string& peer_ip, int peer_port, const std::string& local_ip,
                                       int local_port);

}  // namespace probing::server
