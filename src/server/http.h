// Requests and responses as the routes see them: plain data, no Beast, so routes compile fast
// and can be tested without sockets.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace probing::server {

struct Peer {
  bool local = true;       // unix socket (uid checked) or TCP
  bool uid_known = false;  // the uid is known: unix socket, or a loopback TCP client found in /proc/net
  uid_t uid = 0;
  pid_t pid = 0;
  std::string address;  // "uid 1000 pid 42" or "10.0.0.3:51234"
  bool tls = false;
};

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // without the query string
  std::map<std::string, std::string> query;
  std::string body;
  std::string authorization;  // the Authorization header, or ""
  std::string origin;         // the Origin header (sent by browsers), or ""
  std::string host;           // the Host header, or ""
  bool read_only = false;     // "X-Probing-Right: read": the client asks for the read right only
  bool accepts_gzip = false;  // Accept-Encoding names gzip
  Peer peer;
};

struct HttpResponse {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // extra ones (WWW-Authenticate)
};

// {"error": {"type", "message"}} with a status fitting the code.
HttpResponse error_response(const Status& status);
HttpResponse error_response(int http_status, const std::string& type, const std::string& message);
HttpResponse json_response(const nlohmann::json& body, int http_status = 200);

// Splits "/backtrace?thread=1&locals=1" into path and decoded query parameters.
void split_target(const std::string& target, std::string* path, std::map<std::string, std::string>* query);

}  // namespace probing::server
