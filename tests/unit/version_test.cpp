#include "layout/version.h"

#include <gtest/gtest.h>

namespace probing::layout {
namespace {

TEST(Compat, ParsesPyGetVersion) {
  auto v = parse_version("3.11.7 (main, Dec  1 2026, 10:00:00) [GCC 12.2.0]");
  ASSERT_TRUE(v.is_ok());
  EXPECT_EQ(v->minor, 11);
  EXPECT_EQ(v->micro, 7);
  EXPECT_EQ(v->text, "3.11.7");
  auto rc = parse_version("3.13.0rc1 (main)");
  ASSERT_TRUE(rc.is_ok());
  EXPECT_EQ(rc->minor, 13);
  EXPECT_FALSE(parse_version("garbage").is_ok());
}

TEST(Compat, RefusesVersionsItWasNotWrittenFor) {
  for (int minor = 9; minor <= 15; ++minor) {
    EXPECT_TRUE(check_supported(*parse_version(("3." + std::to_string(minor) + ".0").c_str())).is_ok());
  }
  Status old = check_supported(*parse_version("3.8.10"));
  EXPECT_EQ(old.code(), Code::kUnsupported);
  EXPECT_NE(old.message().find("3.9 to 3.15"), std::string::npos);
  EXPECT_FALSE(check_supported(*parse_version("3.16.0")).is_ok());
  EXPECT_FALSE(check_supported(*parse_version("2.7.18")).is_ok());
}

}  // namespace
}  // namespace probing::layout
