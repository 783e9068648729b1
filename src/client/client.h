// The HTTP client of the CLI (and of anything else in C++ that talks to an agent): one
// connection (unix socket, TCP, or TLS over TCP), synchronous requests with a deadline each.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace probing::client {

struct Target {
  enum class Kind { kPid, kUnix, kTcp };
  Kind kind = Kind::kPid;
  pid_t pid = 0;          // kPid
  std::string unix_path;  // kUnix; a leading '@' means the abstract namespace
  std::string host;       // kTcp
  int port = 0;           // kTcp
  std::string text;       // as the user wrote it
};

// "1234" -> pid; "unix:/run/x.sock" or "unix:@name" -> unix socket; "host:port" -> TCP.
Result<Target> parse_target(const std::string& text);

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Response {
  int status = 0;
  std::string body;
  Headers headers;  // as the agent sent them
  // The body as JSON; a discarded value when it is not JSON.
  nlohmann::json json() const { return nlohmann::json::parse(body, nullptr, false); }
  // The agent's {"error": {"type","message"}}, when there is one.
  std::string error_type() const;
  std::string error_message() const;
};

// Whether `path` is one of the web page's files (`/`, `/index.html`, `/assets/...`): they hold no
// data, and the agent serves them to whoever may connect, without a token.
inline bool is_web_page_path(std::string_view path) {
  return path == "/" || path == "/index.html" || path.starts_with("/assets/");
}

// How to reach an agent beyond naming it: the agent's remote options (PROBING_TOKEN,
// PROBING_TLS_CERT) decide what it asks for.
struct ConnectOptions {
  std::string token;       // sent as "Authorization: Bearer TOKEN" on every request when not empty
  bool tls = false;        // TLS 1.2+ over TCP (host:port targets only)
  std::string cacert;      // PEM file of CAs (or the agent's own certificate) to verify against,
                           // instead of the system store; implies tls
  bool insecure = false;   // no certificate or host name check; implies tls
  bool read_only = false;  // "X-Probing-Right: read": the agent grants the read right at most

  bool use_tls() const { return tls || !cacert.empty() || insecure; }
};

class Client {
 public:
  // Connects within `timeout_s` (resolving, connecting and the TLS handshake together); the
  // errors say what failed and what to do next: no such process, no agent (inject it), the host
  // does not resolve (kNotFound), nothing listens on host:port (kUnavailable), the TLS handshake
  // failed (kUnavailable), no answer in time (kTimeout). TLS with a pid or unix: target is
  // kInvalidArgument. A TLS connection verifies the certificate (system CAs, or
  // `options.cacert`) and that it names the target's host, unless `options.insecure`.
  static Result<std::unique_ptr<Client>> connect(const Target& target, double timeout_s = 5,
                                                 const ConnectOptions& options = {});
  virtual ~Client() = default;

  // One request on this connection; kTimeout past `timeout_s`, kUnavailable when the agent
  // closed the connection (the target exited, for instance). A 401 reply (no token, or a wrong
  // one) and a 403 reply (the token lacks the right, or the peer is not allowed) are
  // kPermissionDenied with the agent's message; every other reply is returned as it came.
  virtual Result<Response> request(const std::string& method, const std::string& path,
                                   const std::string& body, double timeout_s) = 0;

  // A request passed on for another client (`probing PID ui`'s server): `target` is the path
  // with its query string, `headers` go with it, and every reply comes back as it was, 401 and
  // 403 included. The errors are request()'s.
  virtual Result<Response> forward(const std::string& method, const std::string& target,
                                   const std::string& body, const Headers& headers, double timeout_s) = 0;

  const Target& target() const { return target_; }

 protected:
  explicit Client(Target t) : target_(std::move(t)) {}
  Target target_;
};

// The local processes that have an agent listening: the pids of every @probing-<pid> socket.
std::vector<pid_t> list_local_agents();

// True once process `pid` is gone, a zombie, or exiting (PF_EXITING). A process's sockets close
// before it becomes a zombie, so a caller that just saw its connection close waits up to `wait_s`
// for the rest.
bool process_exited(pid_t pid, double wait_s = 0.5);

}  // namespace probing::client
