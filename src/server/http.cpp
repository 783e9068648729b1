#include "server/http.h"

namespace probing::server {
namespace {

int http_status_for(Code code) {
  switch (code) {
    case Code::kOk: return 200;
    case Code::kInvalidArgument: return 400;
    case Code::kNotFound: return 404;
    case Code::kPermissionDenied: return 403;
    case Code::kUnavailable: return 503;
    case Code::kTimeout: return 504;
    case Code::kAlreadyExists: return 409;
    case Code::kUnsupported: return 501;
    case Code::kInternal: return 500;
  }
  return 500;
}

const char* error_type_for(Code code) {
  switch (code) {
    case Code::kOk: return "Ok";
    case Code::kInvalidArgument: return "BadRequest";
    case Code::kNotFound: return "NotFound";
    case Code::kPermissionDenied: return "PermissionDenied";
    case Code::kUnavailable: return "Unavailable";
    case Code::kTimeout: return "Timeout";
    case Code::kAlreadyExists: return "AlreadyExists";
    case Code::kUnsupported: return "Unsupported";
    case Code::kInternal: return "Internal";
  }
  return "Internal";
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

HttpResponse error_response(int http_status, const std::string& type, const std::string& message) {
  nlohmann::json j = {{"error", {{"type", type}, {"message", message}}}};
  return {http_status, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "application/json", {}};
}

HttpResponse error_response(const Status& status) {
  return error_response(http_status_for(status.code()), error_type_for(status.code()), status.message());
}

HttpResponse json_response(const nlohmann::json& body, int http_status) {
  return {http_status, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "application/json", {}};
}

void split_target(const std::string& target, std::string* path, std::map<std::string, std::string>* query) {
  size_t q = target.find('?');
  *path = percent_decode(target.substr(0, q));
  query->clear();
  if (q == std::string::npos) return;
  std::string rest = target.substr(q + 1);
  size_t start = 0;
  while (start <= rest.size()) {
    size_t amp = rest.find('&', start);
    std::string pair = rest.substr(start, amp == std::string::npos ? std::string::npos : amp - start);
    if (!pair.empty()) {
      size_t eq = pair.find('=');
      std::string key = percent_decode(pair.substr(0, eq));
      std::string value = eq == std::string::npos ? "" : percent_decode(pair.substr(eq + 1));
      (*query)[key] = value;
    }
    if (amp == std::string::npos) break;
    start = amp + 1;
  }
}

}  // namespace probing::server
