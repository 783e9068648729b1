// Random bytes from the kernel, the text forms they travel in, and comparing secrets.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"

namespace probing {

// `n` bytes from getrandom(2); kUnavailable when the kernel gives none.
Result<std::string> random_bytes(size_t n);

// Whether two secrets (tokens) are equal, in time that does not depend on where they first
// differ. The length is not hidden: secrets are long and random; their content is.
bool equal_secrets(std::string_view a, std::string_view b);

// Lower-case hex, and standard base64 with padding.
std::string to_hex(std::string_view bytes);
std::string to_base64(std::string_view bytes);

}  // namespace probing
