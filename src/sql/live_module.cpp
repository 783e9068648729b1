// The live-table module: each scan asks the table's provider for a snapshot of rows at xFilter,
// with the columns the query reads and the `=` values it can push down; what a provider answered
// is kept for the rest of the query (the inner side of a join asks again once per outer row).
#include <sqlite3.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "sql/engine_internal.h"

namespace probing::sql {
namespace {

using Registry = Engine::Registry;

struct LiveVtab {
  sqlite3_vtab base{};
  std::shared_ptr<const LiveTable> table;
};

struct LiveCursor {
  sqlite3_vtab_cursor base{};
  std::shared_ptr<const LiveRows> rows = std::make_shared<const LiveRows>();
  size_t at = 0;
};

int live_connect(sqlite3* db, void* aux, int argc, const char* const* argv, sqlite3_vtab** out, char** err) noexcept {
  try {
    auto* registry = static_cast<Registry*>(aux);
    if (argc < 3) return SQLITE_ERROR;
    std::string key = std::string(argv[1]) + "." + argv[2];
    auto entry = registry->find(key);
    if (entry == nullptr || entry->live == nullptr) {
      *err = sqlite3_mprintf("no live table %s", key.c_str());
      return SQLITE_ERROR;
    }
    int rc = sqlite3_declare_vtab(db, declaration(entry->live->columns).c_str());
    if (rc != SQLITE_OK) return rc;
    auto* vtab = new LiveVtab;
    vtab->table = entry->live;
    *out = &vtab->base;
    return SQLITE_OK;
  } catch (...) {
    return SQLITE_NOMEM;
  }
}

int live_disconnect(sqlite3_vtab* vtab) noexcept {
  delete reinterpret_cast<LiveVtab*>(vtab);
  return SQLITE_OK;
}

// idxStr: "<columns used>[:<column>,<column>...]", the columns whose `=` constraints are passed,
// in argv order.
int live_best_index(sqlite3_vtab* vtab, sqlite3_index_info* info) noexcept {
  try {
    const LiveTable& table = *reinterpret_cast<LiveVtab*>(vtab)->table;
    std::string pushed;
    int argv = 0;
    for (int i = 0; i < info->nConstraint; ++i) {
      const auto& c = info->aConstraint[i];
      if (!c.usable || c.op != SQLITE_INDEX_CONSTRAINT_EQ) continue;
      if (std::find(table.pushdown.begin(), table.pushdown.end(), c.iColumn) == table.pushdown.end()) continue;
      info->aConstraintUsage[i].argvIndex = ++argv;
      pushed += (pushed.empty() ? "" : ",") + std::to_string(c.iColumn);
    }
    std::string idx = std::to_string(static_cast<unsigned long long>(info->colUsed)) + (pushed.empty() ? "" : ":" + pushed);
    info->idxStr = sqlite3_mprintf("%s", idx.c_str());
    info->needToFreeIdxStr = 1;
    info->estimatedCost = argv > 0 ? 10 : 1000;
    info->estimatedRows = argv > 0 ? 10 : 1000;
    return SQLITE_OK;
  } catch (...) {
    return SQLITE_NOMEM;
  }
}

int live_open(sqlite3_vtab*, sqlite3_vtab_cursor** out) noexcept {
  try {
    *out = &(new LiveCursor)->base;
    return SQLITE_OK;
  } catch (...) {
    return SQLITE_NOMEM;
  }
}

int live_close(sqlite3_vtab_cursor* cursor) noexcept {
  delete reinterpret_cast<LiveCursor*>(cursor);
  return SQLITE_OK;
}

// A pushed-down value as part of a cache key: its type, then its text.
std::string value_key(const Value& v) {
  if (const auto* i = std::get_if<long long>(&v)) return "i" + std::to_string(*i);
  if (const auto* d = std::get_if<double>(&v)) return "d" + std::to_string(*d);
  if (const auto* t = std::get_if<std::string>(&v)) return "t" + std::to_string(t->size()) + ":" + *t;
  return "n";
}

int live_filter(sqlite3_vtab_cursor* base, int, const char* idx, int argc, sqlite3_value** argv) noexcept {
  auto* cursor = reinterpret_cast<LiveCursor*>(base);
  const LiveTable& table = *reinterpret_cast<LiveVtab*>(base->pVtab)->table;
  try {
    ScanRequest request;
    std::string text = idx == nullptr ? "" : idx;
    request.columns_used = std::strtoull(text.c_str(), nullptr, 10);
    if (size_t colon = text.find(':'); colon != std::string::npos) {
      size_t at = colon + 1;
      for (int i = 0; i < argc && at <= text.size(); ++i) {
        int column = std::atoi(text.c_str() + at);
        request.equals.emplace_back(column, value_of(argv[i]));
        at = text.find(',', at);
        if (at == std::string::npos) break;
        ++at;
      }
    }
    std::string key = table.schema + "." + table.name + "/" + std::to_string(request.columns_used);
    for (const auto& [column, value] : request.equals)
      key += "/" + std::to_string(column) + "=" + value_key(value);
    if (t_query != nullptr) {
      if (auto cached = t_query->live_rows.find(key); cached != t_query->live_rows.end()) {
        cursor->rows = cached->second;
        cursor->at = 0;
        return SQLITE_OK;
      }
    }
    const bool budgeted = table.holds_gil && t_query != nullptr;
    if (budgeted) request.gil_budget_s = std::max(0.0, t_query->gil_budget_left_s);
    const Clock::time_point fetch_start = Clock::now();
    Result<LiveRows> rows = table.fetch(request);
    if (budgeted) {
      t_query->gil_budget_left_s -= std::chrono::duration<double>(Clock::now() - fetch_start).count();
    }
    if (!rows.is_ok()) {
      set_error(base->pVtab, table.schema + "." + table.name + ": " + rows.status().message());
      return SQLITE_ERROR;
    }
    auto fetched = std::make_shared<LiveRows>(std::move(rows).value());
    if (t_query != nullptr) {
      for (std::string& n : fetched->notices)
        t_query->notices.push_back(table.schema + "." + table.name + ": " + n);
      fetched->notices.clear();
      t_query->live_rows.emplace(std::move(key), fetched);
    }
    cursor->rows = std::move(fetched);
    cursor->at = 0;
    return SQLITE_OK;
  } catch (const std::exception& e) {
    set_error(base->pVtab, table.schema + "." + table.name + ": " + e.what());
    return SQLITE_ERROR;
  } catch (...) {
    return SQLITE_ERROR;
  }
}

int live_next(sqlite3_vtab_cursor* base) noexcept {
  ++reinterpret_cast<LiveCursor*>(base)->at;
  return SQLITE_OK;
}

int live_eof(sqlite3_vtab_cursor* base) noexcept {
  auto* c = reinterpret_cast<LiveCursor*>(base);
  return c->at >= c->rows->rows.size();
}

int live_column(sqlite3_vtab_cursor* base, sqlite3_context* ctx, int column) noexcept {
  auto* c = reinterpret_cast<LiveCursor*>(base);
  const Row& row = c->rows->rows[c->at];
  const auto* vtab = reinterpret_cast<const LiveVtab*>(base->pVtab);
  if (job_column(ctx, column, vtab->table->columns.size())) return SQLITE_OK;
  if (column >= 0 && static_cast<size_t>(column) < row.size()) {
    result_value(ctx, row[static_cast<size_t>(column)]);
  } else {
    sqlite3_result_null(ctx);
  }
  return SQLITE_OK;
}

int live_rowid(sqlite3_vtab_cursor* base, sqlite3_int64* rowid) noexcept {
  *rowid = static_cast<sqlite3_int64>(reinterpret_cast<LiveCursor*>(base)->at);
  return SQLITE_OK;
}

sqlite3_module make_live_module() {
  sqlite3_module m{};
  m.iVersion = 1;
  m.xCreate = live_connect;
  m.xConnect = live_connect;
  m.xBestIndex = live_best_index;
  m.xDisconnect = live_disconnect;
  m.xDestroy = live_disconnect;
  m.xOpen = live_open;
  m.xClose = live_close;
  m.xFilter = live_filter;
  m.xNext = live_next;
  m.xEof = live_eof;
  m.xColumn = live_column;
  m.xRowid = live_rowid;
  return m;
}

}  // namespace

const sqlite3_module& live_module() {
  static const sqlite3_module kModule = make_live_module();
  return kModule;
}

}  // namespace probing::sql
