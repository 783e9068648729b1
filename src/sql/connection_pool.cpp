// The engine's connections: opened hardened and read-only, with both modules registered and every
// schema attached, kept for the next query (up to four), and brought up to date with the tables
// registered since their last use.
#include <sqlite3.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "core/settings.h"
#include "sql/authorizer.h"
#include "sql/engine_internal.h"
#include "sqlext/functions.h"

namespace probing::sql {
namespace {

// SQLite's authorizer callback: the decision is authorizer.cpp's; what it refused is kept for
// the query's error message.
int authorize_query(void*, int action, const char* arg1, const char* arg2, const char*, const char*) noexcept {
  return authorize(action, arg1, arg2, t_query != nullptr ? &t_query->denied : nullptr);
}

int on_progress(void*) noexcept {
  if (t_query == nullptr || Clock::now() < t_query->deadline) return 0;
  t_query->timed_out = true;
  return 1;
}

}  // namespace

Result<std::unique_ptr<Engine::Connection>> Engine::borrow() {
  std::unique_ptr<Connection> conn;
  {
    std::lock_guard<std::mutex> lock(pool_mu_);
    if (!idle_.empty()) {
      conn = std::move(idle_.back());
      idle_.pop_back();
    }
  }
  if (conn == nullptr) {
    conn = std::make_unique<Connection>();
    int rc = sqlite3_open_v2(":memory:", &conn->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_MEMORY,
                             nullptr);
    if (rc != SQLITE_OK) return Status(Code::kInternal, std::string("opening SQLite: ") + sqlite3_errstr(rc));
    harden_connection(conn->db);
    // No single value (a randomblob, a huge string) may outgrow what a reply may carry.
    sqlite3_limit(conn->db, SQLITE_LIMIT_LENGTH,
                  static_cast<int>(std::min<long long>(settings().get_int("query.max_result_bytes"), 1 << 30)));
    sqlite3_create_module_v2(conn->db, "probing_live", &live_module(), registry_.get(), nullptr);
    sqlite3_create_module_v2(conn->db, "probing_store", &store_module(), registry_.get(), nullptr);
    if (!register_functions(conn->db)) return Status(Code::kInternal, "registering probing's SQL functions");
    // The sorter (GROUP BY, ORDER BY over many rows) keeps SQLite's default: runs of a few MB in
    // memory, merged through unlinked temp files ($SQLITE_TMPDIR, $TMPDIR, /var/tmp). With
    // temp_store = MEMORY the same GROUP BY over 1M rows is ~2.5x slower and leaves its sort
    // space in the heap of the handler thread's malloc arena.
  }
  // Attach the schemas and create the tables this connection has not seen yet.
  uint64_t version;
  std::vector<std::shared_ptr<const Registry::Entry>> entries;
  {
    std::lock_guard<std::mutex> lock(registry_->mu);
    version = registry_->version;
    if (version != conn->version) {
      for (const auto& [key, entry] : registry_->tables) {
        if (conn->created.count(key) == 0) entries.push_back(entry);
      }
    }
  }
  if (!entries.empty()) {
    sqlite3_set_authorizer(conn->db, nullptr, nullptr);
    std::vector<std::string> schemas = schema_names();
    for (const auto& e : entries) schemas.push_back(e->info.schema);
    for (const std::string& schema : schemas) {
      if (conn->attached.count(schema) != 0) continue;
      std::string sql = "ATTACH ':memory:' AS " + quote_identifier(schema);
      char* err = nullptr;
      if (sqlite3_exec(conn->db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
        std::string message = err ? err : "?";
        sqlite3_free(err);
        return Status(Code::kInternal, "attaching schema " + schema + ": " + message);
      }
      conn->attached.insert(schema);
    }
    for (const auto& e : entries) {
      std::string sql = "CREATE VIRTUAL TABLE " + quote_identifier(e->info.schema) + "." +
                        quote_identifier(e->info.name) + " USING " +
                        (e->info.store ? "probing_store" : "probing_live");
      char* err = nullptr;
      if (sqlite3_exec(conn->db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
        std::string message = err ? err : "?";
        sqlite3_free(err);
        return Status(Code::kInternal, "creating " + e->info.schema + "." + e->info.name + ": " + message);
      }
      conn->created.insert(e->info.schema + "." + e->info.name);
    }
  }
  conn->version = version;
  sqlite3_set_authorizer(conn->db, authorize_query, nullptr);
  sqlite3_progress_handler(conn->db, 1000, on_progress, nullptr);
  return conn;
}

void Engine::give_back(std::unique_ptr<Connection> conn) {
  std::lock_guard<std::mutex> lock(pool_mu_);
  if (idle_.size() < 4) idle_.push_back(std::move(conn));
}

}  // namespace probing::sql
