// Status and Result<T>: how expected failures travel in probing, instead of exceptions.
//
// A Status is either ok or carries a code and a message. Errors gain context as they rise:
//   return st.with_context("reading /proc/42/maps");
// gives "reading /proc/42/maps: permission denied".
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace probing {

enum class Code {
  kOk = 0,
  kInvalidArgument,  // the caller asked for something malformed
  kNotFound,         // no such process, file, symbol, table
  kPermissionDenied,
  kUnavailable,      // the peer is not there (no agent, process gone); may work later
  kTimeout,          // a deadline passed
  kAlreadyExists,
  kUnsupported,      // a platform or version we refuse to guess about
  kInternal,
};

const char* code_name(Code code) noexcept;

class [[nodiscard]] Status {
 public:
  Status() = default;  // ok
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }

  bool is_ok() const noexcept { return code_ == Code::kOk; }
  explicit operator bool() const noexcept { return is_ok(); }
  Code code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }

  // "context: message"; an ok status stays ok.
  Status with_context(const std::string& context) const;

  // "<code name>: <message>", or "ok".
  std::string to_string() const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

// errno as a Status, e.g. errno_status("ptrace(ATTACH, 42)") -> "ptrace(ATTACH, 42): Operation not
// permitted", with the code chosen from the errno value (EPERM -> kPermissionDenied, ...).
Status errno_status(const std::string& what, int err);
Status errno_status(const std::string& what);  // uses the current errno

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!std::get<Status>(v_).is_ok() && "a Result built from a Status must carry an error");
  }

  bool is_ok() const noexcept { return std::holds_alternative<T>(v_); }
  explicit operator bool() const noexcept { return is_ok(); }

  // REQUIRES: is_ok().
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

  // The error; an ok Status when is_ok().
  Status status() const { return is_ok() ? Status::ok() : std::get<Status>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace probing

// Returns the enclosing function early with the error of a Status-returning expression.
#define PROBING_RETURN_IF_ERROR(expr)           \
  do {                                          \
    ::probing::Status probing_status_ = (expr); \
    if (!probing_status_.is_ok()) return probing_status_; \
  } while (0)
