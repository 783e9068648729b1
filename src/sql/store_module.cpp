// The store-table module: a scan of a ColumnStore snapshot, pruned chunk by chunk by each
// column's zone map (min, max) and, when the ordering column is ascending, in its order without
// a sort.
#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "sql/engine_internal.h"

namespace probing::sql {
namespace {

using Registry = Engine::Registry;

constexpr size_t kMaxGroupColumns = 4;  // GROUP BY terms the store groups by itself

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

// idxNum: bit 0 = ORDER BY consumed, bit 1 = descending, bits 8.. = the ordering column; bit 2 =
// rows grouped (GROUP BY or DISTINCT) on the columns idxStr begins with.
// idxStr: "g<column>.<column>..;" when grouped (a column preceded by '-' when descending), then
// "<column>/<op>,..." for the constraints in argv order.
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
    // GROUP BY (1) and DISTINCT (2) only need equal rows adjacent: the scan hashes them into
    // groups, which spares SQLite's sorter its sort (the store's columns, not _rank or _host).
    // The groups come in the terms' order all the same: SQLite 3.40 also says 1 where an ORDER BY
    // of the same terms then relies on the order.
    std::string group;
    const int distinct = sqlite3_vtab_distinct(info);
    if (idx == 0 && (distinct == 1 || distinct == 2) && info->nOrderBy > 0 &&
        info->nOrderBy <= static_cast<int>(kMaxGroupColumns)) {
      for (int i = 0; i < info->nOrderBy; ++i) {
        const int column = info->aOrderBy[i].iColumn;
        if (column < 0 || static_cast<size_t>(column) >= store.columns().size()) {
          group.clear();
          break;
        }
        group += i == 0 ? "g" : ".";
        group += (info->aOrderBy[i].desc ? "-" : "") + std::to_string(column);
      }
      if (!group.empty()) {
        info->orderByConsumed = 1;
        idx = 4;
        group += ";";
      }
    }
    info->idxNum = idx;
    info->idxStr = sqlite3_mprintf("%s%s", group.c_str(), bounds.c_str());
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

// A row's values in the grouping columns, as SQLite tells them apart for GROUP BY (`IS`): NULLs
// equal, an integer and a double equal when they are the same number, text by its bytes (the
// columns' collation is BINARY). Text is named by an id of the scan's own, so that two chunks'
// dictionaries agree.
struct GroupKey {
  std::array<uint64_t, kMaxGroupColumns> value{};
  std::array<uint8_t, kMaxGroupColumns> kind{};  // 0 NULL, 1 integer, 2 other double, 3 text
  bool operator==(const GroupKey&) const = default;
};

struct GroupKeyHash {
  size_t operator()(const GroupKey& k) const noexcept {
    uint64_t h = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < kMaxGroupColumns; ++i) {
      h ^= k.value[i] + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
      h ^= k.kind[i] + (h << 6) + (h >> 2);
    }
    return static_cast<size_t>(h);
  }
};

// Whether key a comes before key b in SQLite's order (NULL, then numbers by value, then text by its
// bytes), column by column, each ascending or (desc) descending.
bool key_before(const GroupKey& a, const GroupKey& b, const std::vector<std::string_view>& texts,
                const std::vector<bool>& desc) {
  for (size_t g = 0; g < desc.size(); ++g) {
    const int ka = a.kind[g] == 2 ? 1 : a.kind[g], kb = b.kind[g] == 2 ? 1 : b.kind[g];  // numbers together
    int order = ka < kb ? -1 : ka > kb ? 1 : 0;
    if (order == 0 && ka == 1) {
      auto number = [](const GroupKey& k, size_t i) -> long double {
        return k.kind[i] == 1 ? static_cast<long double>(static_cast<long long>(k.value[i]))
                              : static_cast<long double>(std::bit_cast<double>(k.value[i]));
      };
      const long double x = number(a, g), y = number(b, g);  // exact for every int64 and double
      order = x < y ? -1 : x > y ? 1 : 0;
    } else if (order == 0 && ka == 3) {
      const int c = texts[a.value[g]].compare(texts[b.value[g]]);
      order = c < 0 ? -1 : c > 0 ? 1 : 0;
    }
    if (order != 0) return desc[g] ? order > 0 : order < 0;
  }
  return false;
}

// -1, 0 or 1 as cell (x, rx) comes before, with or after cell (y, ry) in SQLite's order.
int compare_cells(const ColumnChunk& x, size_t rx, const ColumnChunk& y, size_t ry) {
  auto rank = [](ColumnChunk::Tag t) {
    return t == ColumnChunk::kNull ? 0 : t == ColumnChunk::kText ? 2 : 1;  // NULL, numbers, text
  };
  const ColumnChunk::Tag tx = x.tag(rx), ty = y.tag(ry);
  if (rank(tx) != rank(ty)) return rank(tx) < rank(ty) ? -1 : 1;
  if (rank(tx) == 1) {
    auto number = [](const ColumnChunk& c, size_t r, ColumnChunk::Tag t) -> long double {
      return t == ColumnChunk::kInt ? static_cast<long double>(c.int_at(r))
                                    : static_cast<long double>(c.real_at(r));
    };
    const long double a = number(x, rx, tx), b = number(y, ry, ty);
    return a < b ? -1 : a > b ? 1 : 0;
  }
  if (rank(tx) == 2) {
    const int c = x.text_at(rx).compare(y.text_at(ry));
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  return 0;
}

// group_rows for a grouping of many distinct values: the rows sorted by them instead, in the 8
// bytes a row the ORDER BY sort takes, rather than a hash table as large as the rows.
void sort_rows(StoreCursor& c, const std::vector<size_t>& columns, const std::vector<bool>& desc) {
  c.sorted.clear();
  for (uint32_t ci : c.chunks) {
    for (uint32_t r = 0; r < c.snap.chunks[ci]->rows; ++r) c.sorted.emplace_back(ci, r);
  }
  std::stable_sort(c.sorted.begin(), c.sorted.end(), [&](const auto& a, const auto& b) {
    const Chunk& ca = *c.snap.chunks[a.first];
    const Chunk& cb = *c.snap.chunks[b.first];
    for (size_t g = 0; g < columns.size(); ++g) {
      const int order = compare_cells(ca.columns[columns[g]], a.second, cb.columns[columns[g]], b.second);
      if (order != 0) return desc[g] ? order > 0 : order < 0;
    }
    return false;
  });
  c.use_sorted = true;
}

// Orders the scan's rows (c.chunks, already pruned) so that rows equal in `columns` are adjacent:
// each row's key is hashed to its group, the groups are sorted (few, against the rows), and a
// counting pass lays them out one after another, each in scan order. Linear in the rows, where
// SQLite's sorter would sort them. Past kMaxGroups groups (or distinct strings) it sorts the rows
// instead (sort_rows), so that its memory stays a few bytes a row.
void group_rows(StoreCursor& c, const std::vector<size_t>& columns, const std::vector<bool>& desc) {
  constexpr size_t kMaxGroups = 1 << 16;
  constexpr double kTwo63 = 9223372036854775808.0;
  std::unordered_map<std::string_view, uint32_t> text_ids;
  std::unordered_map<GroupKey, uint32_t, GroupKeyHash> groups;
  std::vector<uint32_t> group_of;  // per row of the scan, in scan order
  std::vector<std::vector<uint32_t>> local_ids(columns.size());
  for (uint32_t ci : c.chunks) {
    const Chunk& chunk = *c.snap.chunks[ci];
    for (size_t g = 0; g < columns.size(); ++g) {
      const std::vector<std::string>& dict = chunk.columns[columns[g]].dict();
      local_ids[g].resize(dict.size());
      for (size_t d = 0; d < dict.size(); ++d) {
        local_ids[g][d] = text_ids.try_emplace(dict[d], static_cast<uint32_t>(text_ids.size())).first->second;
      }
    }
    if (text_ids.size() > kMaxGroups) return sort_rows(c, columns, desc);
    for (size_t r = 0; r < chunk.rows; ++r) {
      GroupKey key;
      for (size_t g = 0; g < columns.size(); ++g) {
        const ColumnChunk& col = chunk.columns[columns[g]];
        switch (col.tag(r)) {
          case ColumnChunk::kInt:
            key.kind[g] = 1;
            key.value[g] = static_cast<uint64_t>(col.int_at(r));
            break;
          case ColumnChunk::kReal: {
            const double v = col.real_at(r);
            if (v == std::trunc(v) && v >= -kTwo63 && v < kTwo63) {  // a whole number: as the integer
              key.kind[g] = 1;
              key.value[g] = static_cast<uint64_t>(static_cast<long long>(v));
            } else {
              key.kind[g] = 2;
              key.value[g] = std::bit_cast<uint64_t>(v);
            }
            break;
          }
          case ColumnChunk::kText: {
            key.kind[g] = 3;
            const std::string& s = col.text_at(r);
            key.value[g] = local_ids[g][static_cast<size_t>(&s - col.dict().data())];
            break;
          }
          default: break;
        }
      }
      group_of.push_back(groups.try_emplace(key, static_cast<uint32_t>(groups.size())).first->second);
      if (groups.size() > kMaxGroups) return sort_rows(c, columns, desc);
    }
  }
  std::vector<std::string_view> texts(text_ids.size());
  for (const auto& [text, id] : text_ids) texts[id] = text;
  std::vector<const GroupKey*> keys(groups.size());
  for (const auto& [key, id] : groups) keys[id] = &key;
  std::vector<uint32_t> order(groups.size());
  for (uint32_t g = 0; g < order.size(); ++g) order[g] = g;
  std::sort(order.begin(), order.end(),
            [&](uint32_t a, uint32_t b) { return key_before(*keys[a], *keys[b], texts, desc); });
  std::vector<uint32_t> rank(groups.size());
  for (uint32_t i = 0; i < order.size(); ++i) rank[order[i]] = i;
  for (uint32_t& g : group_of) g = rank[g];
  std::vector<uint32_t> start(groups.size() + 1, 0);
  for (uint32_t g : group_of) ++start[g + 1];
  for (size_t g = 1; g < start.size(); ++g) start[g] += start[g - 1];
  c.sorted.assign(group_of.size(), {0, 0});
  size_t i = 0;
  for (uint32_t ci : c.chunks) {
    for (uint32_t r = 0; r < c.snap.chunks[ci]->rows; ++r) c.sorted[start[group_of[i++]]++] = {ci, r};
  }
  c.use_sorted = true;
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
    std::vector<size_t> group_columns;
    std::vector<bool> group_desc;
    if ((idx_num & 4) != 0 && text.starts_with("g")) {
      const size_t end = text.find(';');
      for (size_t at = 1; at < end && at < text.size();) {
        group_desc.push_back(text[at] == '-');
        if (text[at] == '-') ++at;
        group_columns.push_back(static_cast<size_t>(std::atoi(text.c_str() + at)));
        at = text.find('.', at);
        if (at == std::string::npos || at > end) break;
        ++at;
      }
      text = end == std::string::npos ? "" : text.substr(end + 1);
    }
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
    if (!group_columns.empty()) {
      group_rows(*c, group_columns, group_desc);
      position_at_start(*c);
      return SQLITE_OK;
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
