// The query loop: SET, then each statement stepped on a pooled connection, bounded in rows,
// reply bytes and time (the progress handler), and the tables the engine registers.
#include "sql/engine.h"

#include <sqlite3.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <regex>

#include "core/log.h"
#include "core/settings.h"
#include "sql/engine_internal.h"

namespace probing::sql {
namespace {

// What column i of the current row counts against query.max_result_bytes: its size as
// cell_json encodes it, known without encoding it.
size_t encoded_size(sqlite3_stmt* stmt, int i) {
  switch (sqlite3_column_type(stmt, i)) {
    case SQLITE_INTEGER:
    case SQLITE_FLOAT: return 8;
    case SQLITE_TEXT: return static_cast<size_t>(sqlite3_column_bytes(stmt, i));
    case SQLITE_BLOB: return 3 + 2 * static_cast<size_t>(sqlite3_column_bytes(stmt, i));  // x'..'
    default: return 0;
  }
}

nlohmann::json cell_json(sqlite3_stmt* stmt, int i) {
  switch (sqlite3_column_type(stmt, i)) {
    case SQLITE_INTEGER: return static_cast<long long>(sqlite3_column_int64(stmt, i));
    case SQLITE_FLOAT: {
      double d = sqlite3_column_double(stmt, i);
      return std::isfinite(d) ? nlohmann::json(d) : nlohmann::json(nullptr);
    }
    case SQLITE_TEXT: {
      const char* t = reinterpret_cast<const char*>(sqlite3_column_text(stmt, i));
      size_t n = static_cast<size_t>(sqlite3_column_bytes(stmt, i));
      return std::string(t == nullptr ? "" : t, n);
    }
    case SQLITE_BLOB: {
      const auto* b = static_cast<const unsigned char*>(sqlite3_column_blob(stmt, i));
      size_t n = static_cast<size_t>(sqlite3_column_bytes(stmt, i));
      static const char kHex[] = "0123456789abcdef";
      std::string hex = "x'";
      for (size_t k = 0; k < n; ++k) {
        hex += kHex[b[k] >> 4];
        hex += kHex[b[k] & 15];
      }
      return hex + "'";
    }
    default: return nullptr;
  }
}

// SET name = value | SET name TO value, the value optionally quoted.
bool parse_set(const std::string& sql, std::string* name, std::string* value) {
  // std::regex recurses per character: only a statement of a settings-change's size is tried.
  constexpr size_t kMaxSetLength = 1024;
  if (sql.size() > kMaxSetLength) return false;
  static const auto& kSet = *new std::regex(  // never destroyed: queries may run while the host exits
      R"(^\s*SET\s+([A-Za-z_][A-Za-z0-9_.]*)\s*(?:=|\s[Tt][Oo]\s)\s*(.*?)\s*;?\s*$)", std::regex::icase);
  std::smatch m;
  if (!std::regex_match(sql, m, kSet)) return false;
  *name = m[1];
  *value = m[2];
  if (value->size() >= 2 && (value->front() == '\'' || value->front() == '"') && value->back() == value->front()) {
    *value = value->substr(1, value->size() - 2);
  }
  return true;
}

}  // namespace

bool is_set_statement(const std::string& sql) {
  std::string name, value;
  return parse_set(sql, &name, &value);
}

const std::vector<std::string>& schema_names() {
  static const auto& kSchemas = *new std::vector<std::string>{"python", "process", "information_schema"};
  return kSchemas;
}

nlohmann::json QueryResult::to_json() const {
  nlohmann::json rows_json = nlohmann::json::array();
  for (const auto& row : rows) rows_json.push_back(row);
  return {{"columns", columns}, {"rows", std::move(rows_json)}, {"truncated", truncated},
          {"notices", notices}, {"elapsed_ms", elapsed_ms}};
}

void add_notice(const std::string& notice) {
  if (t_query != nullptr) t_query->notices.push_back(notice);
}

Engine& Engine::get() {
  static Engine* engine = new Engine;  // never destroyed: agent threads may query during exit
  return *engine;
}

Engine::Engine() : registry_(std::make_shared<Registry>()) {
  long long mb = settings().get("sql.max_memory_mb") ? settings().get_int("sql.max_memory_mb") : 256;
  sqlite3_hard_heap_limit64(static_cast<sqlite3_int64>(mb) << 20);
}

Status Engine::add_live_table(LiveTable table) {
  std::string key = table.schema + "." + table.name;
  auto entry = std::make_shared<Registry::Entry>();
  entry->info = {table.schema, table.name, "live", table.description, table.columns, nullptr};
  entry->live = std::make_shared<const LiveTable>(std::move(table));
  std::lock_guard<std::mutex> lock(registry_->mu);
  if (!registry_->tables.emplace(key, std::move(entry)).second) {
    return Status(Code::kAlreadyExists, "a table " + key + " already exists");
  }
  ++registry_->version;
  return Status::ok();
}

Status Engine::add_store(std::shared_ptr<ColumnStore> store, std::string description) {
  std::string key = store->schema() + "." + store->name();
  auto entry = std::make_shared<Registry::Entry>();
  entry->info = {store->schema(), store->name(), "store", std::move(description), store->columns(), store};
  std::lock_guard<std::mutex> lock(registry_->mu);
  if (!registry_->tables.emplace(key, std::move(entry)).second) {
    return Status(Code::kAlreadyExists, "a table " + key + " already exists");
  }
  ++registry_->version;
  return Status::ok();
}

std::shared_ptr<ColumnStore> Engine::find_store(const std::string& schema, const std::string& name) const {
  auto entry = registry_->find(schema + "." + name);
  return entry == nullptr ? nullptr : entry->info.store;
}

std::vector<TableInfo> Engine::tables() const {
  std::vector<TableInfo> out;
  std::lock_guard<std::mutex> lock(registry_->mu);
  for (const auto& [key, entry] : registry_->tables) out.push_back(entry->info);
  return out;
}

Result<QueryResult> Engine::query(const std::string& sql) {
  auto start = Clock::now();
  QueryResult result;
  std::string set_name, set_value;
  if (parse_set(sql, &set_name, &set_value)) {
    Status st = settings().change(set_name, set_value);
    if (st.code() == Code::kNotFound) {
      return Status(Code::kInvalidArgument,
                    st.message() + " (SELECT name FROM information_schema.df_settings lists them)");
    }
    if (!st.is_ok()) return Status(Code::kInvalidArgument, st.message());
    std::string value = settings().get(set_name).value_or(set_value);
    log_info("setting " + set_name + " = " + value + " (SET)");
    result.columns = {"name", "value"};
    result.rows.push_back({set_name, value});
    result.elapsed_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    return result;
  }

  Result<std::unique_ptr<Connection>> borrowed = borrow();
  if (!borrowed.is_ok()) return borrowed.status();
  std::unique_ptr<Connection> conn = std::move(borrowed).value();
  QueryState state;
  state.deadline = start + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(settings().get_double("query.timeout_s")));
  state.gil_budget_left_s = settings().get_double("query.gil_budget_s");
  t_query = &state;
  struct Reset {
    ~Reset() { t_query = nullptr; }
  } reset;
  const size_t max_rows = static_cast<size_t>(settings().get_int("query.max_rows"));
  const size_t max_bytes = static_cast<size_t>(settings().get_int("query.max_result_bytes"));

  Status failure;
  const char* tail = sql.c_str();
  const char* end = sql.c_str() + sql.size();
  while (tail < end && failure.is_ok()) {
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v2(conn->db, tail, static_cast<int>(end - tail), &stmt, &tail);
    if (rc != SQLITE_OK) {
      std::string message = sqlite3_errmsg(conn->db);
      if (state.denied.rfind("the function ", 0) == 0) {
        message = "probing's SQL does not allow " + state.denied +
                  " (only SQLite's core, date, math, window and JSON functions: see docs/security.md)";
      } else if (!state.denied.empty()) {
        message = "probing's SQL is read-only: " + state.denied + " is not allowed";
      } else if (message.find("may not be modified") != std::string::npos) {
        message = "probing's SQL is read-only: " + message;  // a write to a virtual table
      }
      failure = Status(Code::kInvalidArgument, message);
      break;
    }
    if (stmt == nullptr) continue;  // whitespace or a comment
    int ncol = sqlite3_column_count(stmt);
    if (ncol > 0) {
      result.columns.clear();
      result.rows.clear();
      result.truncated = false;
      for (int i = 0; i < ncol; ++i) result.columns.emplace_back(sqlite3_column_name(stmt, i));
    }
    size_t bytes = 0;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      if (result.rows.size() >= max_rows || bytes >= max_bytes) {
        result.truncated = true;
        result.notices.push_back(result.rows.size() >= max_rows
                                     ? "the result was cut at " + std::to_string(max_rows) + " rows (query.max_rows)"
                                     : "the result was cut at " + std::to_string(result.rows.size()) + " rows, " +
                                           std::to_string(bytes) + " bytes (query.max_result_bytes)");
        break;
      }
      // A row is measured before it is encoded: many large cells in one row (randomblobs) must
      // not make the agent allocate past query.max_result_bytes.
      size_t row_bytes = 0;
      for (int i = 0; i < ncol; ++i) row_bytes += encoded_size(stmt, i);
      if (bytes + row_bytes > max_bytes) {
        result.truncated = true;
        result.notices.push_back("the result was cut at " + std::to_string(result.rows.size()) +
                                 " rows: the next row's " + std::to_string(row_bytes) + " bytes would pass " +
                                 std::to_string(max_bytes) + " (query.max_result_bytes)");
        break;
      }
      std::vector<nlohmann::json> row;
      row.reserve(static_cast<size_t>(ncol));
      for (int i = 0; i < ncol; ++i) row.push_back(cell_json(stmt, i));
      bytes += row_bytes;
      result.rows.push_back(std::move(row));
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
      if (state.timed_out) {
        char secs[32];
        std::snprintf(secs, sizeof secs, "%g", settings().get_double("query.timeout_s"));
        failure = Status(Code::kTimeout, std::string("the query ran past query.timeout_s (") + secs + " s) and was stopped");
      } else {
        failure = Status(Code::kInvalidArgument, sqlite3_errmsg(conn->db));
      }
    }
    sqlite3_finalize(stmt);
  }
  if (!failure.is_ok()) {
    // A connection that failed midway may hold half a state; a fresh one is cheap.
    return failure;
  }
  give_back(std::move(conn));
  result.notices.insert(result.notices.begin(), state.notices.begin(), state.notices.end());
  result.elapsed_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  return result;
}

}  // namespace probing::sql
