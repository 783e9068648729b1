// The audit trail: every eval, repl input and settings change, with who asked and with what
// right, in the bounded table probing.audit and in the agent's log.
#pragma once

#include <string>

#include "server/auth.h"
#include "server/http.h"

namespace probing::server {

// Records `request` (its code: the eval's source, the SET statement, the setting and value).
// `action`: "eval", "set" or "config". Never fails the request.
void audit(const HttpRequest& request, Right right, const std::string& action) noexcept;

// Makes probing.audit (idempotent).
void add_audit_table();

}  // namespace probing::server
