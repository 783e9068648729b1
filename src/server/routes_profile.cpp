// POST /profile {"hz", "seconds"[, "renew": id][, "tasks": true]} starts (or extends) sampling faster for a
// while; GET /profile?since=&until= (or ?last=SECONDS) &mode=&idle=&tasks= returns the samples of a window
// with their stacks (profile/sampler.h); tasks names asyncio tasks (profile/tasks.h). The CLI's `profile` and
// `top` are built on the two; the read right suffices for both.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>

#include "profile/sampler.h"
#include "server/routes.h"

namespace probing::server {
namespace {

bool number_param(const HttpRequest& request, const char* name, double* out) {
  auto it = request.query.find(name);
  if (it == request.query.end() || it->second.empty()) return false;
  char* end = nullptr;
  double v = std::strtod(it->second.c_str(), &end);
  if (end == nullptr || *end != '\0' || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

HttpResponse start_profile(const HttpRequest& request) {
  nlohmann::json body = nlohmann::json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object() || !body.value("hz", nlohmann::json()).is_number() ||
      !body.value("seconds", nlohmann::json()).is_number()) {
    return error_response(400, "BadRequest", R"(expected a JSON body {"hz": rate, "seconds": duration})");
  }
  const nlohmann::json renew = body.value("renew", nlohmann::json());
  if (!renew.is_null() && !renew.is_number_integer()) {
    return error_response(400, "BadRequest", "renew is the id of a session this agent returned");
  }
  const nlohmann::json tasks = body.value("tasks", nlohmann::json(false));
  if (!tasks.is_boolean()) return error_response(400, "BadRequest", "tasks is true or false");
  Result<profile::Session> s =
      profile::start_session(body["hz"].get<double>(), body["seconds"].get<double>(),
                             renew.is_null() ? 0 : renew.get<long long>(), tasks.get<bool>());
  if (!s.is_ok()) return error_response(s.status());
  return json_response(
      {{"id", s->id}, {"start", s->start}, {"until", s->until}, {"hz", s->hz}, {"tasks", s->tasks}});
}

HttpResponse read_profile(const HttpRequest& request) {
  profile::CollectRequest c;
  double last = 0;
  if (number_param(request, "last", &last)) {  // the agent's clock: the client's may differ
    if (last <= 0) return error_response(400, "BadRequest", "last must be a positive number of seconds");
    c.until = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    c.since = c.until - last;
  } else if (!number_param(request, "since", &c.since) || !number_param(request, "until", &c.until)) {
    return error_response(400, "BadRequest", "give since and until, in unix seconds, or last, in seconds");
  }
  if (auto it = request.query.find("mode"); it != request.query.end()) {
    Result<profile::Mode> mode = profile::parse_mode(it->second);
    if (!mode.is_ok()) return error_response(mode.status());
    c.mode = *mode;
  }
  if (auto it = request.query.find("idle"); it != request.query.end()) {
    c.idle = it->second == "1" || it->second == "true";
  }
  if (auto it = request.query.find("tasks"); it != request.query.end()) {
    c.tasks = it->second == "1" || it->second == "true";
  }
  double max = 0;
  if (number_param(request, "max_samples", &max)) {
    if (max < 1) return error_response(400, "BadRequest", "max_samples must be at least 1");
    c.max_samples = static_cast<size_t>(std::min(max, static_cast<double>(c.max_samples)));
  }
  Result<std::string> result = profile::collect(c);
  if (!result.is_ok()) return error_response(result.status());
  HttpResponse r;
  r.body = std::move(*result);
  return r;
}

}  // namespace

HttpResponse handle_profile(const HttpRequest& request) {
  if (request.method == "POST") return start_profile(request);
  if (request.method == "GET") return read_profile(request);
  return error_response(405, "BadRequest", "use GET /profile (samples) or POST /profile (start)");
}

}  // namespace probing::server
