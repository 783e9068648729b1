// libFuzzer target for the agent's request handling: bytes as a client would send them, parsed
// by the server's parser with its limits, then routed with the real router — access control
// (tokens, rights), JSON bodies, the SQL engine — as a TCP client with a token and as a local
// one. There is no Python in this process: Python routes answer that it is unavailable.
#include <cstdint>
#include <string_view>

#include "core/settings.h"
#include "server/http_server.h"
#include "server/routes.h"
#include "sql/tables/tables.h"

namespace {

probing::server::AgentInfo* setup() {
  using namespace probing;
  declare_builtin_settings(settings());
  (void)sql::add_builtin_tables();
  auto* info = new server::AgentInfo;
  info->version = "fuzz";
  info->remote.enabled = true;
  info->remote.token = "full-token";
  info->remote.read_token = "read-token";
  return info;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace probing;
  static server::AgentInfo* info = setup();
  static server::HttpServer::Handler router = server::make_router(*info);
  // Whatever an input set, queries stay short and results small.
  (void)settings().set("query.timeout_s", "0.05");
  (void)settings().set("query.max_rows", "100");
  server::Peer peer;
  peer.local = size > 0 && (data[0] & 1);
  peer.address = peer.local ? "uid 0 pid 1" : "127.0.0.1:1";
  Result<server::HttpRequest> request = server::parse_request(
      std::string_view(reinterpret_cast<const char*>(data), size), peer, 1 << 16, 16 << 10);
  if (request.is_ok()) {
    server::HttpResponse response = router(*request);
    if (response.status < 100 || response.status > 599) __builtin_trap();
  }
  return 0;
}
