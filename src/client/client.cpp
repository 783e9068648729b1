// The only translation unit of the client that includes Boost.Beast (and OpenSSL).
//
// One implementation, StreamClient<Stream>, serves the three transports: a unix socket
// (beast::basic_stream<local::stream_protocol>), TCP (beast::tcp_stream) and TLS over TCP
// (beast::ssl_stream<beast::tcp_stream>). Every operation is asynchronous underneath and run to
// completion on the client's own io_context, because Beast's stream timeouts apply to
// asynchronous operations only: that is what makes every connect, handshake and request end by
// its deadline, whatever the peer does.
#include <utility>  // before Asio: Boost 1.74 with GCC 12 in C++20 needs it

#include "client/client.h"

#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <type_traits>

#include "core/proc_files.h"

namespace probing::client {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using Local = asio::local::stream_protocol;
using Tcp = asio::ip::tcp;
using UnixStream = beast::basic_stream<Local>;
using TcpStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;
using Clock = std::chrono::steady_clock;

namespace {

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

std::string format_seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

bool all_digits(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

std::string target_name(const Target& t) {
  return t.kind == Target::Kind::kPid ? "process " + std::to_string(t.pid) : t.text;
}

Status stopped_status(pid_t pid) {
  return Status(Code::kUnavailable,
                "process " + std::to_string(pid) +
                    " is stopped (SIGSTOP, SIGTSTP or Ctrl-Z): nothing in it can answer until "
                    "it runs again; resume it with: kill -CONT " +
                    std::to_string(pid));
}

// "the agent closed the connection" in all its spellings, TLS's included.
bool is_closed(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == http::error::partial_message ||
         ec == ssl::error::stream_truncated;
}

// The bytes that came back are not an HTTP reply (a TLS alert, say).
bool is_parse_error(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_version).category() && !is_closed(ec);
}

constexpr const char* kTlsHint = "is the agent using TLS (PROBING_TLS_CERT)?";

template <class Stream>
constexpr bool kIsTls = std::is_same_v<Stream, TlsStream>;

template <class Stream>
class StreamClient final : public Client {
 public:
  // REQUIRES: `tls` set for TlsStream (it outlives the stream, being a member before it).
  StreamClient(Target t, ConnectOptions options, std::unique_ptr<ssl::context> tls)
      : Client(std::move(t)), options_(std::move(options)), tls_(std::move(tls)), stream_(make_stream()) {}

  Stream& stream() { return stream_; }

  // Runs one asynchronous operation, started by `start(handler)`, to completion; its error.
  // The stream's expiry (set by the caller) bounds it. A local process is looked at every 250 ms
  // meanwhile: one stopped after the connection was made (SIGSTOP, Ctrl-Z) cannot answer until it
  // runs again, so the wait ends there (target_stopped_).
  template <class Start>
  beast::error_code run(Start&& start) {
    beast::error_code result = asio::error::would_block;
    ioc_.restart();
    start([&result](const beast::error_code& ec, auto&&...) { result = ec; });
    if (target_.kind != Target::Kind::kPid) {
      ioc_.run();
      return result;
    }
    while (!ioc_.stopped()) {
      ioc_.run_for(std::chrono::milliseconds(250));
      if (ioc_.stopped() || result != asio::error::would_block) break;
      if (std::optional<ProcStat> st = read_proc_stat(target_.pid); st && st->state() == 'T') {
        target_stopped_ = true;
        beast::get_lowest_layer(stream_).cancel();
        ioc_.run();  // the operation ends, aborted
      }
    }
    return result;
  }

  // Takes ownership of a connected unix socket.
  void adopt(int fd) requires std::is_same_v<Stream, UnixStream> { stream_.socket().assign(Local(), fd); }

  // Connects to the first of `endpoints` that accepts, by `deadline`.
  Status connect_tcp(const std::vector<Tcp::endpoint>& endpoints, Clock::time_point deadline,
                     double timeout_s) requires(!std::is_same_v<Stream, UnixStream>) {
    auto& tcp = beast::get_lowest_layer(stream_);
    tcp.expires_at(deadline);
    beast::error_code ec = run([&](auto handler) { tcp.async_connect(endpoints, std::move(handler)); });
    if (!ec) return Status::ok();
    const std::string& name = target_.text;
    if (ec == beast::error::timeout) {
      return {Code::kTimeout, "connecting to " + name + " timed out after " + format_seconds(timeout_s) +
                                  " s (a firewall, or no such host on the network?)"};
    }
    if (ec == asio::error::connection_refused) {
      return {Code::kUnavailable, "nothing listens on " + name +
                                      " (is the agent serving TCP there? start the "
                                      "target with PROBING_PORT)"};
    }
    return {Code::kUnavailable, "connecting to " + name + ": " + ec.message()};
  }

  // The TLS handshake, verifying the agent's certificate and host name unless insecure.
  Status handshake(Clock::time_point deadline, double timeout_s) requires kIsTls<Stream> {
    const std::string& name = target_.text;
    const std::string& host = target_.host;
    SSL* native = stream_.native_handle();
    beast::error_code addr_ec;
    asio::ip::make_address(host, addr_ec);
    bool is_address = !addr_ec;
    // SNI takes host names only (RFC 6066).
    if (!is_address && SSL_set_tlsext_host_name(native, host.c_str()) != 1) {
      return {Code::kInternal, "setting the TLS server name for " + name};
    }
    if (!options_.insecure) {
      // OpenSSL's own check (what ssl::host_name_verification does), set on the connection so
      // that a mismatch is reported as one ("hostname mismatch"), not as a bare failure.
      X509_VERIFY_PARAM* param = SSL_get0_param(native);
      int ok = is_address ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str())
                          : X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
      if (ok != 1) return {Code::kInternal, "setting the TLS host name check for " + name};
    }
    beast::get_lowest_layer(stream_).expires_at(deadline);
    beast::error_code ec =
        run([&](auto handler) { stream_.async_handshake(ssl::stream_base::client, std::move(handler)); });
    if (!ec) return Status::ok();
    std::string prefix = "TLS handshake with " + name;
    if (ec == beast::error::timeout) {
      return {Code::kTimeout,
              prefix + " got no answer within " + format_seconds(timeout_s) + " s; " + kTlsHint};
    }
    long verify = SSL_get_verify_result(native);
    if (verify != X509_V_OK) {
      bool wrong_name = verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH;
      return {Code::kUnavailable,
              prefix +
                  " failed: the agent's certificate was refused: " + X509_verify_cert_error_string(verify) +
                  (wrong_name ? "; connect by a name the certificate carries, or use --insecure"
                              : "; use --cacert FILE (its certificate or CA) or --insecure")};
    }
    std::string reason = is_closed(ec) ? "the agent closed the connection" : ec.message();
    // What a plain-HTTP agent's reply to a ClientHello looks like to OpenSSL.
    if (reason.find("wrong version number") != std::string::npos ||
        reason.find("packet length too long") != std::string::npos) {
      return {Code::kUnavailable,
              prefix + " failed: the agent at " + name + " answers in plain HTTP, not TLS " +
                  "(it was started without PROBING_TLS_CERT): drop --tls, --cacert and " + "--insecure"};
    }
    return {Code::kUnavailable, prefix + " failed: " + reason + "; " + kTlsHint};
  }

  Result<Response> request(const std::string& method, const std::string& path, const std::string& body,
                           double timeout_s) override {
    Result<Response> r = exchange(method, path, body, {}, timeout_s);
    if (!r.is_ok()) return r;
    if (r->status == 401) return refused_token(*r);
    if (r->status == 403) return Status(Code::kPermissionDenied, r->error_message());
    return r;
  }

  Result<Response> forward(const std::string& method, const std::string& target, const std::string& body,
                           const Headers& headers, double timeout_s) override {
    return exchange(method, target, body, headers, timeout_s);
  }

 private:
  // One request and its reply, whatever its status; the reply's headers with it.
  Result<Response> exchange(const std::string& method, const std::string& path, const std::string& body,
                            const Headers& headers, double timeout_s) {
    http::request<http::string_body> req(http::string_to_verb(method), path, 11);
    req.set(http::field::host, target_.kind == Target::Kind::kTcp ? target_.text : std::string("probing"));
    req.set(http::field::user_agent, "probing-cli");
    for (const auto& [name, value] : headers) req.set(name, value);
    if (!options_.token.empty()) req.set(http::field::authorization, "Bearer " + options_.token);
    if (options_.read_only) req.set("X-Probing-Right", "read");
    if (!body.empty()) req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.keep_alive(true);
    req.prepare_payload();
    beast::get_lowest_layer(stream_).expires_after(seconds(timeout_s));
    beast::error_code ec = run([&](auto handler) { http::async_write(stream_, req, std::move(handler)); });
    if (target_stopped_) return stopped_status(target_.pid);
    if (ec) return io_error("sending the request", ec, timeout_s);
    http::response_parser<http::string_body> parser;
    parser.body_limit(1ULL << 30);
    ec = run([&](auto handler) { http::async_read(stream_, buffer_, parser, std::move(handler)); });
    if (target_stopped_) return stopped_status(target_.pid);
    if (ec) return io_error("reading the reply", ec, timeout_s);
    Response r;
    r.status = static_cast<int>(parser.get().result_int());
    for (const auto& field : parser.get()) {
      r.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    r.body = std::move(parser.get().body());
    return r;
  }

  Stream make_stream() {
    if constexpr (kIsTls<Stream>) {
      return Stream(ioc_, *tls_);
    } else {
      return Stream(ioc_);
    }
  }

  Status refused_token(const Response& r) const {
    std::string message = r.error_message();
    std::string text = target_name(target_) +
                       (options_.token.empty() ? " asks for a token: " : " refused the token: ") + message;
    if (message.find("--token") == std::string::npos) text += " (give --token or PROBING_TOKEN)";
    return {Code::kPermissionDenied, text};
  }

  Status io_error(const std::string& what, const beast::error_code& ec, double timeout_s) {
    const bool plain_tcp = target_.kind == Target::Kind::kTcp && !kIsTls<Stream>;
    if (ec == beast::error::timeout) {
      return {Code::kTimeout,
              target_name(target_) + " did not answer within " + format_seconds(timeout_s) + " s"};
    }
    if (is_closed(ec)) {
      std::string hint;
      if (target_.kind == Target::Kind::kPid && process_exited(target_.pid)) {
        hint = ": the process exited";
      } else if (plain_tcp) {
        hint = " (if the agent serves TLS, give --tls)";
      }
      return {Code::kUnavailable, target_name(target_) + " closed the connection while " + what + hint};
    }
    if (is_parse_error(ec)) {
      return {Code::kUnavailable, "the reply from " + target_name(target_) + " is not HTTP (" + ec.message() +
                                      ")" + (plain_tcp ? "; if the agent serves TLS, give --tls" : "")};
    }
    return {Code::kInternal, what + " to " + target_name(target_) + ": " + ec.message()};
  }

  ConnectOptions options_;
  bool target_stopped_ = false;  // the local process was stopped while a request waited
  asio::io_context ioc_{1};
  std::unique_ptr<ssl::context> tls_;  // TlsStream only; before stream_, which refers to it
  Stream stream_;
  beast::flat_buffer buffer_;
};

// A unix socket in the network namespace of `pid`, where its abstract names live. A process in a
// container with a network of its own binds @probing-PID there, out of reach of a socket made in
// ours: the socket is made on a thread that has joined that namespace (a socket stays in the
// namespace it was made in). Needs CAP_SYS_ADMIN for another namespace; -1 with errno on failure.
int unix_socket_for(pid_t pid) {
  struct stat mine {};
  struct stat theirs {};
  const std::string ns = "/proc/" + std::to_string(pid) + "/ns/net";
  if (pid <= 0 || ::stat("/proc/self/ns/net", &mine) != 0 || ::stat(ns.c_str(), &theirs) != 0 ||
      (mine.st_dev == theirs.st_dev && mine.st_ino == theirs.st_ino)) {
    return ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  }
  const int ns_fd = ::open(ns.c_str(), O_RDONLY | O_CLOEXEC);
  if (ns_fd < 0) return -1;
  int fd = -1;
  int err = 0;
  std::thread([&] {
    if (::setns(ns_fd, CLONE_NEWNET) != 0) {
      err = errno;
      return;
    }
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    err = errno;
  }).join();
  ::close(ns_fd);
  if (fd < 0) errno = err;
  return fd;
}

Result<std::unique_ptr<Client>> connect_unix(const Target& target, const std::string& path, double timeout_s,
                                             const ConnectOptions& options) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() + 1 > sizeof addr.sun_path)
    return Status(Code::kInvalidArgument, "socket path too long: " + path);
  socklen_t len;
  if (path[0] == '@') {
    std::memcpy(addr.sun_path + 1, path.data() + 1, path.size() - 1);
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  } else {
    std::memcpy(addr.sun_path, path.data(), path.size());
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  }
  // A stopped process (SIGSTOP, Ctrl-Z) would accept the connection in the kernel, but its agent
  // cannot answer until it runs again: say so now rather than after the request's timeout.
  if (std::optional<ProcStat> st =
          target.kind == Target::Kind::kPid ? read_proc_stat(target.pid) : std::nullopt;
      st && st->state() == 'T') {
    return stopped_status(target.pid);
  }
  const bool abstract_of_pid = target.kind == Target::Kind::kPid && path[0] == '@';
  int fd = abstract_of_pid ? unix_socket_for(target.pid) : ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 && abstract_of_pid && (errno == EPERM || errno == EACCES)) {
    return errno_status(
        "process " + std::to_string(target.pid) +
        " is in another network namespace, where its agent's socket is; joining it needs root "
        "(CAP_SYS_ADMIN), or run the CLI there: nsenter -t " +
        std::to_string(target.pid) + " -n probing ...");
  }
  if (fd < 0) return errno_status("socket(AF_UNIX)");
  timeval tv{static_cast<time_t>(timeout_s),
             static_cast<suseconds_t>((timeout_s - static_cast<time_t>(timeout_s)) * 1e6)};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    int err = errno;
    ::close(fd);
    if (err == ECONNREFUSED || err == ENOENT) {
      // No waiting: a refused connect is also what inject's wait for the agent sees, and
      // PF_EXITING is set from the start of exit().
      if (target.kind == Target::Kind::kPid && process_exited(target.pid, 0)) {
        return Status(Code::kUnavailable, "process " + std::to_string(target.pid) + " has exited");
      }
      if (target.kind == Target::Kind::kPid) {
        return Status(Code::kUnavailable, "process " + std::to_string(target.pid) +
                                              " has no probing agent; attach one with: probing " +
                                              std::to_string(target.pid) + " inject");
      }
      return Status(Code::kUnavailable, "nothing listens on " + path);
    }
    return errno_status("connecting to " + path, err);
  }
  if (target.kind == Target::Kind::kPid) {
    // An abstract name can be bound by anyone first: talk only to the process the name is for,
    // before a byte (code, a token) is sent.
    ucred cred{};
    socklen_t cred_len = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) != 0 || cred.pid != target.pid) {
      ::close(fd);
      return Status(Code::kPermissionDenied, path + " is held by process " + std::to_string(cred.pid) +
                                                 " (uid " + std::to_string(cred.uid) + "), not by process " +
                                                 std::to_string(target.pid) + ": nothing was sent to it");
    }
  }
  try {
    auto client = std::make_unique<StreamClient<UnixStream>>(target, options, nullptr);
    client->adopt(fd);
    return std::unique_ptr<Client>(std::move(client));
  } catch (const std::exception& e) {
    ::close(fd);  // adopt() failed: the fd is still ours
    return Status(Code::kInternal, std::string("connecting: ") + e.what());
  }
}

// getaddrinfo on a thread of its own, so that a slow DNS server cannot hold the caller past
// `deadline`: the thread is left to finish alone (it owns what it writes) when it is late.
Result<std::vector<Tcp::endpoint>> resolve(const Target& target, Clock::time_point deadline,
                                           double timeout_s) {
  beast::error_code ec;
  asio::ip::address address = asio::ip::make_address(target.host, ec);
  if (!ec) return std::vector<Tcp::endpoint>{Tcp::endpoint(address, static_cast<uint16_t>(target.port))};
  struct Lookup {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    int rc = 0;
    std::vector<Tcp::endpoint> endpoints;
  };
  auto lookup = std::make_shared<Lookup>();
  try {
    std::thread([lookup, host = target.host, port = std::to_string(target.port)]() noexcept {
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      addrinfo* found = nullptr;
      int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
      std::vector<Tcp::endpoint> endpoints;
      for (addrinfo* ai = found; rc == 0 && ai != nullptr; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(sockaddr_in6)) continue;
        Tcp::endpoint ep;
        std::memcpy(ep.data(), ai->ai_addr, ai->ai_addrlen);
        endpoints.push_back(ep);
      }
      if (found != nullptr) ::freeaddrinfo(found);
      std::lock_guard<std::mutex> lock(lookup->mu);
      lookup->rc = rc;
      lookup->endpoints = std::move(endpoints);
      lookup->done = true;
      lookup->cv.notify_all();
    }).detach();
  } catch (const std::exception& e) {
    return Status(Code::kInternal, std::string("resolving ") + target.host + ": " + e.what());
  }
  std::unique_lock<std::mutex> lock(lookup->mu);
  if (!lookup->cv.wait_until(lock, deadline, [&] { return lookup->done; })) {
    return Status(Code::kTimeout, "resolving host '" + target.host + "' (of " + target.text +
                                      ") took more than " + format_seconds(timeout_s) + " s (DNS)");
  }
  if (lookup->rc != 0) {
    return Status(Code::kNotFound, "cannot resolve host '" + target.host + "' (of " + target.text +
                                       "): " + ::gai_strerror(lookup->rc));
  }
  if (lookup->endpoints.empty()) {
    return Status(Code::kNotFound, "host '" + target.host + "' (of " + target.text + ") has no address");
  }
  return std::move(lookup->endpoints);
}

Result<std::unique_ptr<ssl::context>> make_tls_context(const ConnectOptions& options) {
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
  if (SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION) != 1) {
    return Status(Code::kInternal, "setting the TLS minimum version");
  }
  beast::error_code ec;
  if (options.insecure) {
    ctx->set_verify_mode(ssl::verify_none, ec);
  } else {
    ctx->set_verify_mode(ssl::verify_peer, ec);
    if (!ec) {
      if (!options.cacert.empty()) {
        ctx->load_verify_file(options.cacert, ec);
        if (ec) {
          return Status(
              Code::kInvalidArgument,
              "--cacert " + options.cacert + ": not a readable PEM certificate file (" + ec.message() + ")");
        }
      } else {
        ctx->set_default_verify_paths(ec);
      }
    }
  }
  if (ec) return Status(Code::kInternal, "setting up TLS: " + ec.message());
  return ctx;
}

template <class Stream>
Result<std::unique_ptr<Client>> connect_tcp(const Target& target, double timeout_s,
                                            const ConnectOptions& options) {
  Clock::time_point deadline = Clock::now() + seconds(timeout_s);
  Result<std::vector<Tcp::endpoint>> endpoints = resolve(target, deadline, timeout_s);
  if (!endpoints.is_ok()) return endpoints.status();
  try {
    std::unique_ptr<ssl::context> tls;
    if constexpr (kIsTls<Stream>) {
      Result<std::unique_ptr<ssl::context>> made = make_tls_context(options);
      if (!made.is_ok()) return made.status();
      tls = std::move(*made);
    }
    auto client = std::make_unique<StreamClient<Stream>>(target, options, std::move(tls));
    PROBING_RETURN_IF_ERROR(client->connect_tcp(*endpoints, deadline, timeout_s));
    if constexpr (kIsTls<Stream>) PROBING_RETURN_IF_ERROR(client->handshake(deadline, timeout_s));
    return std::unique_ptr<Client>(std::move(client));
  } catch (const std::exception& e) {
    return Status(Code::kInternal, "connecting to " + target.text + ": " + e.what());
  }
}

}  // namespace

Result<Target> parse_target(const std::string& text) {
  Target t;
  t.text = text;
  if (all_digits(text)) {
    t.kind = Target::Kind::kPid;
    long long pid = std::stoll(text.substr(0, 12));
    if (pid <= 0 || pid > 0x3fffffff) return Status(Code::kInvalidArgument, "not a valid pid: " + text);
    t.pid = static_cast<pid_t>(pid);
    return t;
  }
  if (text.rfind("unix:", 0) == 0) {
    t.kind = Target::Kind::kUnix;
    t.unix_path = text.substr(5);
    if (t.unix_path.empty() || t.unix_path == "@")
      return Status(Code::kInvalidArgument, "empty socket path in " + text);
    return t;
  }
  size_t colon = text.rfind(':');
  if (colon != std::string::npos && colon > 0 && all_digits(text.substr(colon + 1)) &&
      colon + 1 < text.size()) {
    t.kind = Target::Kind::kTcp;
    t.host = text.substr(0, colon);
    if (t.host.size() > 2 && t.host.front() == '[' && t.host.back() == ']')
      t.host = t.host.substr(1, t.host.size() - 2);
    t.port = std::stoi(text.substr(colon + 1, 6));
    if (t.port <= 0 || t.port > 65535) return Status(Code::kInvalidArgument, "not a valid port in " + text);
    return t;
  }
  return Status(Code::kInvalidArgument, "target '" + text + "' is neither a pid, host:port, nor unix:PATH");
}

std::string Response::error_type() const {
  nlohmann::json j = json();
  if (j.is_object() && j.contains("error") && j["error"].is_object()) return j["error"].value("type", "");
  return "";
}

std::string Response::error_message() const {
  nlohmann::json j = json();
  if (j.is_object() && j.contains("error") && j["error"].is_object()) return j["error"].value("message", "");
  return body.empty() ? "HTTP " + std::to_string(status) : body.substr(0, 500);
}

Result<std::unique_ptr<Client>> Client::connect(const Target& target, double timeout_s,
                                                const ConnectOptions& options) {
  if (target.kind != Target::Kind::kTcp && options.use_tls()) {
    return Status(Code::kInvalidArgument, "TLS (--tls, --cacert, --insecure) is for host:port targets; " +
                                              target_name(target) + " is reached over its local socket");
  }
  switch (target.kind) {
    case Target::Kind::kPid: {
      struct stat st {};
      std::string proc = "/proc/" + std::to_string(target.pid);
      if (::stat(proc.c_str(), &st) != 0) {
        return Status(Code::kNotFound, "no process " + std::to_string(target.pid));
      }
      // The agent names its socket by the pid it sees: in a container, its own namespace's.
      return connect_unix(target, "@probing-" + std::to_string(pid_in_own_namespace(target.pid)), timeout_s,
                          options);
    }
    case Target::Kind::kUnix:
      return connect_unix(target, target.unix_path, timeout_s, options);
    case Target::Kind::kTcp:
      return options.use_tls() ? connect_tcp<TlsStream>(target, timeout_s, options)
                               : connect_tcp<TcpStream>(target, timeout_s, options);
  }
  return Status(Code::kInternal, "unknown target kind");
}

bool process_exited(pid_t pid, double wait_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(wait_s);
  for (;;) {
    if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
    std::optional<ProcStat> st = read_proc_stat(pid);
    if (!st || st->state() == 'Z' || st->state() == 'X') return true;
    // PF_EXITING (0x4) is set from the start of exit(), before the process closes its sockets
    // and long before it is a zombie.
    if ((st->flags() & 0x4) != 0) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

namespace {

// The N of every listening @probing-N socket in a /proc/PID/net/unix.
std::set<pid_t> agent_socket_names(const std::string& net_unix) {
  std::set<pid_t> names;
  std::istringstream in(read_proc_file(net_unix));
  const std::string prefix = "@probing-";
  for (std::string line; std::getline(in, line);) {
    size_t at = line.find(prefix);
    if (at == std::string::npos) continue;
    std::string rest = line.substr(at + prefix.size());
    if (all_digits(rest)) names.insert(static_cast<pid_t>(std::stol(rest.substr(0, 10))));
  }
  return names;
}

}  // namespace

std::vector<pid_t> list_local_agents() {
  // Our network namespace: /proc/net/unix names every agent in it by its pid.
  std::set<pid_t> pids = agent_socket_names("/proc/net/unix");
  // Containers: each other network namespace has abstract names of its own, read through any
  // process in it (/proc/PID/net/unix, which needs the right to inspect that process). There
  // @probing-N is the process whose own pid (NSpid) is N.
  struct stat mine {};
  if (::stat("/proc/self/ns/net", &mine) != 0) return {pids.begin(), pids.end()};
  std::map<std::pair<dev_t, ino_t>, std::vector<pid_t>> others;
  if (DIR* proc = ::opendir("/proc")) {
    while (dirent* e = ::readdir(proc)) {
      if (!all_digits(e->d_name)) continue;
      struct stat ns {};
      std::string path = std::string("/proc/") + e->d_name + "/ns/net";
      if (::stat(path.c_str(), &ns) != 0 || (ns.st_dev == mine.st_dev && ns.st_ino == mine.st_ino)) continue;
      others[{ns.st_dev, ns.st_ino}].push_back(static_cast<pid_t>(std::stol(e->d_name)));
    }
    ::closedir(proc);
  }
  for (const auto& [ns, members] : others) {
    std::set<pid_t> names = agent_socket_names("/proc/" + std::to_string(members.front()) + "/net/unix");
    if (names.empty()) continue;
    for (pid_t pid : members) {
      if (names.count(pid_in_own_namespace(pid)) != 0) pids.insert(pid);
    }
  }
  return {pids.begin(), pids.end()};
}

}  // namespace probing::client
