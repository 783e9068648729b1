#include "core/status.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace probing {
namespace {

TEST(Status, OkByDefault) {
  Status s;
  EXPECT_TRUE(s.is_ok());
  EXPECT_EQ(s.to_string(), "ok");
}

TEST(Status, ContextIsPrepended) {
  Status s = Status(Code::kNotFound, "no such file").with_context("reading /x");
  EXPECT_EQ(s.code(), Code::kNotFound);
  EXPECT_EQ(s.message(), "reading /x: no such file");
  EXPECT_TRUE(Status::ok().with_context("ignored").is_ok());
}

TEST(Status, ErrnoMapsToCodes) {
  EXPECT_EQ(errno_status("ptrace", EPERM).code(), Code::kPermissionDenied);
  EXPECT_EQ(errno_status("kill", ESRCH).code(), Code::kNotFound);
  EXPECT_EQ(errno_status("connect", ECONNREFUSED).code(), Code::kUnavailable);
  EXPECT_NE(errno_status("open", ENOENT).message().find("open: "), std::string::npos);
}

TEST(Result, HoldsValueOrError) {
  Result<int> ok = 7;
  ASSERT_TRUE(ok.is_ok());
  EXPECT_EQ(ok.value(), 7);
  Result<int> bad = Status(Code::kTimeout, "late");
  EXPECT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().code(), Code::kTimeout);
}

Status fails_early() {
  PROBING_RETURN_IF_ERROR(Status(Code::kInternal, "first"));
  return Status(Code::kInternal, "second");
}

TEST(Status, ReturnIfErrorReturnsTheFirstError) { EXPECT_EQ(fails_early().message(), "first"); }

}  // namespace
}  // namespace probing
