#include "core/settings.h"
#include "core/suggest.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include "core/log.h"

namespace probing {
namespace {

TEST(Settings, DefaultsAndTypedGetters) {
  Settings s;
  declare_builtin_settings(s);
  EXPECT_EQ(s.get_double("eval.timeout_s"), 30);
  EXPECT_EQ(s.get_int("server.max_connections"), 64);
  EXPECT_FALSE(s.get("no.such").has_value());
}

TEST(Settings, SetValidatesKindAndRange) {
  Settings s;
  s.declare("a.flag", SettingKind::kBool, "off", "a flag");
  s.declare("a.count", SettingKind::kInt, "1", "a count");
  EXPECT_TRUE(s.set("a.flag", "ON").is_ok());
  EXPECT_EQ(*s.get("a.flag"), "on");
  EXPECT_TRUE(s.get_bool("a.flag"));
  Status bad = s.set("a.flag", "maybe");
  EXPECT_EQ(bad.code(), Code::kInvalidArgument);
  EXPECT_NE(bad.message().find("a.flag"), std::string::npos);
  EXPECT_EQ(s.set("a.count", "12x").code(), Code::kInvalidArgument);
  EXPECT_EQ(s.set("a.missing", "1").code(), Code::kNotFound);
  declare_builtin_settings(s);
  EXPECT_EQ(s.set("eval.timeout_s", "-1").code(), Code::kInvalidArgument);
  EXPECT_EQ(s.set("eval.timeout_s", "inf").code(), Code::kInvalidArgument);
}

TEST(Settings, EnvironmentNamesAndValues) {
  EXPECT_EQ(Settings::env_name("eval.timeout_s"), "PROBING_EVAL_TIMEOUT_S");
  Settings s;
  declare_builtin_settings(s);
  ::setenv("PROBING_EVAL_TIMEOUT_S", "2.5", 1);
  ::setenv("PROBING_SERVER_MAX_CONNECTIONS", "lots", 1);
  std::vector<Status> errors = s.apply_environment();
  ::unsetenv("PROBING_EVAL_TIMEOUT_S");
  ::unsetenv("PROBING_SERVER_MAX_CONNECTIONS");
  EXPECT_DOUBLE_EQ(s.get_double("eval.timeout_s"), 2.5);
  ASSERT_EQ(errors.size(), 1U);
  EXPECT_NE(errors[0].message().find("PROBING_SERVER_MAX_CONNECTIONS"), std::string::npos);
  EXPECT_EQ(s.get_int("server.max_connections"), 64);
}

TEST(Settings, ARunningAgentRefusesWhatItReadsAtStart) {
  Settings s;
  declare_builtin_settings(s);
  // At start (environment, -D) every setting may be set.
  ASSERT_TRUE(s.set("python.max_workers", "6").is_ok());
  // At run time, a setting read at start is refused, says how to set it, and keeps its value.
  for (const char* name : {"python.max_workers", "server.max_connections", "server.request_timeout_s",
                           "server.max_body_bytes", "sql.max_memory_mb", "store.max_rows", "store.max_bytes"}) {
    Status st = s.change(name, "8");
    EXPECT_EQ(st.code(), Code::kUnsupported) << name;
    EXPECT_NE(st.message().find("read at start"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find(Settings::env_name(name) + "=8"), std::string::npos) << st.message();
  }
  EXPECT_EQ(s.get_int("python.max_workers"), 6);
  // The others change at once, and unknown names and bad values fail as set() does.
  EXPECT_TRUE(s.change("query.max_rows", "50").is_ok());
  EXPECT_EQ(s.get_int("query.max_rows"), 50);
  EXPECT_EQ(s.change("no.such", "1").code(), Code::kNotFound);
  EXPECT_EQ(s.change("query.max_rows", "lots").code(), Code::kInvalidArgument);
  for (const SettingInfo& info : s.list()) {
    EXPECT_EQ(info.read_at_start, info.description.find("(read at start)") != std::string::npos) << info.name;
  }
}

TEST(Suggest, NearestNameOrNone) {
  EXPECT_EQ(edit_distance("bactrace", "backtrace"), 1U);
  EXPECT_EQ(edit_distance("", "abc"), 3U);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3U);
  const std::vector<std::string> commands{"eval", "list", "launch", "inject", "backtrace", "repl", "query", "config"};
  EXPECT_EQ(closest("bactrace", commands), "backtrace");
  EXPECT_EQ(closest("evl", commands), "eval");
  EXPECT_EQ(closest("injcet", commands), "inject");  // a swap costs 2: still within a third of 6
  EXPECT_EQ(closest("frobnicate", commands), "");
  EXPECT_EQ(closest("4242", commands), "");
  Settings s;
  declare_builtin_settings(s);
  EXPECT_EQ(s.set("torch.trac", "on").message(), "unknown setting 'torch.trac'; did you mean torch.trace?");
  EXPECT_EQ(s.unknown_text("zzz"), "unknown setting 'zzz'");
}

TEST(Settings, ListIsSortedAndDescribed) {
  Settings s;
  declare_builtin_settings(s);
  auto all = s.list();
  ASSERT_FALSE(all.empty());
  for (size_t i = 1; i < all.size(); ++i) EXPECT_LT(all[i - 1].name, all[i].name);
  for (const auto& info : all) EXPECT_FALSE(info.description.empty()) << info.name;
}

TEST(Log, LevelsParseAndRingIsBounded) {
  EXPECT_EQ(parse_log_level("DEBUG", LogLevel::kWarn), LogLevel::kDebug);
  EXPECT_EQ(parse_log_level("nonsense", LogLevel::kError), LogLevel::kError);
  set_log_level(LogLevel::kError);
  for (size_t i = 0; i < kLogRingLines + 10; ++i) log_debug("line " + std::to_string(i));
  auto lines = recent_log_lines();
  EXPECT_EQ(lines.size(), kLogRingLines);
  EXPECT_NE(lines.back().find("line " + std::to_string(kLogRingLines + 9)), std::string::npos);
}

}  // namespace
}  // namespace probing
