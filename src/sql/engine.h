// The SQL engine: SQLite, linked statically with its symbols hidden (the target's own sqlite3
// module never sees it). Each schema (python, process, information_schema, ...) is an attached
// in-memory database; every table in it is a virtual table of one of two kinds:
//   - a live table, whose scan asks its provider for a snapshot of rows when the query starts
//     (python.backtrace, process.memory, ...);
//   - a store table, which scans a ColumnStore (process.metrics, probing.table(name)).
// Queries are read-only, bounded in time (query.timeout_s), rows (query.max_rows), reply size
// and memory, and run on the calling thread with a connection of their own.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "sql/column_store.h"
#include "sql/schema.h"

namespace probing::sql {

// What a scan of a live table asks its provider for.
struct ScanRequest {
  uint64_t columns_used = ~0ull;  // bit i: column i is read (bit 63: column 63 and up)
  // Equality constraints on the columns the table named in `pushdown`: (column, value).
  std::vector<std::pair<int, Value>> equals;
  // For a table whose scans run the target's Python with the GIL held (LiveTable::holds_gil): the
  // seconds this scan may hold it, what its earlier scans left of the query's query.gil_budget_s.
  double gil_budget_s = std::numeric_limits<double>::infinity();
  bool uses(size_t column) const { return (columns_used >> std::min<size_t>(column, 63)) & 1; }
};

struct LiveRows {
  std::vector<Row> rows;
  std::vector<std::string> notices;  // shown with the query's result ("read without the GIL")
};

struct LiveTable {
  std::string schema;
  std::string name;
  std::string description;
  std::vector<ColumnDef> columns;
  std::vector<int> pushdown;  // columns whose `= value` constraints reach the provider
  // Called once per scan, on the querying thread. Must be bounded in time.
  std::function<Result<LiveRows>(const ScanRequest&)> fetch;
  // Its scans hold the GIL for work that grows with the target's heap (a census, reprs of locals):
  // all such scans of one query share one budget (ScanRequest::gil_budget_s).
  bool holds_gil = false;
};

struct QueryResult {
  std::vector<std::string> columns;
  std::vector<std::vector<nlohmann::json>> rows;
  bool truncated = false;
  std::vector<std::string> notices;
  double elapsed_ms = 0;
  nlohmann::json to_json() const;
};

struct TableInfo {
  std::string schema, name, kind, description;  // kind: "live" or "store"
  std::vector<ColumnDef> columns;
  std::shared_ptr<ColumnStore> store;  // for a store table
};

class Engine {
 public:
  // The process's engine. Never destroyed.
  static Engine& get();

  // Adds a table. kAlreadyExists for a name in use. Connections opened before see it from
  // their next query.
  Status add_live_table(LiveTable table);
  Status add_store(std::shared_ptr<ColumnStore> store, std::string description);
  std::shared_ptr<ColumnStore> find_store(const std::string& schema, const std::string& name) const;
  std::vector<TableInfo> tables() const;  // sorted by schema, name

  // Runs `sql` (one or more statements; the last one that returns columns gives the result).
  // `SET name = value` changes a setting. kInvalidArgument carries SQLite's message for a bad
  // query; kTimeout when it ran past query.timeout_s.
  Result<QueryResult> query(const std::string& sql);

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  struct Registry;  // engine.cpp: the tables, shared with the virtual-table modules

 private:
  Engine();
  struct Connection;
  Result<std::unique_ptr<Connection>> borrow();
  void give_back(std::unique_ptr<Connection> conn);

  std::shared_ptr<Registry> registry_;
  std::mutex pool_mu_;
  std::vector<std::unique_ptr<Connection>> idle_;
};

// Whether `sql` is a `SET name = value` (a settings change, which needs the full right).
bool is_set_statement(const std::string& sql);

// Adds a notice to the query running on this thread (from a provider). No-op outside a query.
void add_notice(const std::string& notice);

// The schemas every connection attaches.
const std::vector<std::string>& schema_names();

}  // namespace probing::sql
