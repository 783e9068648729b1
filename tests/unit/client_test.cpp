#include "client/client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <thread>

#include <gtest/gtest.h>

namespace probing::client {
namespace {

TEST(Target, Pid) {
  auto t = parse_target("1234");
  ASSERT_TRUE(t.is_ok());
  EXPECT_EQ(t->kind, Target::Kind::kPid);
  EXPECT_EQ(t->pid, 1234);
  EXPECT_FALSE(parse_target("0").is_ok());
  EXPECT_FALSE(parse_target("99999999999999").is_ok());
}

TEST(Target, UnixAndTcp) {
  auto u = parse_target("unix:@probing-7");
  ASSERT_TRUE(u.is_ok());
  EXPECT_EQ(u->kind, Target::Kind::kUnix);
  EXPECT_EQ(u->unix_path, "@probing-7");
  auto h = parse_target("trainer-7:8080");
  ASSERT_TRUE(h.is_ok());
  EXPECT_EQ(h->kind, Target::Kind::kTcp);
  EXPECT_EQ(h->host, "trainer-7");
  EXPECT_EQ(h->port, 8080);
  EXPECT_EQ(h->text, "trainer-7:8080");
  auto v4 = parse_target("127.0.0.1:9000");
  ASSERT_TRUE(v4.is_ok());
  EXPECT_EQ(v4->kind, Target::Kind::kTcp);
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, 9000);
  auto v6 = parse_target("[::1]:9000");
  ASSERT_TRUE(v6.is_ok());
  EXPECT_EQ(v6->kind, Target::Kind::kTcp);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 9000);
  auto v6_long = parse_target("[fe80::1:2]:65535");
  ASSERT_TRUE(v6_long.is_ok());
  EXPECT_EQ(v6_long->host, "fe80::1:2");
  EXPECT_EQ(v6_long->port, 65535);
  EXPECT_FALSE(parse_target("host:99999").is_ok());
  EXPECT_FALSE(parse_target("host:0").is_ok());
  EXPECT_FALSE(parse_target("host:").is_ok());
  EXPECT_FALSE(parse_target(":8080").is_ok());
  EXPECT_FALSE(parse_target("[::1]").is_ok());
  EXPECT_FALSE(parse_target("nonsense").is_ok());
  EXPECT_FALSE(parse_target("unix:").is_ok());
}

TEST(Connect, ErrorsSayWhatToDo) {
  auto missing = Client::connect(*parse_target("999999999"));
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_EQ(missing.status().message(), "no process 999999999");
  // pid 1 exists and has no agent.
  auto no_agent = Client::connect(*parse_target("1"));
  ASSERT_FALSE(no_agent.is_ok());
  EXPECT_EQ(no_agent.status().code(), Code::kUnavailable);
  EXPECT_NE(no_agent.status().message().find("probing 1 inject"), std::string::npos);
}

TEST(Connect, TlsIsForTcpTargetsOnly) {
  ConnectOptions tls;
  tls.tls = true;
  auto r = Client::connect(*parse_target("1"), 1, tls);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
}

TEST(Response, ErrorFields) {
  Response r{503, R"({"error": {"type": "Timeout", "message": "GIL held"}})", {}};
  EXPECT_EQ(r.error_type(), "Timeout");
  EXPECT_EQ(r.error_message(), "GIL held");
  Response plain{500, "oops", {}};
  EXPECT_EQ(plain.error_message(), "oops");
}

// A TCP server on 127.0.0.1:<a free port> that gives each connection it accepts to `handler`
// on its own thread, one at a time. `stop_fd` becomes readable when the server is destroyed:
// a handler that holds a connection waits on it.
class TestServer {
 public:
  using Handler = std::function<void(int fd, int stop_fd)>;

  explicit TestServer(Handler handler) : handler_(std::move(handler)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        ::listen(listen_fd_, 8) != 0 || ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "test server: " << std::strerror(errno);
      return;
    }
    port_ = ntohs(addr.sin_port);
    stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
    thread_ = std::thread([this] {
      for (;;) {
        pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0 && errno == EINTR) continue;
        if (fds[1].revents != 0) return;
        int conn = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (conn < 0) continue;
        handler_(conn, stop_fd_);
        ::close(conn);
      }
    });
  }

  ~TestServer() {
    uint64_t one = 1;
    if (stop_fd_ >= 0 && ::write(stop_fd_, &one, sizeof one) != sizeof one) ADD_FAILURE() << "eventfd write";
    if (thread_.joinable()) thread_.join();
    if (stop_fd_ >= 0) ::close(stop_fd_);
    if (listen_fd_ >= 0) ::close(listen_fd_);
  }

  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }

  // Reads until the end of the request's headers (or the peer closes, or the server stops).
  static std::string read_headers(int fd, int stop_fd) {
    std::string in;
    char buf[4096];
    while (in.find("\r\n\r\n") == std::string::npos) {
      pollfd fds[2] = {{fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
      if (::poll(fds, 2, 5000) <= 0 || fds[1].revents != 0) break;
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      in.append(buf, static_cast<size_t>(n));
    }
    return in;
  }

  // Reads what the peer sent first.
  static void read_some(int fd, int stop_fd) {
    char buf[4096];
    pollfd fds[2] = {{fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    if (::poll(fds, 2, 5000) > 0 && fds[1].revents == 0 && ::read(fd, buf, sizeof buf) < 0) ADD_FAILURE() << "read";
  }

  static void write_all(int fd, const std::string& text) {
    size_t done = 0;
    while (done < text.size()) {
      ssize_t n = ::send(fd, text.data() + done, text.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return;
      done += static_cast<size_t>(n);
    }
  }

  static void hold(int, int stop_fd) {
    pollfd fd{stop_fd, POLLIN, 0};
    while (::poll(&fd, 1, -1) < 0 && errno == EINTR) {
    }
  }

 private:
  Handler handler_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

double elapsed_s(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

TEST(Tcp, NothingListens) {
  // A bound socket that does not listen: connecting is refused, and the port stays ours.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), len), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  std::string target = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  auto r = Client::connect(*parse_target(target), 2);
  ::close(fd);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), Code::kUnavailable);
  EXPECT_NE(r.status().message().find("nothing listens on " + target), std::string::npos) << r.status().message();
}

TEST(Tcp, UnknownHost) {
  auto r = Client::connect(*parse_target("no-such-host.invalid:9000"), 5);
  ASSERT_FALSE(r.is_ok());
  EXPECT_TRUE(r.status().code() == Code::kNotFound || r.status().code() == Code::kTimeout) << r.status().message();
  EXPECT_NE(r.status().message().find("no-such-host.invalid"), std::string::npos) << r.status().message();
}

TEST(Tcp, SilentServerTimesOut) {
  TestServer server(&TestServer::hold);
  auto c = Client::connect(*parse_target(server.target()), 2);
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  auto start = std::chrono::steady_clock::now();
  auto r = (*c)->request("GET", "/health", "", 0.3);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), Code::kTimeout);
  EXPECT_NE(r.status().message().find("did not answer within 0.3 s"), std::string::npos) << r.status().message();
  EXPECT_LT(elapsed_s(start), 2.0);
}

TEST(Tls, AgainstPlainServerFailsClearly) {
  // A plain HTTP server answers the ClientHello with an HTTP error.
  TestServer server([](int fd, int stop_fd) {
    TestServer::read_some(fd, stop_fd);  // the ClientHello
    TestServer::write_all(fd, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  });
  ConnectOptions tls;
  tls.tls = true;
  auto start = std::chrono::steady_clock::now();
  auto r = Client::connect(*parse_target(server.target()), 10, tls);
  ASSERT_FALSE(r.is_ok());
  EXPECT_LT(elapsed_s(start), 8.0);
  std::string m = r.status().message();
  EXPECT_NE(m.find("TLS handshake with " + server.target() + " failed"), std::string::npos) << m;
  EXPECT_NE(m.find("PROBING_TLS_CERT"), std::string::npos) << m;
}

TEST(Tls, AgainstSilentServerTimesOut) {
  TestServer server(&TestServer::hold);
  ConnectOptions tls;
  tls.insecure = true;  // implies TLS
  auto start = std::chrono::steady_clock::now();
  auto r = Client::connect(*parse_target(server.target()), 0.5, tls);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), Code::kTimeout);
  EXPECT_LT(elapsed_s(start), 3.0);
  std::string m = r.status().message();
  EXPECT_NE(m.find("TLS handshake with " + server.target()), std::string::npos) << m;
  EXPECT_NE(m.find("PROBING_TLS_CERT"), std::string::npos) << m;
}

TEST(Tls, UnreadableCacert) {
  TestServer server(&TestServer::hold);
  ConnectOptions tls;
  tls.cacert = "/nonexistent/ca.pem";
  auto r = Client::connect(*parse_target(server.target()), 1, tls);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find("/nonexistent/ca.pem"), std::string::npos) << r.status().message();
}

std::string reply(int status, const std::string& reason, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

// Answers like the agent's auth check: 200 for "Bearer good", 403 for "Bearer reader" (a
// read-only token), 401 otherwise.
void auth_server(int fd, int stop_fd) {
  std::string request = TestServer::read_headers(fd, stop_fd);
  if (request.find("\r\nAuthorization: Bearer good\r\n") != std::string::npos) {
    TestServer::write_all(fd, reply(200, "OK", R"({"ok": true})"));
  } else if (request.find("\r\nAuthorization: Bearer reader\r\n") != std::string::npos) {
    TestServer::write_all(fd, reply(403, "Forbidden",
                                    R"({"error": {"type": "PermissionDenied", "message": "this token may only read"}})"));
  } else if (request.find("\r\nAuthorization: ") != std::string::npos) {
    TestServer::write_all(fd, reply(401, "Unauthorized",
                                    R"({"error": {"type": "Unauthorized", "message": "the token is not valid"}})"));
  } else {
    TestServer::write_all(fd, reply(401, "Unauthorized",
                                    R"({"error": {"type": "Unauthorized", "message": "this agent needs a token"}})"));
  }
}

Result<Response> get_with_token(const std::string& target, const std::string& token) {
  ConnectOptions options;
  options.token = token;
  auto c = Client::connect(*parse_target(target), 2, options);
  if (!c.is_ok()) return c.status();
  return (*c)->request("GET", "/health", "", 2);
}

TEST(Tcp, SendsTheToken) {
  TestServer server(&auth_server);
  auto r = get_with_token(server.target(), "good");
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, R"({"ok": true})");
}

TEST(Tcp, WrongTokenIsRefused) {
  TestServer server(&auth_server);
  auto r = get_with_token(server.target(), "bad");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), Code::kPermissionDenied);
  EXPECT_EQ(r.status().message(),
            server.target() + " refused the token: the token is not valid (give --token or PROBING_TOKEN)");
}

TEST(Tcp, MissingTokenIsAskedFor) {
  TestServer server(&auth_server);
  auto r = get_with_token(server.target(), "");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), Code::kPermissionDenied);
  EXPECT_EQ(r.status().message(),
            server.target() + " asks for a token: this agent needs a token (give --token or PROBING_TOKEN)");
}

TEST(Tcp, ForbiddenGivesTheAgentsMessage) {
  TestServer server(&auth_server);
  auto r = get_with_token(server.target(), "reader");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), Code::kPermissionDenied);
  EXPECT_EQ(r.status().message(), "this token may only read");
}

}  // namespace
}  // namespace probing::client
