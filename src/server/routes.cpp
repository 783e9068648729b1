#include "server/routes.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <sstream>
#include <string_view>

#include "client/client.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/settings.h"
#include "profile/sampler.h"
#include "python/eval.h"
#include "python/frames.h"
#include "python/runtime.h"
#include "server/audit.h"
#include "server/cluster.h"
#include "sql/engine.h"

namespace probing::server {
namespace {

std::vector<std::string> read_cmdline() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  std::string arg;
  while (std::getline(in, arg, '\0')) args.push_back(arg);
  return args;
}

std::string read_exe() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

bool interactive_flag(const nlohmann::json& body) {
  return body.is_object() && body.contains("interactive") && body["interactive"].is_boolean() &&
         body["interactive"].get<bool>();
}

// Whether the request is a REPL's /eval, whose block is sent again with each line until whole.
bool interactive_eval(const HttpRequest& request) {
  return interactive_flag(nlohmann::json::parse(request.body, nullptr, /*allow_exceptions=*/false));
}

}  // namespace

HttpResponse handle_health(const HttpRequest&, const AgentInfo& info, Right right) {
  Result<python::PythonRuntime*> runtime = python::PythonRuntime::get();
  std::string version = python::PythonRuntime::version_text();
  nlohmann::json j = {
      {"status", "ok"},
      {"pid", ::getpid()},
      {"agent_version", info.version},
      {"socket", info.socket},
      {"executable", read_exe()},
      {"cmdline", read_cmdline()},
      {"python", version.empty() ? nlohmann::json(nullptr) : nlohmann::json(version)},
      {"python_status", runtime.is_ok() ? std::string("ready") : runtime.status().message()},
      {"started_at", info.started_at},
      {"uptime_s", unix_now_s() - info.started_at},
      {"remote", info.remote_address.empty() ? nlohmann::json(nullptr) : nlohmann::json(info.remote_address)},
      {"subprocesses", info.subprocesses ? info.subprocesses() : std::string("off")},
      {"sampler", profile::sampler_status()},
      {"right", right_name(right)},
  };
  return json_response(j);
}

HttpResponse handle_eval(const HttpRequest& request) {
  nlohmann::json body = nlohmann::json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object() || !body.contains("code") || !body["code"].is_string()) {
    return error_response(400, "BadRequest", R"(expected a JSON body {"code": "...", "timeout": seconds})");
  }
  python::EvalOptions options;
  options.timeout_s = settings().get_double("eval.timeout_s");
  options.gil_timeout_s = settings().get_double("gil.timeout_s");
  options.max_output_bytes = settings().get_int("eval.max_output_bytes");
  if (body.contains("timeout") && !body["timeout"].is_null()) {
    if (!body["timeout"].is_number() || body["timeout"].get<double>() <= 0) {
      return error_response(400, "BadRequest", "timeout must be a positive number of seconds");
    }
    options.timeout_s = body["timeout"].get<double>();
  }
  if (body.contains("id") && body["id"].is_string())
    options.id = body["id"].get<std::string>();  // for /interrupt
  options.interactive = interactive_flag(body);
  options.gil_timeout_s = std::min(options.gil_timeout_s, options.timeout_s);
  Result<python::PythonRuntime*> runtime = python::PythonRuntime::get();
  if (!runtime.is_ok()) return error_response(runtime.status());
  std::string code = body["code"].get<std::string>();
  if (options.interactive) {
    // Unfinished: nothing runs, and nothing is audited until the block is whole.
    Result<bool> unfinished = python::is_unfinished_block(**runtime, code, options.gil_timeout_s);
    if (!unfinished.is_ok()) return error_response(unfinished.status());
    if (*unfinished) {
      return json_response({{"incomplete", true},
                            {"output", ""},
                            {"output_truncated", false},
                            {"value", nullptr},
                            {"exception", nullptr},
                            {"timed_out", false}});
    }
    audit(request, Right::kFull, "eval");
  }
  log_info("eval from " + request.peer.address + ": " + code.substr(0, code.find('\n')).substr(0, 200));
  Result<nlohmann::json> result = python::run_eval(**runtime, code, options);
  if (!result.is_ok()) return error_response(result.status());
  nlohmann::json& r = result.value();
  if (r.value("timed_out", false)) {
    char secs[32];
    std::snprintf(secs, sizeof secs, "%.3g", options.timeout_s);
    nlohmann::json j = {{"error",
                         {{"type", "Timeout"},
                          {"message", std::string("the code ran past its timeout of ") + secs +
                                          " s and was interrupted; the target keeps running"}}},
                        {"output", r.value("output", "")}};
    return json_response(j, 504);
  }
  return json_response(r);
}

namespace {

// A Host header naming an address or localhost (with a port or not), as every client of a port
// does. A name would mean a browser sent here by DNS rebinding.
bool plain_host(const std::string& host) {
  if (host.empty()) return true;
  std::string h = host;
  if (h.front() == '[') {
    h = h.substr(1, h.find(']') == std::string::npos ? std::string::npos : h.find(']') - 1);
  } else if (std::count(h.begin(), h.end(), ':') == 1) {
    h = h.substr(0, h.find(':'));
  }
  return h == "localhost" || parse_address(h).has_value();
}

// A browser names the page behind each request it sends (Origin): only this agent's own page, on
// the scheme and host:port the browser reached it by, may call the API.
bool same_origin(const HttpRequest& request) {
  if (request.host.empty()) return false;
  return request.origin == (request.peer.tls ? "https://" : "http://") + request.host;
}

}  // namespace

Right request_right(const HttpRequest& request, const AgentInfo& info, HttpResponse* refusal) {
  if (request.peer.local) return Right::kFull;
  if (!request.origin.empty() && !same_origin(request)) {
    *refusal = error_response(403, "PermissionDenied", "requests from other web pages are refused");
    return Right::kNone;
  }
  const RemoteOptions& remote = info.remote;
  if (!remote.token.empty() || !remote.read_token.empty()) {
    Right right = right_of_token(remote, request.authorization);
    if (right == Right::kNone) {
      *refusal = error_response(
          401, "Unauthorized",
          request.authorization.empty()
              ? "this agent needs a token: Authorization: Bearer TOKEN (probing --token, PROBING_TOKEN)"
              : "the token is not valid for this agent");
      refusal->headers.emplace_back("WWW-Authenticate", "Bearer");
    }
    return right;
  }
  // No token: the listener is on loopback, and serves the users the unix socket would — but not a
  // web page reaching it through the user's browser by DNS rebinding, whose Host is the page's
  // name (a cross-site request was refused above by its Origin). Its own page may: the user's
  // browser runs as the user.
  if (!plain_host(request.host)) {
    *refusal = error_response(403, "PermissionDenied", "requests from web pages are refused");
    return Right::kNone;
  }
  if (request.peer.uid_known && peer_allowed(request.peer.uid, ::geteuid())) return Right::kFull;
  *refusal =
      error_response(403, "PermissionDenied",
                     "this agent's TCP port has no token and serves uid " + std::to_string(::geteuid()) +
                         " and root only (start the target with PROBING_TOKEN for other clients)");
  return Right::kNone;
}

HttpServer::Handler make_router(const AgentInfo& info) {
  struct Route {
    const char* method;  // "*": the handler checks the method itself
    const char* path;    // ending in '/': the path and everything under it
    Right right;         // what a client needs (over TCP); some routes need more for some bodies
    std::function<HttpResponse(const HttpRequest&, Right)> handle;  // Right: what was granted
  };
  // Most handlers need not know the right: the router checked it.
  auto plain = [](HttpResponse (*fn)(const HttpRequest&)) {
    return [fn](const HttpRequest& r, Right) { return fn(r); };
  };
  constexpr Right kRead = Right::kRead, kFull = Right::kFull;
  // One line per route of the API (DESIGN.md §4).
  std::vector<Route> routes{
      {"GET", "/health", kRead,
       [&info](const HttpRequest& r, Right right) { return handle_health(r, info, right); }},
      {"POST", "/eval", kFull, plain(handle_eval)},
      {"GET", "/backtrace", kRead, plain(handle_backtrace)},  // routes_backtrace.cpp
      {"POST", "/complete", kFull, plain(handle_complete)},   // routes_repl.cpp: completion evaluates lookups
      {"POST", "/interrupt", kFull, plain(handle_interrupt)},  // routes_repl.cpp
      {"POST", "/query", kRead, plain(handle_query)},          // routes_query.cpp; SET needs kFull
      {"*", "/config", kRead, plain(handle_config)},           // routes_query.cpp; PUT needs kFull
      {"*", "/config/", kRead, plain(handle_config)},
      {"*", "/profile", kRead, plain(handle_profile)},   // routes_profile.cpp: bounded in rate and time
      {"POST", "/memory", kFull, plain(handle_memory)},  // routes_memory.cpp: a new base for memory growth
      {"*", "/probes", kRead, plain(handle_probes)},     // routes_probes.cpp; POST (add, remove) needs kFull
      {"GET", "/metrics", kRead,
       [&info](const HttpRequest& r, Right) { return handle_metrics(r, info); }},  // Prometheus
      {"GET", "/cluster", kRead,
       [&info](const HttpRequest& r, Right) { return handle_cluster(r, info); }},  // cluster.cpp
      // A member's address is where clients send their token: only a full token may register one.
      {"POST", "/cluster/register", kFull, plain(handle_cluster_register)},
  };
  return [routes = std::move(routes), &info](const HttpRequest& request) -> HttpResponse {
    // The web page's files hold no data: served to whoever may connect (routes_web.cpp).
    if (client::is_web_page_path(request.path)) {
      return handle_web(request);
    }
    for (const Route& route : routes) {
      std::string_view path = route.path;
      bool under = path.back() == '/' && request.path.size() > path.size() && request.path.starts_with(path);
      if (request.path != path && !under) continue;
      HttpResponse refusal;
      Right right = request_right(request, info, &refusal);
      if (right == Right::kNone) return refusal;
      if (request.read_only) right = std::min(right, Right::kRead);  // `probing --read-only` asks it
      if (route.method[0] != '*' && request.method != route.method) {
        return error_response(405, "BadRequest", std::string("use ") + route.method + " " + route.path);
      }
      Right needed = route.right;
      std::string action;  // audited when not empty
      if (request.path == "/eval" || request.path == "/complete" || request.path == "/interrupt") {
        action = request.path.substr(1);  // completion runs attribute lookups: audited like code
        // A REPL's block is sent again with each line; handle_eval audits it once, when whole.
        if (request.path == "/eval" && interactive_eval(request)) action.clear();
      } else if (request.path == "/memory") {
        action = "memory";
      } else if (request.path == "/probes" && request.method == "POST") {
        needed = kFull;  // a probe runs the caller's expressions in the program
        action = "probe";
      } else if (request.method == "PUT") {
        needed = kFull;
        action = "config";
      } else if (request.path == "/query") {
        nlohmann::json body = nlohmann::json::parse(request.body, nullptr, /*allow_exceptions=*/false);
        if (body.is_object() && body.contains("sql") && body["sql"].is_string() &&
            sql::is_set_statement(body["sql"].get<std::string>())) {
          needed = kFull;
          action = "set";
        }
      }
      if (right < needed) {
        const std::string what = action.empty() ? request.path : action;
        return error_response(
            403, "PermissionDenied",
            request.read_only
                ? "this client asked for the read right only (--read-only): " + what + " needs the full right"
                : "this token may only read (health, backtrace, query, config, profile); " + what +
                      " needs the full token");
      }
      if (!action.empty()) audit(request, right, action);
      python::ScopedUserReprs reprs(right == kFull);  // the read right runs no __repr__ of the target's
      return route.handle(request, right);
    }
    return error_response(404, "NotFound", "no route " + request.method + " " + request.path);
  };
}

}  // namespace probing::server
