// Remote access rules without a network: networks, tokens and rights, the options from the
// environment (and the refusal of a non-loopback bind without a token), and the owner of a
// loopback connection found in /proc/net/tcp.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>

#include "server/auth.h"

namespace probing::server {
namespace {

TEST(Auth, Networks) {
  Result<std::vector<Cidr>> allow = parse_allow_list(" 10.0.0.0/8, 192.168.1.7 ,fd00::/8");
  ASSERT_TRUE(allow.is_ok()) << allow.status().message();
  ASSERT_EQ(allow->size(), 3u);
  auto in = [&](const char* ip) {
    auto a = parse_address(ip);
    for (const Cidr& c : *allow) {
      if (a && c.contains(*a)) return true;
    }
    return false;
  };
  EXPECT_TRUE(in("10.1.2.3"));
  EXPECT_FALSE(in("11.0.0.1"));
  EXPECT_TRUE(in("192.168.1.7"));
  EXPECT_FALSE(in("192.168.1.8"));
  EXPECT_TRUE(in("fd12::1"));
  EXPECT_FALSE(in("fe80::1"));
  EXPECT_FALSE(in("127.0.0.1"));
  EXPECT_TRUE(parse_cidr("0.0.0.0/0")->contains(*parse_address("8.8.8.8")));
  for (const char* bad : {"10.0.0.0/33", "10.0.0/8", "host.example", "::/129", "1.2.3.4/x"}) {
    EXPECT_FALSE(parse_cidr(bad).is_ok()) << bad;
  }
}

TEST(Auth, TokensGiveRights) {
  RemoteOptions o;
  o.token = "full-secret";
  o.read_token = "read-secret";
  EXPECT_EQ(right_of_token(o, "Bearer full-secret"), Right::kFull);
  EXPECT_EQ(right_of_token(o, "Bearer read-secret"), Right::kRead);
  EXPECT_EQ(right_of_token(o, "Bearer  read-secret "), Right::kRead);
  EXPECT_EQ(right_of_token(o, "Bearer full-secre"), Right::kNone);
  EXPECT_EQ(right_of_token(o, "Bearer full-secretX"), Right::kNone);
  EXPECT_EQ(right_of_token(o, "full-secret"), Right::kNone);
  EXPECT_EQ(right_of_token(o, "Basic full-secret"), Right::kNone);
  EXPECT_EQ(right_of_token(o, ""), Right::kNone);
  o.read_token.clear();
  EXPECT_EQ(right_of_token(o, "Bearer "), Right::kNone);  // an empty token never matches
}

class EnvGuard {
 public:
  explicit EnvGuard(std::initializer_list<std::pair<const char*, const char*>> vars) {
    clear();
    for (auto [k, v] : vars) ::setenv(k, v, 1);
  }
  ~EnvGuard() { clear(); }

 private:
  static void clear() {
    for (const char* name : {"PROBING_PORT", "PROBING_HOST", "PROBING_TOKEN", "PROBING_READ_TOKEN", "PROBING_TLS_CERT",
                             "PROBING_TLS_KEY", "PROBING_ALLOW"}) {
      ::unsetenv(name);
    }
  }
};

TEST(Auth, OptionsFromTheEnvironment) {
  {
    EnvGuard env({});
    EXPECT_FALSE(remote_options_from_env()->enabled);
  }
  {
    EnvGuard env({{"PROBING_PORT", "0"}});
    Result<RemoteOptions> o = remote_options_from_env();
    ASSERT_TRUE(o.is_ok());
    EXPECT_TRUE(o->enabled && o->loopback() && o->host == "127.0.0.1" && o->port == 0);
  }
  {
    EnvGuard env({{"PROBING_PORT", "8080"}, {"PROBING_HOST", "0.0.0.0"}});
    Result<RemoteOptions> o = remote_options_from_env();
    ASSERT_FALSE(o.is_ok());
    EXPECT_NE(o.status().message().find("without PROBING_TOKEN"), std::string::npos);
  }
  {
    EnvGuard env({{"PROBING_PORT", "8080"}, {"PROBING_HOST", "0.0.0.0"}, {"PROBING_TOKEN", "t"}});
    EXPECT_TRUE(remote_options_from_env().is_ok());
  }
  for (auto bad : std::vector<std::vector<std::pair<const char*, const char*>>>{
           {{"PROBING_PORT", "http"}},
           {{"PROBING_PORT", "70000"}},
           {{"PROBING_PORT", "1"}, {"PROBING_HOST", "example.com"}},
           {{"PROBING_PORT", "1"}, {"PROBING_TLS_CERT", "/c.pem"}},
           {{"PROBING_PORT", "1"}, {"PROBING_TOKEN", "same"}, {"PROBING_READ_TOKEN", "same"}},
           {{"PROBING_PORT", "1"}, {"PROBING_ALLOW", "10.0.0.0/40"}}}) {
    EnvGuard env({});
    for (auto [k, v] : bad) ::setenv(k, v, 1);
    EXPECT_FALSE(remote_options_from_env().is_ok()) << bad[0].second;
  }
}

TEST(Auth, FindsTheOwnerOfALoopbackConnection) {
  int server = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(server, 1), 0);
  socklen_t len = sizeof addr;
  ::getsockname(server, reinterpret_cast<sockaddr*>(&addr), &len);
  int client = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  sockaddr_in mine{};
  len = sizeof mine;
  ::getsockname(client, reinterpret_cast<sockaddr*>(&mine), &len);
  std::optional<uid_t> uid = loopback_peer_uid("127.0.0.1", ntohs(mine.sin_port), "127.0.0.1", ntohs(addr.sin_port));
  ASSERT_TRUE(uid.has_value());
  EXPECT_EQ(*uid, ::geteuid());
  EXPECT_FALSE(loopback_peer_uid("127.0.0.1", ntohs(mine.sin_port) ^ 1, "127.0.0.1", ntohs(addr.sin_port)).has_value());
  ::close(client);
  ::close(server);
}

}  // namespace
}  // namespace probing::server
