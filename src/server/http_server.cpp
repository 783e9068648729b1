// The only translation unit of the agent that includes Boost.Beast.
#include <utility>  // before Asio: Boost 1.74 with GCC 12 in C++20 needs it

#include "server/http_server.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "core/log.h"
#include "server/auth.h"

namespace probing::server {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using Local = asio::local::stream_protocol;
using Tcp = asio::ip::tcp;
using UnixStream = beast::basic_stream<Local>;
using TcpStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

bool peer_allowed(uid_t peer, uid_t self) noexcept { return peer == self || peer == 0; }

namespace {

class ServerImpl;

HttpRequest to_request(http::request<http::string_body>& msg, const Peer& peer) {
  HttpRequest request;
  request.method = std::string(msg.method_string());
  split_target(std::string(msg.target()), &request.path, &request.query);
  request.body = std::move(msg.body());
  request.authorization = std::string(msg[http::field::authorization]);
  request.origin = std::string(msg[http::field::origin]);
  request.host = std::string(msg[http::field::host]);
  request.read_only = msg["X-Probing-Right"] == "read";
  request.accepts_gzip = msg[http::field::accept_encoding].find("gzip") != std::string_view::npos;
  request.peer = peer;
  return request;
}

std::chrono::steady_clock::duration seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

// Connections open now, and the most allowed, for one kind of listener.
struct Capacity {
  std::atomic<int> open{0};
  int max = 64;
};

// One client connection: (a TLS handshake,) read a request, hand it to the pool, write the
// reply, repeat while the client keeps the connection alive. Owned by shared_ptr from its pending
// operations. A connection refused at accept gets its one reply and is closed.
template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
 public:
  Session(ServerImpl& server, Stream stream, Capacity& capacity, Peer peer)
      : server_(server), stream_(std::move(stream)), capacity_(capacity), peer_(std::move(peer)) {
    capacity_.open.fetch_add(1);
  }
  ~Session() { capacity_.open.fetch_sub(1); }

  // `refusal`: the reply for a connection that may not go on (403, 503).
  void start(std::optional<HttpResponse> refusal);

 private:
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;
  auto& lowest() { return beast::get_lowest_layer(stream_); }
  void read_request();
  void on_read(beast::error_code ec);
  void write(HttpResponse response, bool keep_alive);
  void close();
  // Ends the connection after a final reply: stops sending, then reads and drops what the client
  // still sends (bounded in bytes and time) before closing. Closing a socket with unread input
  // resets it, and the client would lose the reply.
  void linger_close();
  void drain();

  ServerImpl& server_;
  Stream stream_;
  Capacity& capacity_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<http::response<http::string_body>> response_;
  Peer peer_;
  std::array<char, 4096> drain_buffer_{};
  size_t drained_ = 0;
};

class ServerImpl final : public HttpServer {
 public:
  ServerImpl(ServerOptions options, Handler handler, int fd)
      : options_(std::move(options)),
        handler_(std::move(handler)),
        fd_(fd),
        acceptor_(ioc_),
        tcp_acceptor_(ioc_) {
    acceptor_.assign(Local(), fd);
    unix_capacity_.max = options_.max_connections;
    tcp_capacity_.max = options_.max_tcp_connections;
  }

  int listen_fd() const override { return fd_; }
  int tcp_listen_fd() const override { return tcp_fd_; }
  std::string remote_address() const override { return remote_address_; }
  std::string remote_error() const override { return remote_error_; }

  // Binds the TCP listener (before run()). An error leaves the unix socket serving.
  Status listen_tcp() {
    const RemoteOptions& r = options_.remote;
    try {
      if (!r.tls_cert.empty()) {
        tls_ = std::make_unique<ssl::context>(ssl::context::tls_server);
        tls_->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                          ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                          ssl::context::single_dh_use);
        // An encrypted key would make OpenSSL ask for its passphrase on the target's terminal.
        tls_->set_password_callback([](size_t, ssl::context::password_purpose) { return std::string(); });
        tls_->use_certificate_chain_file(r.tls_cert);
        tls_->use_private_key_file(r.tls_key, ssl::context::pem);
      }
      Tcp::endpoint endpoint(asio::ip::make_address(r.host == "localhost" ? "127.0.0.1" : r.host),
                             static_cast<unsigned short>(r.port));
      tcp_acceptor_.open(endpoint.protocol());
      tcp_acceptor_.set_option(Tcp::acceptor::reuse_address(true));
      tcp_acceptor_.bind(endpoint);
      tcp_acceptor_.listen(128);
      ::fcntl(tcp_acceptor_.native_handle(), F_SETFD, FD_CLOEXEC);
      tcp_fd_ = tcp_acceptor_.native_handle();
      Tcp::endpoint bound = tcp_acceptor_.local_endpoint();
      std::string host = bound.address().to_string();
      remote_address_ =
          (bound.address().is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(bound.port());
      return Status::ok();
    } catch (const std::exception& e) {
      remote_error_ = std::string(r.tls_cert.empty() ? "" : "TLS or ") + "TCP on " + r.host + ":" +
                      std::to_string(r.port) + ": " + e.what();
      beast::error_code ignored;
      tcp_acceptor_.close(ignored);
      tls_.reset();
      return Status(Code::kUnavailable, remote_error_);
    }
  }

  void run() {
    accept();
    if (tcp_fd_ >= 0) accept_tcp();
    std::thread([this] {
      ::pthread_setname_np(::pthread_self(), "probing-io");
      for (;;) {
        try {
          ioc_.run();
          break;
        } catch (const std::exception& e) {
          log_error(std::string("agent I/O loop: ") + e.what() + "; continuing");
        } catch (...) {
          log_error("agent I/O loop: unknown exception; continuing");
        }
      }
      std::lock_guard<std::mutex> lock(stop_mu_);
      io_stopped_ = true;
      stop_cv_.notify_all();
    }).detach();
  }

  void stop_serving(std::chrono::milliseconds wait) noexcept override {
    std::unique_lock<std::mutex> lock(stop_mu_);
    if (stopping_.exchange(true)) return;
    ioc_.stop();  // run() returns once the handler running now (if any) returns
    stop_cv_.wait_for(lock, wait, [this] { return io_stopped_; });
  }

  // Hands a finished reply to the I/O thread, unless serving has stopped. Under stop_mu_, so
  // that nothing is posted to the I/O loop once stop_serving() has begun.
  template <class Post>
  void deliver(Post post) {
    std::lock_guard<std::mutex> lock(stop_mu_);
    if (!stopping_.load()) post();
  }

  const ServerOptions& options() const { return options_; }
  // The handler threads, started by the first request that needs one: an agent that has served
  // nothing runs no thread that could hold a lock when the host forks. I/O thread only.
  asio::thread_pool& pool() {
    if (pool_ == nullptr) {
      // A new thread takes its creator's name: the handlers are named probing-handler so.
      ::pthread_setname_np(::pthread_self(), "probing-handler");
      pool_ = std::make_unique<asio::thread_pool>(static_cast<size_t>(options_.handler_threads));
      ::pthread_setname_np(::pthread_self(), "probing-io");
    }
    return *pool_;
  }

  HttpResponse handle(const HttpRequest& request) noexcept {
    if (stopping_.load()) return error_response(503, "Unavailable", "the process is exiting");
    try {
      return handler_(request);
    } catch (const std::exception& e) {
      return error_response(500, "Internal", e.what());
    } catch (...) {
      return error_response(500, "Internal", "unknown error");
    }
  }

 private:
  // Out of descriptors (EMFILE) and the like: the connection stays in the backlog, so an
  // immediate retry would spin. Wait a little first.
  template <class Retry>
  void retry_later(const beast::error_code& ec, asio::steady_timer& timer, Retry retry) {
    log_warn("accept: " + ec.message() + "; retrying in 200 ms");
    timer.expires_after(std::chrono::milliseconds(200));
    timer.async_wait([retry](beast::error_code) { retry(); });
  }

  void accept() {
    acceptor_.async_accept([this](beast::error_code ec, Local::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (ec) return retry_later(ec, retry_, [this] { accept(); });
      start_unix(std::move(socket));
      accept();
    });
  }

  void start_unix(Local::socket socket) {
    // Asio accepts without SOCK_CLOEXEC: keep client connections out of programs the host runs.
    ::fcntl(socket.native_handle(), F_SETFD, FD_CLOEXEC);
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      log_warn(std::string("SO_PEERCRED: ") + std::strerror(errno) + "; connection closed");
      return;  // the socket closes as it goes out of scope
    }
    Peer peer{true, true, cred.uid, cred.pid,
              "uid " + std::to_string(cred.uid) + " pid " + std::to_string(cred.pid)};
    std::optional<HttpResponse> refusal;
    if (!peer_allowed(cred.uid, geteuid())) {
      log_warn("refused a connection from " + peer.address + ": not this process's user nor root");
      refusal = error_response(403, "PermissionDenied",
                               "uid " + std::to_string(cred.uid) + " may not use this agent: it serves uid " +
                                   std::to_string(geteuid()) + " and root only");
    } else if (unix_capacity_.open.load() >= unix_capacity_.max) {
      refusal = error_response(503, "Unavailable", "too many connections to this agent; try again");
    }
    std::make_shared<Session<UnixStream>>(*this, UnixStream(std::move(socket)), unix_capacity_,
                                          std::move(peer))
        ->start(std::move(refusal));
  }

  void accept_tcp() {
    tcp_acceptor_.async_accept([this](beast::error_code ec, Tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (ec) return retry_later(ec, tcp_retry_, [this] { accept_tcp(); });
      start_tcp(std::move(socket));
      accept_tcp();
    });
  }

  void start_tcp(Tcp::socket socket) {
    ::fcntl(socket.native_handle(), F_SETFD, FD_CLOEXEC);
    beast::error_code ec;
    Tcp::endpoint remote = socket.remote_endpoint(ec);
    Tcp::endpoint local = socket.local_endpoint(ec);
    if (ec) return;  // gone already
    if (tcp_capacity_.open.load() >= tcp_capacity_.max) {
      // Over the cap, a network client gets no reply and no descriptor held for it: a flood must
      // not use up the target's descriptors.
      log_debug("refused a TCP connection: at server.max_connections");
      return;
    }
    asio::ip::address address = remote.address();
    if (address.is_v6() && address.to_v6().is_v4_mapped())
      address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
    std::string ip = address.to_string();
    Peer peer;
    peer.local = false;
    peer.address = (address.is_v6() ? "[" + ip + "]" : ip) + ":" + std::to_string(remote.port());
    peer.tls = tls_ != nullptr;
    std::optional<HttpResponse> refusal;
    const std::vector<Cidr>& allow = options_.remote.allow;
    std::optional<std::array<unsigned char, 16>> bytes = parse_address(ip);
    if (!allow.empty() && (!bytes || std::none_of(allow.begin(), allow.end(),
                                                  [&](const Cidr& c) { return c.contains(*bytes); }))) {
      log_warn("refused a connection from " + peer.address + ": not in PROBING_ALLOW");
      refusal = error_response(403, "PermissionDenied", "this address may not connect (PROBING_ALLOW)");
    } else if (address.is_loopback() && options_.remote.token.empty() && options_.remote.read_token.empty()) {
      // Only a token-less (loopback) listener decides by the client's uid.
      std::string local_ip = local.address().to_string();
      if (local.address().is_v6() && local.address().to_v6().is_v4_mapped()) {
        local_ip = asio::ip::make_address_v4(asio::ip::v4_mapped, local.address().to_v6()).to_string();
      }
      std::optional<uid_t> uid = loopback_peer_uid(ip, remote.port(), local_ip, local.port());
      if (uid) {
        peer.uid_known = true;
        peer.uid = *uid;
      }
    }
    if (tls_ != nullptr) {
      auto session = std::make_shared<Session<TlsStream>>(*this, TlsStream(std::move(socket), *tls_),
                                                          tcp_capacity_, std::move(peer));
      session->start(std::move(refusal));
    } else {
      std::make_shared<Session<TcpStream>>(*this, TcpStream(std::move(socket)), tcp_capacity_,
                                           std::move(peer))
          ->start(std::move(refusal));
    }
  }

  ServerOptions options_;
  Handler handler_;
  int fd_;
  int tcp_fd_ = -1;
  std::string remote_address_;
  std::string remote_error_;
  asio::io_context ioc_{1};
  asio::executor_work_guard<asio::io_context::executor_type> guard_{ioc_.get_executor()};
  Local::acceptor acceptor_;
  Tcp::acceptor tcp_acceptor_;
  std::unique_ptr<ssl::context> tls_;
  asio::steady_timer retry_{ioc_};
  asio::steady_timer tcp_retry_{ioc_};
  std::unique_ptr<asio::thread_pool> pool_;  // never destroyed, as the server is
  Capacity unix_capacity_;
  Capacity tcp_capacity_;
  // stop_serving(): set once, never cleared. The server is never destroyed, so neither are these.
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  std::atomic<bool> stopping_{false};
  bool io_stopped_ = false;  // guarded by stop_mu_
};

template <class Stream>
void Session<Stream>::start(std::optional<HttpResponse> refusal) {
  if constexpr (kTls) {
    // No reply can be sent before the handshake; the refusal (if any) then goes over TLS.
    lowest().expires_after(seconds(server_.options().request_timeout_s));
    stream_.async_handshake(ssl::stream_base::server, [self = this->shared_from_this(),
                                                       refusal = std::move(refusal)](beast::error_code ec) {
      if (ec) {
        log_debug("TLS handshake with " + self->peer_.address + ": " + ec.message());
        self->close();
      } else if (refusal) {
        self->write(*refusal, false);
      } else {
        self->read_request();
      }
    });
  } else {
    if (refusal) {
      write(std::move(*refusal), false);
      return;
    }
    read_request();
  }
}

template <class Stream>
void Session<Stream>::read_request() {
  parser_.emplace();
  parser_->body_limit(server_.options().max_body_bytes);
  parser_->header_limit(static_cast<std::uint32_t>(server_.options().max_header_bytes));
  lowest().expires_after(seconds(server_.options().request_timeout_s));
  http::async_read(stream_, buffer_, *parser_,
                   [self = this->shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
}

template <class Stream>
void Session<Stream>::on_read(beast::error_code ec) {
  if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
      ec == asio::error::connection_reset || ec == asio::error::eof || ec == ssl::error::stream_truncated) {
    close();
    return;
  }
  if (ec == http::error::body_limit) {
    write(error_response(413, "BadRequest", "request body too large"), false);
    return;
  }
  if (ec == http::error::header_limit) {
    write(error_response(431, "BadRequest", "request headers too large"), false);
    return;
  }
  if (ec) {
    write(error_response(400, "BadRequest", "malformed HTTP request: " + ec.message()), false);
    return;
  }
  lowest().expires_never();  // the handler keeps its own deadline
  auto& msg = parser_->get();
  auto request = std::make_shared<HttpRequest>(to_request(msg, peer_));
  bool keep_alive = msg.keep_alive();
  const auto& inline_paths = server_.options().inline_paths;
  if (std::find(inline_paths.begin(), inline_paths.end(), request->path) != inline_paths.end()) {
    write(server_.handle(*request), keep_alive);
    return;
  }
  asio::post(server_.pool(), [self = this->shared_from_this(), request, keep_alive] {
    HttpResponse response = self->server_.handle(*request);
    self->server_.deliver([&] {
      asio::post(self->stream_.get_executor(), [self, response = std::move(response), keep_alive]() mutable {
        self->write(std::move(response), keep_alive);
      });
    });
  });
}

template <class Stream>
void Session<Stream>::write(HttpResponse response, bool keep_alive) {
  response_ =
      std::make_shared<http::response<http::string_body>>(static_cast<http::status>(response.status), 11);
  response_->set(http::field::server, "probing");
  response_->set(http::field::content_type, response.content_type);
  for (const auto& [name, value] : response.headers) response_->set(name, value);
  response_->keep_alive(keep_alive);
  response_->body() = std::move(response.body);
  response_->prepare_payload();
  lowest().expires_after(seconds(server_.options().request_timeout_s));
  http::async_write(stream_, *response_,
                    [self = this->shared_from_this(), keep_alive](beast::error_code ec, size_t) {
                      if (ec) {
                        self->close();
                      } else if (!keep_alive) {
                        self->linger_close();
                      } else {
                        self->read_request();
                      }
                    });
}

template <class Stream>
void Session<Stream>::linger_close() {
  beast::error_code ignored;
  lowest().socket().shutdown(std::decay_t<decltype(lowest().socket())>::shutdown_send, ignored);
  lowest().expires_after(std::chrono::seconds(1));
  drain();
}

template <class Stream>
void Session<Stream>::drain() {
  constexpr size_t kMaxDrainBytes = 1 << 20;
  lowest().async_read_some(asio::buffer(drain_buffer_),
                           [self = this->shared_from_this()](beast::error_code ec, size_t n) {
                             self->drained_ += n;
                             if (ec || self->drained_ > kMaxDrainBytes) {
                               self->close();
                               return;
                             }
                             self->drain();
                           });
}

template <class Stream>
void Session<Stream>::close() {
  beast::error_code ignored;
  lowest().socket().shutdown(std::decay_t<decltype(lowest().socket())>::shutdown_both, ignored);
  lowest().socket().close(ignored);
}

}  // namespace

Result<HttpRequest> parse_request(std::string_view bytes, const Peer& peer, size_t max_body_bytes,
                                  size_t max_header_bytes) {
  http::request_parser<http::string_body> parser;
  parser.body_limit(max_body_bytes);
  parser.header_limit(static_cast<std::uint32_t>(max_header_bytes));
  parser.eager(true);
  beast::error_code ec;
  size_t used = parser.put(asio::buffer(bytes.data(), bytes.size()), ec);
  if (!ec && !parser.is_done()) parser.put_eof(ec);
  if (ec) return Status(Code::kInvalidArgument, "malformed HTTP request: " + ec.message());
  if (!parser.is_done()) return Status(Code::kInvalidArgument, "incomplete HTTP request");
  (void)used;
  return to_request(parser.get(), peer);
}

Result<HttpServer*> HttpServer::start(const ServerOptions& options, Handler handler) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno_status("socket(AF_UNIX)");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (options.abstract_name.size() + 1 > sizeof addr.sun_path) {
    ::close(fd);
    return Status(Code::kInvalidArgument, "socket name too long: " + options.abstract_name);
  }
  // Abstract namespace: sun_path starts with a NUL and is not NUL-terminated; nothing is left on
  // disk, and the name vanishes with the last descriptor.
  std::memcpy(addr.sun_path + 1, options.abstract_name.data(), options.abstract_name.size());
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + options.abstract_name.size());
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    Status st = errno == EADDRINUSE
                    ? Status(Code::kAlreadyExists, "@" + options.abstract_name + " is already served")
                    : errno_status("bind(@" + options.abstract_name + ")");
    ::close(fd);
    return st;
  }
  if (::listen(fd, 128) != 0) {
    Status st = errno_status("listen(@" + options.abstract_name + ")");
    ::close(fd);
    return st;
  }
  try {
    auto* server = new ServerImpl(options, std::move(handler), fd);  // never destroyed
    if (options.remote.enabled) (void)server->listen_tcp();          // its error is in remote_error()
    server->run();
    return static_cast<HttpServer*>(server);
  } catch (const std::exception& e) {
    ::close(fd);
    return Status(Code::kInternal, std::string("starting the server: ") + e.what());
  }
}

}  // namespace probing::server
