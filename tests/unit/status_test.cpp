#include "core/status.h"

#include <gtest/gtest.h>

#include <cerrno>

#include "core/random.h"

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

namespace probing {
namespace {

TEST(Random, BytesAndTheirTextForms) {
  Result<std::string> a = random_bytes(16), b = random_bytes(16);
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  EXPECT_EQ(a->size(), 16u);
  EXPECT_NE(*a, *b);
  EXPECT_EQ(to_hex(std::string("\x00\x9f\xff", 3)), "009fff");
  // RFC 4648's test vectors.
  EXPECT_EQ(to_base64(""), "");
  EXPECT_EQ(to_base64("f"), "Zg==");
  EXPECT_EQ(to_base64("fo"), "Zm8=");
  EXPECT_EQ(to_base64("foo"), "Zm9v");
  EXPECT_EQ(to_base64("foob"), "Zm9vYg==");
  EXPECT_EQ(to_base64("fooba"), "Zm9vYmE=");
  EXPECT_EQ(to_base64("foobar"), "Zm9vYmFy");
  EXPECT_EQ(to_base64(*a).size(), 24u);
  EXPECT_TRUE(equal_secrets("s3cret", "s3cret"));
  EXPECT_FALSE(equal_secrets("s3cret", "s3creT"));
  EXPECT_FALSE(equal_secrets("s3cret", "s3cre"));
}

}  // namespace
}  // namespace probing
