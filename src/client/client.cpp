// The only translation unit of the client that includes Boost.Beast.
#include <utility>  // before Asio: Boost 1.74 with GCC 12 in C++20 needs it

#include "client/client.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>

namespace probing::client {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Local = asio::local::stream_protocol;

namespace {

std::chrono::steady_clock::duration seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

bool all_digits(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

std::string target_name(const Target& t) {
  return t.kind == Target::Kind::kPid ? "process " + std::to_string(t.pid) : t.text;
}

class LocalClient final : public Client {
 public:
  // Takes ownership of a connected socket. Throws on failure (caught by the caller).
  LocalClient(Target t, int fd) : Client(std::move(t)), stream_(Local::socket(ioc_, Local(), fd)) {}

  Result<Response> request(const std::string& method, const std::string& path, const std::string& body,
                           double timeout_s) override {
    http::request<http::string_body> req(http::string_to_verb(method), path, 11);
    req.set(http::field::host, "probing");
    req.set(http::field::user_agent, "probing-cli");
    if (!body.empty()) req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.keep_alive(true);
    req.prepare_payload();
    beast::error_code ec;
    stream_.expires_after(seconds(timeout_s));
    http::write(stream_, req, ec);
    if (ec) return io_error("sending the request", ec, timeout_s);
    http::response_parser<http::string_body> parser;
    parser.body_limit(1ULL << 30);
    http::read(stream_, buffer_, parser, ec);
    if (ec) return io_error("reading the reply", ec, timeout_s);
    Response r;
    r.status = static_cast<int>(parser.get().result_int());
    r.body = std::move(parser.get().body());
    return r;
  }

 private:
  Status io_error(const std::string& what, const beast::error_code& ec, double timeout_s) {
    if (ec == beast::error::timeout) {
      char secs[32];
      std::snprintf(secs, sizeof secs, "%g", timeout_s);
      return {Code::kTimeout, target_name(target_) + " did not answer within " + secs + " s"};
    }
    if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
        ec == asio::error::broken_pipe || ec == http::error::partial_message) {
      std::string hint;
      if (target_.kind == Target::Kind::kPid && ::kill(target_.pid, 0) != 0 && errno == ESRCH) {
        hint = ": the process exited";
      }
      return {Code::kUnavailable, target_name(target_) + " closed the connection while " + what + hint};
    }
    return {Code::kInternal, what + " to " + target_name(target_) + ": " + ec.message()};
  }

  asio::io_context ioc_{1};
  beast::basic_stream<Local> stream_;
  beast::flat_buffer buffer_;
};

Result<std::unique_ptr<Client>> connect_unix(const Target& target, const std::string& path, double timeout_s) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() + 1 > sizeof addr.sun_path) return Status(Code::kInvalidArgument, "socket path too long: " + path);
  socklen_t len;
  if (path[0] == '@') {
    std::memcpy(addr.sun_path + 1, path.data() + 1, path.size() - 1);
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  } else {
    std::memcpy(addr.sun_path, path.data(), path.size());
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno_status("socket(AF_UNIX)");
  timeval tv{static_cast<time_t>(timeout_s), static_cast<suseconds_t>((timeout_s - static_cast<time_t>(timeout_s)) * 1e6)};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    int err = errno;
    ::close(fd);
    if (err == ECONNREFUSED || err == ENOENT) {
      if (target.kind == Target::Kind::kPid) {
        return Status(Code::kUnavailable, "process " + std::to_string(target.pid) +
                                              " has no probing agent; attach one with: probing " +
                                              std::to_string(target.pid) + " inject");
      }
      return Status(Code::kUnavailable, "nothing listens on " + path);
    }
    return errno_status("connecting to " + path, err);
  }
  try {
    return std::unique_ptr<Client>(new LocalClient(target, fd));
  } catch (const std::exception& e) {
    return Status(Code::kInternal, std::string("connecting: ") + e.what());
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
    if (t.unix_path.empty() || t.unix_path == "@") return Status(Code::kInvalidArgument, "empty socket path in " + text);
    return t;
  }
  size_t colon = text.rfind(':');
  if (colon != std::string::npos && colon > 0 && all_digits(text.substr(colon + 1)) && colon + 1 < text.size()) {
    t.kind = Target::Kind::kTcp;
    t.host = text.substr(0, colon);
    if (t.host.size() > 2 && t.host.front() == '[' && t.host.back() == ']') t.host = t.host.substr(1, t.host.size() - 2);
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

Result<std::unique_ptr<Client>> Client::connect(const Target& target, double timeout_s) {
  switch (target.kind) {
    case Target::Kind::kPid: {
      struct stat st{};
      std::string proc = "/proc/" + std::to_string(target.pid);
      if (::stat(proc.c_str(), &st) != 0) {
        return Status(Code::kNotFound, "no process " + std::to_string(target.pid));
      }
      return connect_unix(target, "@probing-" + std::to_string(target.pid), timeout_s);
    }
    case Target::Kind::kUnix: return connect_unix(target, target.unix_path, timeout_s);
    case Target::Kind::kTcp: break;
  }
  return Status(Code::kUnsupported,
                "remote targets (host:port) need the agent's TCP listener, which this version of probing "
                "does not have yet; use a local pid");
}

std::vector<pid_t> list_local_agents() {
  // /proc/net/unix lists listening sockets; abstract names are shown with a leading '@'.
  std::ifstream in("/proc/net/unix");
  std::set<pid_t> pids;
  std::string line;
  const std::string prefix = "@probing-";
  while (std::getline(in, line)) {
    size_t at = line.find(prefix);
    if (at == std::string::npos) continue;
    std::string rest = line.substr(at + prefix.size());
    if (!all_digits(rest)) continue;
    pids.insert(static_cast<pid_t>(std::stol(rest.substr(0, 10))));
  }
  return {pids.begin(), pids.end()};
}

}  // namespace probing::client
