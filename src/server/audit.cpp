#include "server/audit.h"

// SHA256_Init/Update/Final are deprecated in OpenSSL 3 in favour of EVP, and kept on purpose: they
// are pure computation, where EVP_Digest fetches the algorithm through libcrypto's global tables
// and locks, which OPENSSL_cleanup frees when the host exits while a request may still be audited.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include <chrono>
#include <mutex>

#include "core/log.h"
#include "core/random.h"
#include "sql/engine.h"

namespace probing::server {
namespace {

constexpr size_t kAuditRows = 10000;
constexpr size_t kAuditBytes = 4 << 20;
constexpr size_t kFirstLineChars = 200;

// Uses no library state (see the include above), so it is right while the host exits.
std::string sha256_hex(const std::string& text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256_CTX ctx;
  if (SHA256_Init(&ctx) != 1 || SHA256_Update(&ctx, text.data(), text.size()) != 1 ||
      SHA256_Final(digest, &ctx) != 1) {
    return {};
  }
  return to_hex(std::string_view(reinterpret_cast<const char*>(digest), sizeof digest));
}

std::string first_line(const std::string& code) {
  size_t start = code.find_first_not_of(" \t\r\n");
  if (start == std::string::npos) return {};
  std::string line = code.substr(start, code.find('\n', start) - start);
  if (line.size() > kFirstLineChars) line = line.substr(0, kFirstLineChars) + "...";
  return line;
}

std::shared_ptr<sql::ColumnStore> audit_store() {
  add_audit_table();
  return sql::Engine::get().find_store("probing", "audit");
}

}  // namespace

void add_audit_table() {
  static std::once_flag once;
  std::call_once(once, [] {
    constexpr sql::ColumnType kText = sql::ColumnType::kText, kReal = sql::ColumnType::kReal,
                              kInt = sql::ColumnType::kInteger;
    auto store = std::make_shared<sql::ColumnStore>(
        "probing", "audit",
        std::vector<sql::ColumnDef>{{"time", kReal, "unix time in seconds"},
                                    {"peer", kText, "who: 'uid U pid P' over the unix socket, 'ip:port' over TCP"},
                                    {"right", kText, "the right used: full (eval, settings) or read"},
                                    {"action", kText, "eval (a repl block once, when whole), set (SQL SET), config (PUT /config), "
                                               "complete (repl completion: the line) or interrupt (the eval's id)"},
                                    {"first_line", kText, "first line of the code or statement, cut at 200 characters"},
                                    {"sha256", kText, "SHA-256 of the whole code or statement, hex"},
                                    {"bytes", kInt, "length of the code or statement"}},
        sql::ColumnStore::Limits{kAuditRows, kAuditBytes, 1024});
    Status st = sql::Engine::get().add_store(
        store, "Every eval, repl input, settings change, completion and interrupt: who, with which right, what.");
    if (!st.is_ok()) log_error("probing.audit: " + st.message());
  });
}

void audit(const HttpRequest& request, Right right, const std::string& action) noexcept {
  try {
    std::string code;
    nlohmann::json body = nlohmann::json::parse(request.body, nullptr, /*allow_exceptions=*/false);
    if (action == "eval" && body.is_object() && body.value("code", nlohmann::json()).is_string()) {
      code = body["code"].get<std::string>();
    } else if (action == "set" && body.is_object() && body.value("sql", nlohmann::json()).is_string()) {
      code = body["sql"].get<std::string>();
    } else if (action == "complete" && body.is_object() && body.value("line", nlohmann::json()).is_string()) {
      code = body["line"].get<std::string>();
    } else if (action == "interrupt" && body.is_object() && body.value("id", nlohmann::json()).is_string()) {
      code = "interrupt " + body["id"].get<std::string>();
    } else if (action == "config") {
      code = request.path.substr(request.path.rfind('/') + 1) + " = " +
             (body.is_object() && body.contains("value") ? body["value"].dump() : std::string("?"));
    } else {
      code = request.body.substr(0, 4096);
    }
    std::string line = first_line(code);
    std::string hash = sha256_hex(code);
    double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    if (auto store = audit_store()) {
      std::string_view right_text = right_name(right);
      sql::Cell cells[] = {now, std::string_view(request.peer.address), right_text, std::string_view(action),
                           std::string_view(line), std::string_view(hash), static_cast<long long>(code.size())};
      (void)store->append(cells);
    }
    log_info("audit: " + action + " by " + request.peer.address + " (" + right_name(right) + "): " + line +
             " [sha256 " + hash.substr(0, 16) + "]");
  } catch (...) {
    // never fails the request
  }
}

}  // namespace probing::server
