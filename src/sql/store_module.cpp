// The store-table module: a scan of a ColumnStore snapshot, pruned chunk by chunk by each
// column's zone map (min, max) and, when the ordering column is ascending, in its order without
// a sort.
#include <sqlite3.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "sql/engine_internal.h"

namespace probing::sql {
namespace {

using Registry = Engine::Registry;

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
      if (!c.usable || c.iColumn < 0 || static_cast<size_t>(c.iColumn) >= store.columns().size() ||
          !is_range_op(c.op)) {
        continue;  // _rank and _host (hidden) are filtered by SQLite
      }
      info->aConstraintUsage[i].argvIndex = ++argv;
      bounds += (bounds.empty() ? "" : ",") + std::to_string(c.iColumn) + "/" + std::to_string(c.op);
    }
    int idx = 0;
    if (info->nOrderBy == 1 && info->aOrderBy[0].iColumn >= 0 &&
        static_cast<size_t>(info->aOrderBy[0].iColumn) < store.columns().size() &&
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
        uint8_t tag = col.tag(p.second);
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
  if (job_column(ctx, column, chunk.columns.size())) return SQLITE_OK;
  if (column < 0 || static_cast<size_t>(column) >= chunk.columns.size()) {
    sqlite3_result_null(ctx);
    return SQLITE_OK;
  }
  const ColumnChunk& col = chunk.columns[static_cast<size_t>(column)];
  size_t r = c->row_index();
  switch (col.tag(r)) {
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

}  // namespace

const sqlite3_module& store_module() {
  static const sqlite3_module kModule = make_store_module();
  return kModule;
}

}  // namespace probing::sql
