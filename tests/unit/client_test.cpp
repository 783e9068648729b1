#include "client/client.h"

#include <gtest/gtest.h>

namespace probing::client {
namespace {

TEST(Target, Pid) {
  auto t = parse_target("1234");
  ASSERT_TRUE(t.is_ok());
  EXPECT_EQ(t->kind, Target::Kind::kPid);
  EXPECT_EQ(t->pid, 1234);
  EXPECT_FALSE(parse_target("0").is_ok());
  EXPECT_FALSE(parse_target("99999999999999").is_ok());
}

TEST(Target, UnixAndTcp) {
  auto u = parse_target("unix:@probing-7");
  ASSERT_TRUE(u.is_ok());
  EXPECT_EQ(u->kind, Target::Kind::kUnix);
  EXPECT_EQ(u->unix_path, "@probing-7");
  auto h = parse_target("trainer-7:8080");
  ASSERT_TRUE(h.is_ok());
  EXPECT_EQ(h->kind, Target::Kind::kTcp);
  EXPECT_EQ(h->host, "trainer-7");
  EXPECT_EQ(h->port, 8080);
  auto v6 = parse_target("[::1]:9000");
  ASSERT_TRUE(v6.is_ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_FALSE(parse_target("host:99999").is_ok());
  EXPECT_FALSE(parse_target("nonsense").is_ok());
  EXPECT_FALSE(parse_target("unix:").is_ok());
}

TEST(Connect, ErrorsSayWhatToDo) {
  auto missing = Client::connect(*parse_target("999999999"));
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_EQ(missing.status().message(), "no process 999999999");
  // pid 1 exists and has no agent.
  auto no_agent = Client::connect(*parse_target("1"));
  ASSERT_FALSE(no_agent.is_ok());
  EXPECT_EQ(no_agent.status().code(), Code::kUnavailable);
  EXPECT_NE(no_agent.status().message().find("probing 1 inject"), std::string::npos);
}

TEST(Response, ErrorFields) {
  Response r{503, R"({"error": {"type": "Timeout", "message": "GIL held"}})"};
  EXPECT_EQ(r.error_type(), "Timeout");
  EXPECT_EQ(r.error_message(), "GIL held");
  Response plain{500, "oops"};
  EXPECT_EQ(plain.error_message(), "oops");
}

}  // namespace
}  // namespace probing::client
