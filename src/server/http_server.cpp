// The only translation unit of the agent that includes Boost.Beast.
#include <utility>  // before Asio: Boost 1.74 with GCC 12 in C++20 needs it

#include "server/http_server.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstring>
#include <optional>
#include <thread>

#include "core/log.h"

namespace probing::server {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Local = asio::local::stream_protocol;

bool peer_allowed(uid_t peer, uid_t self) noexcept { return peer == self || peer == 0; }

namespace {

class ServerImpl;

// One client connection: read a request, hand it to the pool, write the reply, repeat while the
// client keeps the connection alive. Owned by shared_ptr from its pending operations.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(ServerImpl& server, Local::socket socket);
  ~Session();
  void start(bool over_capacity);

 private:
  void read_request();
  void on_read(beast::error_code ec);
  void write(HttpResponse response, bool keep_alive);
  void close();
  // Ends the connection after a final reply: stops sending, then reads and drops what the client
  // still sends (bounded in bytes and time) before closing. Closing a unix socket with unread
  // input resets it, and the client would lose the reply.
  void linger_close();
  void drain();

  ServerImpl& server_;
  beast::basic_stream<Local> stream_;
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
      : options_(std::move(options)), handler_(std::move(handler)), fd_(fd),
        acceptor_(ioc_), pool_(static_cast<size_t>(options_.handler_threads)) {
    acceptor_.assign(Local(), fd);
  }

  int listen_fd() const override { return fd_; }

  void run() {
    accept();
    std::thread([this] {
      for (;;) {
        try {
          ioc_.run();
          return;
        } catch (const std::exception& e) {
          log_error(std::string("agent I/O loop: ") + e.what() + "; continuing");
        } catch (...) {
          log_error("agent I/O loop: unknown exception; continuing");
        }
      }
    }).detach();
  }

  const ServerOptions& options() const { return options_; }
  asio::thread_pool& pool() { return pool_; }
  std::atomic<int>& connections() { return connections_; }

  HttpResponse handle(const HttpRequest& request) noexcept {
    try {
      return handler_(request);
    } catch (const std::exception& e) {
      return error_response(500, "Internal", e.what());
    } catch (...) {
      return error_response(500, "Internal", "unknown error");
    }
  }

 private:
  void accept() {
    acceptor_.async_accept([this](beast::error_code ec, Local::socket socket) {
      if (!ec) {
        bool over = connections_.load() >= options_.max_connections;
        std::make_shared<Session>(*this, std::move(socket))->start(over);
      } else if (ec == asio::error::operation_aborted) {
        return;
      } else {
        // Out of descriptors (EMFILE) and the like: the connection stays in the backlog, so an
        // immediate retry would spin. Wait a little first.
        log_warn("accept: " + ec.message() + "; retrying in 200 ms");
        retry_.expires_after(std::chrono::milliseconds(200));
        retry_.async_wait([this](beast::error_code) { accept(); });
        return;
      }
      accept();
    });
  }

  ServerOptions options_;
  Handler handler_;
  int fd_;
  asio::io_context ioc_{1};
  asio::executor_work_guard<asio::io_context::executor_type> guard_{ioc_.get_executor()};
  Local::acceptor acceptor_;
  asio::steady_timer retry_{ioc_};
  asio::thread_pool pool_;
  std::atomic<int> connections_{0};
};

Session::Session(ServerImpl& server, Local::socket socket) : server_(server), stream_(std::move(socket)) {
  server_.connections().fetch_add(1);
}

Session::~Session() { server_.connections().fetch_sub(1); }

void Session::start(bool over_capacity) {
  // Asio accepts without SOCK_CLOEXEC: keep client connections out of programs the host runs.
  ::fcntl(stream_.socket().native_handle(), F_SETFD, FD_CLOEXEC);
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(stream_.socket().native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    log_warn(std::string("SO_PEERCRED: ") + std::strerror(errno) + "; connection closed");
    close();
    return;
  }
  peer_ = Peer{true, cred.uid, cred.pid, "uid " + std::to_string(cred.uid) + " pid " + std::to_string(cred.pid)};
  if (!peer_allowed(cred.uid, geteuid())) {
    log_warn("refused a connection from " + peer_.address + ": not this process's user nor root");
    write(error_response(403, "PermissionDenied",
                         "uid " + std::to_string(cred.uid) + " may not use this agent: it serves uid " +
                             std::to_string(geteuid()) + " and root only"),
          false);
    return;
  }
  if (over_capacity) {
    write(error_response(503, "Unavailable", "too many connections to this agent; try again"), false);
    return;
  }
  read_request();
}

void Session::read_request() {
  parser_.emplace();
  parser_->body_limit(server_.options().max_body_bytes);
  parser_->header_limit(static_cast<std::uint32_t>(server_.options().max_header_bytes));
  stream_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(server_.options().request_timeout_s)));
  http::async_read(stream_, buffer_, *parser_,
                   [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
}

void Session::on_read(beast::error_code ec) {
  if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::connection_reset ||
      ec == asio::error::eof) {
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
  stream_.expires_never();  // the handler keeps its own deadline
  auto request = std::make_shared<HttpRequest>();
  auto& msg = parser_->get();
  request->method = std::string(msg.method_string());
  split_target(std::string(msg.target()), &request->path, &request->query);
  request->body = std::move(msg.body());
  request->peer = peer_;
  bool keep_alive = msg.keep_alive();
  const auto& inline_paths = server_.options().inline_paths;
  if (std::find(inline_paths.begin(), inline_paths.end(), request->path) != inline_paths.end()) {
    write(server_.handle(*request), keep_alive);
    return;
  }
  asio::post(server_.pool(), [self = shared_from_this(), request, keep_alive] {
    HttpResponse response = self->server_.handle(*request);
    asio::post(self->stream_.get_executor(), [self, response = std::move(response), keep_alive]() mutable {
      self->write(std::move(response), keep_alive);
    });
  });
}

void Session::write(HttpResponse response, bool keep_alive) {
  response_ = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(response.status), 11);
  response_->set(http::field::server, "probing");
  response_->set(http::field::content_type, response.content_type);
  response_->keep_alive(keep_alive);
  response_->body() = std::move(response.body);
  response_->prepare_payload();
  stream_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(server_.options().request_timeout_s)));
  http::async_write(stream_, *response_, [self = shared_from_this(), keep_alive](beast::error_code ec, size_t) {
    if (ec) {
      self->close();
    } else if (!keep_alive) {
      self->linger_close();
    } else {
      self->read_request();
    }
  });
}

void Session::linger_close() {
  beast::error_code ignored;
  stream_.socket().shutdown(Local::socket::shutdown_send, ignored);
  stream_.expires_after(std::chrono::seconds(1));
  drain();
}

void Session::drain() {
  constexpr size_t kMaxDrainBytes = 1 << 20;
  stream_.async_read_some(asio::buffer(drain_buffer_), [self = shared_from_this()](beast::error_code ec, size_t n) {
    self->drained_ += n;
    if (ec || self->drained_ > kMaxDrainBytes) {
      self->close();
      return;
    }
    self->drain();
  });
}

void Session::close() {
  beast::error_code ignored;
  stream_.socket().shutdown(Local::socket::shutdown_both, ignored);
  stream_.socket().close(ignored);
}

}  // namespace

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
    server->run();
    return static_cast<HttpServer*>(server);
  } catch (const std::exception& e) {
    ::close(fd);
    return Status(Code::kInternal, std::string("starting the server: ") + e.what());
  }
}

}  // namespace probing::server
