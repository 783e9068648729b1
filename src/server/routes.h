// The HTTP API of the agent (DESIGN.md §4): one handler per route, dispatched by method and path.
#pragma once

#include <functional>
#include <string>

#include "server/auth.h"
#include "server/http.h"
#include "server/http_server.h"

namespace probing::server {

struct AgentInfo {
  std::string version;         // probing's version
  std::string socket;          // "@probing-1234"
  double started_at = 0;       // unix time the agent started serving
  std::string python_status;   // "ready", or why Python is not available
  RemoteOptions remote;        // the TCP listener's tokens and networks (when enabled)
  std::string remote_address;  // "127.0.0.1:8080" when TCP listens, else ""
  // Whether forked children get agents: "off", "starting" (the hook is not in yet), "on".
  std::function<std::string()> subprocesses;
};

// The right a request has: everything over the unix socket (its uid was checked); over TCP, what
// its token gives, or — when the agent has no token (a loopback listener) — everything for a
// client of this user or root, found in /proc/net. kNone with the reply to send otherwise.
Right request_right(const HttpRequest& request, const AgentInfo& info, HttpResponse* refusal);

// Handler for the whole API. `info` must outlive the server (it does: both live forever).
HttpServer::Handler make_router(const AgentInfo& info);

// The routes, exposed for tests.
// `right`: what the client was granted, which the web page shows (and hides Eval by).
HttpResponse handle_health(const HttpRequest& request, const AgentInfo& info, Right right);
HttpResponse handle_eval(const HttpRequest& request);
HttpResponse handle_backtrace(const HttpRequest& request);  // routes_backtrace.cpp
HttpResponse handle_complete(const HttpRequest& request);   // routes_repl.cpp
HttpResponse handle_interrupt(const HttpRequest& request);  // routes_repl.cpp
HttpResponse handle_query(const HttpRequest& request);      // routes_query.cpp
HttpResponse handle_config(const HttpRequest& request);     // routes_query.cpp: /config, /config/KEY
HttpResponse handle_profile(const HttpRequest& request);    // routes_profile.cpp: GET and POST /profile
HttpResponse handle_metrics(const HttpRequest& request, const AgentInfo& info);  // routes_metrics.cpp
HttpResponse handle_memory(const HttpRequest& request);                          // routes_memory.cpp
HttpResponse handle_probes(const HttpRequest& request);                          // routes_probes.cpp
HttpResponse handle_web(const HttpRequest& request);  // routes_web.cpp: GET / and /assets/...

}  // namespace probing::server
