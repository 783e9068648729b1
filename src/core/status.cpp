#include "core/status.h"

#include <cerrno>
#include <cstring>

namespace probing {

const char* code_name(Code code) noexcept {
  switch (code) {
    case Code::kOk: return "ok";
    case Code::kInvalidArgument: return "invalid argument";
    case Code::kNotFound: return "not found";
    case Code::kPermissionDenied: return "permission denied";
    case Code::kUnavailable: return "unavailable";
    case Code::kTimeout: return "timeout";
    case Code::kAlreadyExists: return "already exists";
    case Code::kUnsupported: return "unsupported";
    case Code::kInternal: return "internal error";
  }
  return "unknown";
}

Status Status::with_context(const std::string& context) const {
  if (is_ok()) return *this;
  return {code_, context + ": " + message_};
}

std::string Status::to_string() const {
  if (is_ok()) return "ok";
  return std::string(code_name(code_)) + ": " + message_;
}

Status errno_status(const std::string& what, int err) {
  Code code = Code::kInternal;
  switch (err) {
    case EPERM:
    case EACCES: code = Code::kPermissionDenied; break;
    case ENOENT:
    case ESRCH: code = Code::kNotFound; break;
    case ECONNREFUSED:
    case EAGAIN:
    case ECONNRESET:
    case EPIPE: code = Code::kUnavailable; break;
    case ETIMEDOUT: code = Code::kTimeout; break;
    case EINVAL: code = Code::kInvalidArgument; break;
    case EEXIST: code = Code::kAlreadyExists; break;
    default: break;
  }
  return {code, what + ": " + std::strerror(err)};
}

Status errno_status(const std::string& what) { return errno_status(what, errno); }

}  // namespace probing
