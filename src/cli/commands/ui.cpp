// probing TARGET ui [--port N] [--read-only]: the web page for a target that a browser cannot
// reach by itself — a local pid, whose agent listens on its unix socket only.
//
// A small HTTP server, bound to 127.0.0.1, passes the page's requests on to the agent. Every local
// user can reach a loopback port, so the server has a secret of its own: the printed URL carries it
// in its fragment (never sent to a server), and the page sends it back as a header with each API
// request. The page's files themselves hold no data and are served without it. A request whose
// Host is not this server's own address (a browser sent here by DNS rebinding) or whose Origin is
// another page's is refused.
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <iostream>
#include <thread>
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "cli/common.h"
#include "client/client.h"
#include "core/random.h"

namespace probing::cli {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr int kMaxConnections = 32;       // a browser opens six per host
constexpr double kForwardTimeoutS = 660;  // an eval may run for its own timeout, up to 600 s
constexpr int kIdleTimeoutS = 120;        // an idle keep-alive connection is closed after this

struct UiServer {
  Context ctx;
  bool cluster = false;  // /ui/cluster/...: the job, asked here (`probing cluster ui`)
  std::string secret;
  std::vector<std::string> hosts;  // what the Host header may say: 127.0.0.1:PORT, localhost:PORT
  std::atomic<int> open{0};
};

using Request = http::request<http::string_body>;
using Reply = http::response<http::string_body>;

Reply error_reply(const Request& req, http::status status, const std::string& type,
                  const std::string& message) {
  Reply r(status, req.version());
  r.set(http::field::content_type, "application/json");
  r.set(http::field::cache_control, "no-store");
  r.body() = nlohmann::json{{"error", {{"type", type}, {"message", message}}}}.dump();
  return r;
}

// GET /ui/cluster/nodes, GET /ui/cluster/backtrace[?exact=1], POST /ui/cluster/query {"sql"}.
Reply cluster_reply(UiServer& ui, const Request& req, const std::string& what) {
  nlohmann::json params = nlohmann::json::object();
  if (req.method() == http::verb::post) {
    params = nlohmann::json::parse(req.body(), nullptr, /*allow_exceptions=*/false);
    if (!params.is_object())
      return error_reply(req, http::status::bad_request, "BadRequest", "expected a JSON object");
  }
  params["exact"] = std::string(req.target()).find("exact=1") != std::string::npos;
  Result<nlohmann::json> answer = cluster_for_page(ui.ctx, what, params);
  if (!answer.is_ok()) {
    const Code code = answer.status().code();
    return error_reply(req,
                       code == Code::kNotFound          ? http::status::not_found
                       : code == Code::kInvalidArgument ? http::status::bad_request
                                                        : http::status::bad_gateway,
                       code_name(code), answer.status().message());
  }
  Reply r(http::status::ok, req.version());
  r.set(http::field::content_type, "application/json");
  r.set(http::field::cache_control, "no-store");
  r.body() = answer->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return r;
}

Reply handle(UiServer& ui, const Request& req) {
  const std::string host(req[http::field::host]);
  if (std::find(ui.hosts.begin(), ui.hosts.end(), host) == ui.hosts.end()) {
    return error_reply(req, http::status::forbidden, "PermissionDenied",
                       "this server answers to " + ui.hosts.front() + " only");
  }
  const std::string target(req.target());
  const std::string path = target.substr(0, target.find('?'));
  client::Headers headers;
  if (client::is_web_page_path(path)) {
    if (req.method() != http::verb::get) {
      return error_reply(req, http::status::method_not_allowed, "BadRequest", "use GET " + path);
    }
    if (!req[http::field::accept_encoding].empty()) {
      headers.emplace_back("Accept-Encoding", std::string(req[http::field::accept_encoding]));
    }
  } else {
    const std::string origin(req[http::field::origin]);
    if (!origin.empty() && origin != "http://" + host) {
      return error_reply(req, http::status::forbidden, "PermissionDenied",
                         "requests from other web pages are refused");
    }
    if (!equal_secrets(std::string(req["X-Probing-Ui-Secret"]), ui.secret)) {
      return error_reply(req, http::status::unauthorized, "Unauthorized",
                         "this page's secret is missing or wrong: open the URL that `probing ui` printed");
    }
  }
  if (ui.cluster && path.starts_with("/ui/cluster/")) return cluster_reply(ui, req, path.substr(12));
  Result<std::unique_ptr<client::Client>> client = connect_target(ui.ctx);
  if (!client.is_ok()) {
    return error_reply(req, http::status::bad_gateway, "TargetGone", client.status().message());
  }
  Result<client::Response> reply =
      (*client)->forward(std::string(req.method_string()), target, req.body(), headers, kForwardTimeoutS);
  if (!reply.is_ok())
    return error_reply(req, http::status::bad_gateway, "TargetGone", reply.status().message());
  Reply r(static_cast<http::status>(reply->status), req.version());
  for (const auto& [name, value] : reply->headers) {
    http::field f = http::string_to_field(name);
    if (f == http::field::connection || f == http::field::keep_alive || f == http::field::content_length ||
        f == http::field::transfer_encoding) {
      continue;
    }
    r.set(name, value);
  }
  r.body() = std::move(reply->body);
  return r;
}

void serve(UiServer& ui, tcp::socket socket) {
  timeval idle{kIdleTimeoutS, 0};
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof idle);
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &idle, sizeof idle);
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(8 << 20);
    parser.header_limit(16 << 10);
    beast::error_code ec;
    http::read(socket, buffer, parser, ec);
    if (ec) break;
    const Request& req = parser.get();
    Reply reply = handle(ui, req);
    reply.keep_alive(req.keep_alive());
    reply.prepare_payload();
    http::write(socket, reply, ec);
    if (ec || !req.keep_alive()) break;
  }
  beast::error_code ignored;
  socket.shutdown(tcp::socket::shutdown_both, ignored);
  --ui.open;
}

}  // namespace

int serve_ui(const Context& ctx, int port, bool read_only, bool cluster) {
  if (port < 0 || port > 65535) return fail(Status(Code::kInvalidArgument, "--port must be 0-65535"));
  ::signal(SIGPIPE, SIG_IGN);  // a browser that closes a connection mid-reply ends that reply only
  static UiServer ui;          // outlives the connection threads, which are never joined
  ui.ctx = ctx;
  ui.cluster = cluster;
  ui.ctx.connect.read_only = ctx.connect.read_only || read_only;
  Result<std::string> secret = random_bytes(16);
  if (!secret.is_ok()) return fail(secret.status());
  ui.secret = to_hex(*secret);
  {
    Result<std::unique_ptr<client::Client>> client = connect_target(ui.ctx);
    if (!client.is_ok()) return fail(client.status());
    Result<nlohmann::json> health = agent_json(**client, "GET", "/health", "", 5, "");
    if (!health.is_ok()) return fail(health.status());
  }
  asio::io_context io;
  tcp::acceptor acceptor(io);
  beast::error_code ec;
  tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port));
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail("cannot listen on 127.0.0.1:" + std::to_string(port) + ": " + ec.message());
  port = acceptor.local_endpoint().port();
  ui.hosts = {"127.0.0.1:" + std::to_string(port), "localhost:" + std::to_string(port)};
  std::cout << "http://127.0.0.1:" << port << "/#s=" << ui.secret << std::endl;
  std::cerr << "probing: the page of " << (cluster ? "the job of " : "") << ctx.target
            << " is at the URL above" << (read_only ? " (read only)" : "")
            << "; it works from this machine only (ssh -L " << port << ":127.0.0.1:" << port
            << " to open it from another). Ctrl-C stops it." << std::endl;
  for (;;) {
    tcp::socket socket(io);
    acceptor.accept(socket, ec);
    if (ec) continue;
    if (ui.open.load() >= kMaxConnections) {
      Reply busy(http::status::service_unavailable, 11);
      busy.body() = R"({"error": {"type": "Busy", "message": "too many connections to this page's server"}})";
      busy.prepare_payload();
      http::write(socket, busy, ec);
      continue;
    }
    ++ui.open;
    std::thread(serve, std::ref(ui), std::move(socket)).detach();
  }
}

void add_ui_command(CLI::App& app, Context& ctx) {
  struct UiArgs {
    int port = 0;  // 0: any free port
    bool read_only = false;
  };
  auto args = std::make_shared<UiArgs>();
  CLI::App* cmd = app.add_subcommand(
      "ui",
      "Serve the web page of the target on 127.0.0.1 and print its URL (for a local pid, whose agent has no "
      "TCP port; an agent started with PROBING_PORT serves the page itself at http://HOST:PORT/).");
  cmd->add_option("--port", args->port, "the port to listen on (default: any free one)");
  cmd->add_flag("--read-only", args->read_only, "the page may read only: no Eval page, no SET");
  cmd->footer(
      "Prints the URL on standard output (http://127.0.0.1:PORT/#s=SECRET: the secret is the page's key) "
      "and\n"
      "serves until Ctrl-C. Examples:\n"
      "  probing 4242 ui\n"
      "  probing 4242 ui --port 8080 --read-only     # then, from a laptop: ssh -L 8080:127.0.0.1:8080 HOST\n"
      "  probing cluster -t 4242 ui                  # the job's page: every rank\n"
      "docs/web.md has the pages and how the page keeps the token safe.");
  on_run(cmd, [&ctx, args] { return serve_ui(ctx, args->port, args->read_only, /*cluster=*/false); });
}

}  // namespace probing::cli
