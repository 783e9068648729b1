// Random bytes from the kernel, and the text forms they travel in.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"

namespace probing {

// `n` bytes from getrandom(2); kUnavailable when the kernel gives none.
Result<std::string> random_bytes(size_t n);

// Lower-case hex, and standard base64 with padding.
std::string to_hex(std::string_view bytes);
std::string to_base64(std::string_view bytes);

}  // namespace probing
