#include "sql/engine.h"

#include "sql/authorizer.h"

#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <regex>
#include <set>

#include "core/log.h"
#include "core/settings.h"

namespace probing::sql {
namespace {

using Clock = std::chrono::steady_clock;

// State of the query running on this thread: its deadline, what its tables said, what the
// authorizer refused. Virtual-table callbacks run on the querying thread, so they find it here.
struct QueryState {
  Clock::time_point deadline;
  std::vector<std::string> notices;
  std::string denied;  // the statement kind the authorizer refused
  bool timed_out = false;
  // What each live table answered in this query, by table, columns used and pushed-down values:
  // a scan asking the same again (the inner side of a join, once per outer row) is served from
  // here, so a self-join of python.objects takes the census, and holds the GIL, once per side.
  std::map<std::string, std::shared_ptr<const LiveRows>> live_rows;
};
thread_local QueryState* g_query = nullptr;

std::string quote_identifier(const std::string& name) {
  std::string out = "\"";
  for (char c : name) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string declaration(const std::vector<ColumnDef>& columns) {
  std::string sql = "CREATE TABLE x(";
  for (size_t i = 0; i < columns.size(); ++i) {
    sql += (i ? ", " : "") + quote_identifier(columns[i].name) + " " + type_name(columns[i].type);
  }
  return sql + ")";
}

void set_error(sqlite3_vtab* vtab, const std::string& message) {
  sqlite3_free(vtab->zErrMsg);
  vtab->zErrMsg = sqlite3_mprintf("%s", message.c_str());
}

void result_value(sqlite3_context* ctx, const Value& v) {
  if (const long long* i = std::get_if<long long>(&v)) {
    sqlite3_result_int64(ctx, *i);
  } else if (const double* d = std::get_if<double>(&v)) {
    sqlite3_result_double(ctx, *d);
  } else if (const std::string* s = std::get_if<std::string>(&v)) {
    // Copied: min()/max() keep a text value past the next xFilter, which replaces the rows.
    sqlite3_result_text(ctx, s->data(), static_cast<int>(s->size()), SQLITE_TRANSIENT);
  } else {
    sqlite3_result_null(ctx);
  }
}

Value value_of(sqlite3_value* v) {
  switch (sqlite3_value_type(v)) {
    case SQLITE_INTEGER: return static_cast<long long>(sqlite3_value_int64(v));
    case SQLITE_FLOAT: return sqlite3_value_double(v);
    case SQLITE_TEXT: {
      const unsigned char* t = sqlite3_value_text(v);
      return std::string(reinterpret_cast<const char*>(t), static_cast<size_t>(sqlite3_value_bytes(v)));
    }
    default: return std::monostate{};
  }
}

}  // namespace

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

namespace {

using Registry = Engine::Registry;

// ---- Live tables: a snapshot of rows from the provider at xFilter. ----

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
    if (g_query != nullptr) {
      if (auto cached = g_query->live_rows.find(key); cached != g_query->live_rows.end()) {
        cursor->rows = cached->second;
        cursor->at = 0;
        return SQLITE_OK;
      }
    }
    Result<LiveRows> rows = table.fetch(request);
    if (!rows.is_ok()) {
      set_error(base->pVtab, table.schema + "." + table.name + ": " + rows.status().message());
      return SQLITE_ERROR;
    }
    auto fetched = std::make_shared<LiveRows>(std::move(rows).value());
    if (g_query != nullptr) {
      for (std::string& n : fetched->notices)
        g_query->notices.push_back(table.schema + "." + table.name + ": " + n);
      fetched->notices.clear();
      g_query->live_rows.emplace(std::move(key), fetched);
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
const sqlite3_module kLiveModule = make_live_module();

// ---- Store tables: a scan of a ColumnStore snapshot, pruned by zone maps. ----

struct StoreVtab {
  sqlite3_vtab base{};
  std::shared_ptr<ColumnStore> store;
};

struct Bound {
  int column;
  int op;  // SQLITE_INDEX_CONSTRAINT_{EQ,GT,GE,LT,LE}
};

struct StoreCursor {
  sqlite3_vtab_cursor base{};
  ColumnStore::Snapshot snap;
  std::vector<uint32_t> chunks;                       // indexes into snap.chunks, in scan order
  std::vector<std::pair<uint32_t, uint32_t>> sorted;  // (chunk, row) when order had to be sorted
  bool use_sorted = false;
  bool descending = false;
  size_t ci = 0;    // position in `chunks` (or in `sorted`)
  size_t row = 0;   // row within the chunk
  sqlite3_int64 rowid = 0;

  const Chunk& chunk() const { return *snap.chunks[use_sorted ? sorted[ci].first : chunks[ci]]; }
  size_t row_index() const { return use_sorted ? sorted[ci].second : row; }
  bool eof() const { return use_sorted ? ci >= sorted.size() : ci >= chunks.size(); }
};

bool is_range_op(int op) {
  return op == SQLITE_INDEX_CONSTRAINT_EQ || op == SQLITE_INDEX_CONSTRAINT_GT || op == SQLITE_INDEX_CONSTRAINT_GE ||
         op == SQLITE_INDEX_CONSTRAINT_LT || op == SQLITE_INDEX_CONSTRAINT_LE;
}

// Whether no row of `col` can satisfy `col op x`. Only chunks whose cells are all numbers are
// judged; SQLite checks every row it is given anyway, so this only needs to be conservative.
bool excluded(const ColumnChunk& col, int op, double x) {
  if (col.has_other || !col.has_numbers) return false;
  // Past 2^53 doubles no longer tell neighbouring integers apart: judge nothing there.
  constexpr double kExact = 9007199254740992.0;
  if (std::fabs(x) >= kExact || std::fabs(col.min) >= kExact || std::fabs(col.max) >= kExact) return false;
  switch (op) {
    case SQLITE_INDEX_CONSTRAINT_EQ: return x < col.min || x > col.max;
    case SQLITE_INDEX_CONSTRAINT_GT: return col.max <= x;
    case SQLITE_INDEX_CONSTRAINT_GE: return col.max < x;
    case SQLITE_INDEX_CONSTRAINT_LT: return col.min >= x;
    case SQLITE_INDEX_CONSTRAINT_LE: return col.min > x;
    default: return false;
  }
}

int store_connect(sqlite3* db, void* aux, int argc, const char* const* argv, sqlite3_vtab** out, char** err) noexcept {
  try {
    auto* registry = static_cast<Registry*>(aux);
    if (argc < 3) return SQLITE_ERROR;
    std::string key = std::string(argv[1]) + "." + argv[2];
    auto entry = registry->find(key);
    if (entry == nullptr || entry->info.store == nullptr) {
      *err = sqlite3_mprintf("no store %s", key.c_str());
      return SQLITE_ERROR;
    }
    int rc = sqlite3_declare_vtab(db, declaration(entry->info.store->columns()).c_str());
    if (rc != SQLITE_OK) return rc;
    auto* vtab = new StoreVtab;
    vtab->store = entry->info.store;
    *out = &vtab->base;
    return SQLITE_OK;
  } catch (...) {
    return SQLITE_NOMEM;
  }
}

int store_disconnect(sqlite3_vtab* vtab) noexcept {
  delete reinterpret_cast<StoreVtab*>(vtab);
  return SQLITE_OK;
}

// idxNum: bit 0 = ORDER BY consumed, bit 1 = descending, bits 8.. = the ordering column.
// idxStr: "<column>/<op>,..." for the constraints in argv order.
int store_best_index(sqlite3_vtab* vtab, sqlite3_index_info* info) noexcept {
  try {
    const ColumnStore& store = *reinterpret_cast<StoreVtab*>(vtab)->store;
    std::string bounds;
    int argv = 0;
    for (int i = 0; i < info->nConstraint; ++i) {
      const auto& c = info->aConstraint[i];
      if (!c.usable || c.iColumn < 0 || !is_range_op(c.op)) continue;
      info->aConstraintUsage[i].argvIndex = ++argv;
      bounds += (bounds.empty() ? "" : ",") + std::to_string(c.iColumn) + "/" + std::to_string(c.op);
    }
    int idx = 0;
    if (info->nOrderBy == 1 && info->aOrderBy[0].iColumn >= 0 &&
        store.ascending(static_cast<size_t>(info->aOrderBy[0].iColumn))) {
      info->orderByConsumed = 1;
      idx = 1 | (info->aOrderBy[0].desc ? 2 : 0) | (info->aOrderBy[0].iColumn << 8);
    }
    info->idxNum = idx;
    info->idxStr = sqlite3_mprintf("%s", bounds.c_str());
    info->needToFreeIdxStr = 1;
    double rows = static_cast<double>(std::max<size_t>(store.stats().rows, 1));
    info->estimatedRows = static_cast<sqlite3_int64>(argv > 0 ? rows / 10 : rows);
    info->estimatedCost = argv > 0 ? rows / 10 : rows;
    return SQLITE_OK;
  } catch (...) {
    return SQLITE_NOMEM;
  }
}

int store_open(sqlite3_vtab*, sqlite3_vtab_cursor** out) noexcept {
  try {
    *out = &(new StoreCursor)->base;
    return SQLITE_OK;
  } catch (...) {
    return SQLITE_NOMEM;
  }
}

int store_close(sqlite3_vtab_cursor* cursor) noexcept {
  delete reinterpret_cast<StoreCursor*>(cursor);
  return SQLITE_OK;
}

void position_at_start(StoreCursor& c) {
  c.ci = 0;
  c.row = 0;
  if (c.use_sorted || c.chunks.empty()) return;
  if (c.descending) c.row = c.chunk().rows - 1;
}

int store_filter(sqlite3_vtab_cursor* base, int idx_num, const char* idx_str, int argc, sqlite3_value** argv) noexcept {
  auto* c = reinterpret_cast<StoreCursor*>(base);
  const ColumnStore& store = *reinterpret_cast<StoreVtab*>(base->pVtab)->store;
  try {
    c->snap = store.snapshot();
    c->chunks.clear();
    c->sorted.clear();
    c->use_sorted = false;
    c->rowid = 0;
    std::vector<std::pair<Bound, double>> bounds;
    std::string text = idx_str == nullptr ? "" : idx_str;
    size_t at = 0;
    for (int i = 0; i < argc && at < text.size(); ++i) {
      Bound b{std::atoi(text.c_str() + at), 0};
      size_t slash = text.find('/', at);
      if (slash == std::string::npos) break;
      b.op = std::atoi(text.c_str() + slash + 1);
      int type = sqlite3_value_numeric_type(argv[i]);
      if (type == SQLITE_INTEGER || type == SQLITE_FLOAT) bounds.emplace_back(b, sqlite3_value_double(argv[i]));
      at = text.find(',', at);
      if (at == std::string::npos) break;
      ++at;
    }
    for (uint32_t i = 0; i < c->snap.chunks.size(); ++i) {
      const Chunk& chunk = *c->snap.chunks[i];
      if (chunk.rows == 0) continue;
      bool skip = false;
      for (const auto& [b, x] : bounds) {
        // A TEXT column compares as text against a literal: its numeric zone map does not apply.
        if (b.column >= 0 && static_cast<size_t>(b.column) < chunk.columns.size() &&
            store.columns()[static_cast<size_t>(b.column)].type != ColumnType::kText &&
            excluded(chunk.columns[static_cast<size_t>(b.column)], b.op, x)) {
          skip = true;
          break;
        }
      }
      if (!skip) c->chunks.push_back(i);
    }
    bool ordered = (idx_num & 1) != 0;
    c->descending = ordered && (idx_num & 2) != 0;
    size_t order_column = static_cast<size_t>(idx_num >> 8);
    if (ordered && !store.ascending(order_column)) {
      // The column stopped being ascending after the plan was made: sort what the scan keeps.
      for (uint32_t ci : c->chunks) {
        for (uint32_t r = 0; r < c->snap.chunks[ci]->rows; ++r) c->sorted.emplace_back(ci, r);
      }
      auto key = [&](const std::pair<uint32_t, uint32_t>& p) {
        const ColumnChunk& col = c->snap.chunks[p.first]->columns[order_column];
        uint8_t tag = col.tags[p.second];
        return tag == ColumnChunk::kInt || tag == ColumnChunk::kReal ? col.number_at(p.second) : -INFINITY;
      };
      std::stable_sort(c->sorted.begin(), c->sorted.end(), [&](const auto& a, const auto& b) {
        return c->descending ? key(a) > key(b) : key(a) < key(b);
      });
      c->use_sorted = true;
    } else if (c->descending) {
      std::reverse(c->chunks.begin(), c->chunks.end());
    }
    position_at_start(*c);
    return SQLITE_OK;
  } catch (const std::exception& e) {
    set_error(base->pVtab, store.schema() + "." + store.name() + ": " + e.what());
    return SQLITE_ERROR;
  } catch (...) {
    return SQLITE_ERROR;
  }
}

int store_next(sqlite3_vtab_cursor* base) noexcept {
  auto* c = reinterpret_cast<StoreCursor*>(base);
  ++c->rowid;
  if (c->use_sorted) {
    ++c->ci;
    return SQLITE_OK;
  }
  if (c->descending) {
    if (c->row > 0) {
      --c->row;
      return SQLITE_OK;
    }
    if (++c->ci < c->chunks.size()) c->row = c->chunk().rows - 1;
    return SQLITE_OK;
  }
  if (++c->row >= c->chunk().rows) {
    ++c->ci;
    c->row = 0;
  }
  return SQLITE_OK;
}

int store_eof(sqlite3_vtab_cursor* base) noexcept { return reinterpret_cast<StoreCursor*>(base)->eof(); }

int store_column(sqlite3_vtab_cursor* base, sqlite3_context* ctx, int column) noexcept {
  auto* c = reinterpret_cast<StoreCursor*>(base);
  const Chunk& chunk = c->chunk();
  if (column < 0 || static_cast<size_t>(column) >= chunk.columns.size()) {
    sqlite3_result_null(ctx);
    return SQLITE_OK;
  }
  const ColumnChunk& col = chunk.columns[static_cast<size_t>(column)];
  size_t r = c->row_index();
  switch (col.tags[r]) {
    case ColumnChunk::kInt: sqlite3_result_int64(ctx, col.int_at(r)); break;
    case ColumnChunk::kReal: sqlite3_result_double(ctx, col.real_at(r)); break;
    case ColumnChunk::kText: {
      // Copied: min()/max() keep a text value past the next xFilter, which replaces the snapshot.
      const std::string& s = col.text_at(r);
      sqlite3_result_text(ctx, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
      break;
    }
    default: sqlite3_result_null(ctx);
  }
  return SQLITE_OK;
}

int store_rowid(sqlite3_vtab_cursor* base, sqlite3_int64* rowid) noexcept {
  *rowid = reinterpret_cast<StoreCursor*>(base)->rowid;
  return SQLITE_OK;
}

sqlite3_module make_store_module() {
  sqlite3_module m{};
  m.iVersion = 1;
  m.xCreate = store_connect;
  m.xConnect = store_connect;
  m.xBestIndex = store_best_index;
  m.xDisconnect = store_disconnect;
  m.xDestroy = store_disconnect;
  m.xOpen = store_open;
  m.xClose = store_close;
  m.xFilter = store_filter;
  m.xNext = store_next;
  m.xEof = store_eof;
  m.xColumn = store_column;
  m.xRowid = store_rowid;
  return m;
}
const sqlite3_module kStoreModule = make_store_module();

// ---- Read-only queries. ----

// SQLite's authorizer callback: the decision is authorizer.cpp's; what it refused is kept for
// the query's error message.
int authorize_query(void*, int action, const char* arg1, const char* arg2, const char*, const char*) noexcept {
  return authorize(action, arg1, arg2, g_query != nullptr ? &g_query->denied : nullptr);
}

int on_progress(void*) noexcept {
  if (g_query == nullptr || Clock::now() < g_query->deadline) return 0;
  g_query->timed_out = true;
  return 1;
}

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

struct Engine::Connection {
  sqlite3* db = nullptr;
  uint64_t version = 0;
  std::set<std::string> attached;
  std::set<std::string> created;
  ~Connection() {
    if (db != nullptr) sqlite3_close_v2(db);
  }
};

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
  if (g_query != nullptr) g_query->notices.push_back(notice);
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
    sqlite3_create_module_v2(conn->db, "probing_live", &kLiveModule, registry_.get(), nullptr);
    sqlite3_create_module_v2(conn->db, "probing_store", &kStoreModule, registry_.get(), nullptr);
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
  g_query = &state;
  struct Reset {
    ~Reset() { g_query = nullptr; }
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
