// The agent's HTTP/1.1 server (Boost.Beast): one I/O thread owns the accept loop and every
// connection; handlers run on a small pool so that a slow request never stalls the others.
// Every connection's peer credentials are checked before a byte of it is read.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "server/auth.h"
#include "server/http.h"

namespace probing::server {

struct ServerOptions {
  std::string abstract_name;      // "probing-1234": listens on the abstract socket @probing-1234
  int max_connections = 64;       // beyond this, new connections get 503 and are closed
  double request_timeout_s = 10;  // to receive one whole request
  size_t max_body_bytes = 8 << 20;
  size_t max_header_bytes = 16 << 10;
  int handler_threads = 8;
  // TCP (and TLS) besides the unix socket, when remote.enabled. Its connections have their own
  // cap, so clients over the network can never crowd out local ones.
  RemoteOptions remote;
  int max_tcp_connections = 64;
  // Paths whose handlers never wait (GET /health): answered on the I/O thread itself, so they
  // answer even while every handler thread waits on a wedged interpreter.
  std::vector<std::string> inline_paths;
};

class HttpServer {
 public:
  // Runs on a handler thread; may block (with its own deadline). Must not throw (a throw is
  // turned into a 500 reply anyway).
  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  // Binds and starts serving. kAlreadyExists when the name is taken (another agent serves this
  // process). The server is never destroyed: it serves until the process ends.
  static Result<HttpServer*> start(const ServerOptions& options, Handler handler);

  // The listening sockets, for the fork handler to close in a child (-1: none).
  virtual int listen_fd() const = 0;
  virtual int tcp_listen_fd() const = 0;
  // "host:port" (with "https://"-less form) the TCP listener is bound to, "" when none; and why
  // TCP is not listening when it was asked for.
  virtual std::string remote_address() const = 0;
  virtual std::string remote_error() const = 0;

  // Stops serving for good, for the host's exit: once it returns, nothing is accepted, read or
  // written, and no reply reaches the I/O thread; requests already on handler threads finish and
  // their replies are dropped. Waits up to `wait` for the I/O thread to leave whatever it is
  // doing (a TLS handshake step, at most). Thread-safe; later calls do nothing.
  virtual void stop_serving(std::chrono::milliseconds wait) noexcept = 0;

 protected:
  HttpServer() = default;
  virtual ~HttpServer() = default;
};

// One whole request from bytes, parsed as a connection's are (the same parser and limits). For
// the fuzz target and tests.
Result<HttpRequest> parse_request(std::string_view bytes, const Peer& peer, size_t max_body_bytes,
                                  size_t max_header_bytes);

// Whether a peer with this uid may talk to an agent running as `self`: the same user, or root
// (the people who could ptrace the process anyway).
bool peer_allowed(uid_t peer, uid_t self) noexcept;

}  // namespace probing::server
