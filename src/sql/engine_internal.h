// What the SQL engine's parts share: the table registry, a pooled connection, the state of the
// query running on this thread, and the conversions between SQLite's values and the engine's.
// Internal to src/sql.
#pragma once

#include <sqlite3.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "sql/engine.h"

namespace probing::sql {

using Clock = std::chrono::steady_clock;

// Every table any connection may attach, by "schema.name". Shared by the engine and the virtual
// table modules (their client data).
struct Engine::Registry {
  struct Entry {
    TableInfo info;
    std::shared_ptr<const LiveTable> live;
  };
  mutable std::mutex mu;
  std::map<std::string, std::shared_ptr<const Entry>> tables;
  uint64_t version = 0;

  std::shared_ptr<const Entry> find(const std::string& key) const {
    std::lock_guard<std::mutex> lock(mu);
    auto it = tables.find(key);
    return it == tables.end() ? nullptr : it->second;
  }
};

// An open SQLite connection with the schemas and tables it has made so far (connection_pool.cpp).
struct Engine::Connection {
  sqlite3* db = nullptr;
  uint64_t version = 0;
  std::set<std::string> attached;
  std::set<std::string> created;
  ~Connection() {
    if (db != nullptr) sqlite3_close_v2(db);
  }
};

// State of the query running on this thread: its deadline, what its tables said, what the
// authorizer refused. Virtual-table callbacks run on the querying thread, so they find it here.
struct QueryState {
  Clock::time_point deadline;
  std::vector<std::string> notices;
  std::string denied;  // the statement kind the authorizer refused
  bool timed_out = false;
  // What each live table answered in this query, by table, columns used and pushed-down values:
  // a scan asking the same again (the inner side of a join, once per outer row) is served from
  // here, so a self-join of python.objects takes the census at most once per side.
  std::map<std::string, std::shared_ptr<const LiveRows>> live_rows;
  // Seconds the scans of GIL-holding tables may still take (query.gil_budget_s at the start): a
  // self-join of python.objects, or locals read for every thread, hold the GIL that long in all.
  double gil_budget_left_s = 0;
};
// The query running on this thread, or nullptr (set by Engine::query for its duration).
extern thread_local QueryState* t_query;

std::string quote_identifier(const std::string& name);
// "CREATE TABLE x(...)" for sqlite3_declare_vtab.
// Every table also has two hidden columns, _rank and _host: which rank of a job (NULL outside
// one) and which host the row comes from, so that one query reads the same on every rank of a
// `probing cluster query` and its answers can be told apart and regrouped.
std::string declaration(const std::vector<ColumnDef>& columns);
// The value of hidden column `column` of a table with `visible` columns; false for a visible one.
bool job_column(sqlite3_context* ctx, int column, size_t visible);
void set_error(sqlite3_vtab* vtab, const std::string& message);
void result_value(sqlite3_context* ctx, const Value& v);
Value value_of(sqlite3_value* v);

// The two virtual-table modules; their client data is the Registry.
const sqlite3_module& live_module();   // live_module.cpp
const sqlite3_module& store_module();  // store_module.cpp

}  // namespace probing::sql
