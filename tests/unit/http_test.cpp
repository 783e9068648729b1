#include "server/http.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "server/http_server.h"
#include "server/routes.h"

namespace probing::server {
namespace {

TEST(Http, SplitTargetDecodesQuery) {
  std::string path;
  std::map<std::string, std::string> query;
  split_target("/backtrace?thread=12&locals=1&name=a%20b+c&flag", &path, &query);
  EXPECT_EQ(path, "/backtrace");
  EXPECT_EQ(query["thread"], "12");
  EXPECT_EQ(query["locals"], "1");
  EXPECT_EQ(query["name"], "a b c");
  EXPECT_EQ(query.count("flag"), 1U);
  split_target("/health", &path, &query);
  EXPECT_EQ(path, "/health");
  EXPECT_TRUE(query.empty());
}

TEST(Http, ErrorResponsesCarryTypeAndStatus) {
  HttpResponse r = error_response(Status(Code::kTimeout, "too slow"));
  EXPECT_EQ(r.status, 504);
  auto j = nlohmann::json::parse(r.body);
  EXPECT_EQ(j["error"]["type"], "Timeout");
  EXPECT_EQ(j["error"]["message"], "too slow");
  EXPECT_EQ(error_response(Status(Code::kInvalidArgument, "x")).status, 400);
  EXPECT_EQ(error_response(Status(Code::kUnavailable, "x")).status, 503);
}

TEST(Http, InvalidUtf8IsReplacedNotThrown) {
  HttpResponse r = json_response({{"output", std::string("bad \xff byte")}});
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("bad"), std::string::npos);
}

TEST(Router, UnknownRoutesAndMethods) {
  AgentInfo info;
  auto router = make_router(info);
  HttpRequest req;
  req.method = "GET";
  req.path = "/nope";
  EXPECT_EQ(router(req).status, 404);
  req.path = "/eval";
  EXPECT_EQ(router(req).status, 405);
  req.method = "POST";
  req.body = "not json";
  HttpResponse r = router(req);
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("code"), std::string::npos);
  req.body = R"({"code": "1", "timeout": -3})";
  EXPECT_EQ(router(req).status, 400);
}

TEST(Router, ServesThePageWithAFreshNonceEachTime) {
  AgentInfo info;
  info.remote.token = "t0ken";  // the page's files need no token; the API does
  auto router = make_router(info);
  HttpRequest req;
  req.method = "GET";
  req.path = "/";
  req.peer.local = false;
  auto header = [](const HttpResponse& r, const std::string& name) {
    for (const auto& [n, v] : r.headers) {
      if (n == name) return v;
    }
    return std::string();
  };
  HttpResponse first = router(req), second = router(req);
  ASSERT_EQ(first.status, 200);
  EXPECT_EQ(first.content_type, "text/html; charset=utf-8");
  const std::string csp = header(first, "Content-Security-Policy");
  EXPECT_NE(csp.find("script-src 'self';"), std::string::npos) << csp;
  EXPECT_EQ(csp.find("unsafe"), std::string::npos) << csp;
  EXPECT_NE(csp, header(second, "Content-Security-Policy"));
  EXPECT_EQ(first.body.find("__PROBING_CSP_NONCE__"), std::string::npos);
  req.path = "/health";
  EXPECT_EQ(router(req).status, 401);
  req.path = "/no-such-page";
  EXPECT_EQ(router(req).status, 404);
  req.method = "POST";
  req.path = "/";
  EXPECT_EQ(router(req).status, 405);
}

TEST(Router, OnlyThisAgentsOwnPageMayCallIt) {
  AgentInfo info;  // no token: loopback, this user
  auto router = make_router(info);
  HttpRequest req;
  req.method = "GET";
  req.path = "/health";
  req.peer.local = false;
  req.peer.uid_known = true;
  req.peer.uid = ::geteuid();
  req.host = "127.0.0.1:9000";
  req.origin = "http://127.0.0.1:9000";
  EXPECT_EQ(router(req).status, 200);
  req.origin = "http://127.0.0.1:9001";  // another page on this host
  EXPECT_EQ(router(req).status, 403);
  req.origin = "https://127.0.0.1:9000";  // the scheme is part of the origin
  EXPECT_EQ(router(req).status, 403);
  req.origin = "";
  req.host = "rebound.example:9000";  // DNS rebinding
  EXPECT_EQ(router(req).status, 403);
}

TEST(Router, EvalWithoutPythonIsUnavailable) {
  // This test binary is not Python: the eval route must say so instead of crashing.
  AgentInfo info;
  auto router = make_router(info);
  HttpRequest req;
  req.method = "POST";
  req.path = "/eval";
  req.body = R"({"code": "1"})";
  HttpResponse r = router(req);
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.body.find("no CPython runtime"), std::string::npos);
}

TEST(PeerCheck, SameUserOrRootOnly) {
  EXPECT_TRUE(peer_allowed(1000, 1000));
  EXPECT_TRUE(peer_allowed(0, 1000));
  EXPECT_FALSE(peer_allowed(1001, 1000));
  EXPECT_FALSE(peer_allowed(65534, 0));
}

}  // namespace
}  // namespace probing::server
