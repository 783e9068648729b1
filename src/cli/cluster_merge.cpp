#include "cli/cluster_merge.h"

#include <sqlite3.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <set>
#include <sstream>

#include "sqlext/functions.h"

namespace probing::cli {
namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// ---- SQL tokens: just enough of SQLite's lexer to find a statement's top-level clauses. ----

struct Token {
  enum Kind { kWord, kQuoted, kString, kNumber, kPunct } kind = kPunct;
  std::string text;  // a word lower-cased; a quoted identifier without its quotes
  size_t begin = 0, end = 0;
};

std::vector<Token> tokenize(const std::string& sql) {
  std::vector<Token> out;
  size_t i = 0;
  const size_t n = sql.size();
  auto is_word = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$' || (c & 0x80);
  };
  while (i < n) {
    const char c = sql[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (c == '-' && i + 1 < n && sql[i + 1] == '-') {
      while (i < n && sql[i] != '\n') ++i;
    } else if (c == '/' && i + 1 < n && sql[i + 1] == '*') {
      const size_t close = sql.find("*/", i + 2);
      i = close == std::string::npos ? n : close + 2;
    } else if (c == '\'' || c == '"' || c == '`' || c == '[') {
      const char close = c == '[' ? ']' : c;
      Token t{c == '\'' ? Token::kString : Token::kQuoted, "", i, 0};
      ++i;
      while (i < n) {
        if (sql[i] == close) {
          if (close != ']' && i + 1 < n && sql[i + 1] == close) {  // a doubled quote
            t.text += close;
            i += 2;
            continue;
          }
          break;
        }
        t.text += sql[i++];
      }
      i = std::min(n, i + 1);
      t.end = i;
      if (t.kind == Token::kQuoted) t.text = lower(t.text);
      out.push_back(std::move(t));
    } else if (std::isdigit(static_cast<unsigned char>(c)) ||
               (c == '.' && i + 1 < n && std::isdigit(static_cast<unsigned char>(sql[i + 1])))) {
      Token t{Token::kNumber, "", i, 0};
      while (i < n && (is_word(sql[i]) || sql[i] == '.')) ++i;
      t.end = i;
      t.text = sql.substr(t.begin, i - t.begin);
      out.push_back(std::move(t));
    } else if (is_word(c)) {
      Token t{Token::kWord, "", i, 0};
      while (i < n && is_word(sql[i])) ++i;
      t.end = i;
      t.text = lower(sql.substr(t.begin, i - t.begin));
      out.push_back(std::move(t));
    } else {
      out.push_back({Token::kPunct, std::string(1, c), i, i + 1});
      ++i;
    }
  }
  while (!out.empty() && out.back().text == ";") out.pop_back();
  return out;
}

bool is_word(const Token& t, const char* w) { return t.kind == Token::kWord && t.text == w; }

const std::set<std::string>& aggregates() {
  static const std::set<std::string> names = [] {
    std::set<std::string> s = {"count", "sum", "total", "avg", "min", "max", "group_concat", "string_agg"};
    // Of probing's functions, all but the scalar ones aggregate.
    for (std::string_view f : sql::kProbingFunctions) {
      if (f != "time_bucket" && f != "to_timestamp") s.emplace(f);
    }
    return s;
  }();
  return names;
}

// Where each top-level clause of a SELECT starts (token index), and what the statement holds.
struct Shape {
  bool with = false, compound = false, subquery = false, distinct = false, window = false;
  bool aggregate = false, offset = false, joins = false;
  int from = -1, where = -1, group = -1, having = -1, order = -1, limit = -1, end = 0;
  std::vector<std::vector<int>> group_terms;  // token indexes of each GROUP BY term
};

Shape shape_of(const std::vector<Token>& t) {
  Shape s;
  s.end = static_cast<int>(t.size());
  if (t.empty()) return s;
  s.with = is_word(t[0], "with");
  std::vector<bool> parens;  // per open parenthesis: whether it opens a subquery
  int clause = -1;           // the top-level clause we are in: 0 select, 1 from, 2 where, 3 group, ...
  for (size_t i = 0; i < t.size(); ++i) {
    const Token& k = t[i];
    const bool in_sub = std::find(parens.begin(), parens.end(), true) != parens.end();
    if (k.text == "(" && k.kind == Token::kPunct) {
      const bool sub = i + 1 < t.size() && (is_word(t[i + 1], "select") || is_word(t[i + 1], "with") ||
                                            is_word(t[i + 1], "values"));
      if (sub) s.subquery = true;
      parens.push_back(sub);
      continue;
    }
    if (k.text == ")" && k.kind == Token::kPunct) {
      if (!parens.empty()) parens.pop_back();
      continue;
    }
    if (!in_sub && k.kind == Token::kWord && i + 1 < t.size() && t[i + 1].text == "(" &&
        aggregates().count(k.text)) {
      // min(a, b) and max(a, b) with two arguments are scalar.
      int depth = 0, commas = 0;
      for (size_t j = i + 1; j < t.size(); ++j) {
        if (t[j].text == "(" && t[j].kind == Token::kPunct) ++depth;
        if (t[j].text == ")" && t[j].kind == Token::kPunct && --depth == 0) break;
        if (depth == 1 && t[j].text == ",") ++commas;
      }
      if (!((k.text == "min" || k.text == "max") && commas > 0)) s.aggregate = true;
    }
    if (!in_sub && is_word(k, "over")) s.window = true;
    if (!parens.empty()) continue;
    if (k.kind != Token::kWord) {
      if (k.text == "," && clause == 1) s.joins = true;
      if (k.text == "," && clause == 5) s.offset = true;  // LIMIT offset, count
      if (k.text == "," && clause == 3)
        s.group_terms.emplace_back();
      else if (clause == 3 && !s.group_terms.empty())
        s.group_terms.back().push_back(static_cast<int>(i));
      continue;
    }
    const std::string& w = k.text;
    if (w == "select" && clause < 0) {
      clause = 0;
      if (i + 1 < t.size() && is_word(t[i + 1], "distinct")) s.distinct = true;
    } else if (w == "union" || w == "intersect" || w == "except") {
      s.compound = true;
    } else if (w == "from" && clause == 0) {
      clause = 1, s.from = static_cast<int>(i);
    } else if (w == "join" && clause == 1) {
      s.joins = true;
    } else if (w == "where" && clause >= 0 && clause < 2) {
      clause = 2, s.where = static_cast<int>(i);
    } else if (w == "group" && clause >= 0 && clause < 3 && i + 1 < t.size() && is_word(t[i + 1], "by")) {
      clause = 3, s.group = static_cast<int>(i), s.group_terms.emplace_back();
      ++i;
    } else if (w == "having" && clause >= 0) {
      clause = 4, s.having = static_cast<int>(i);
    } else if (w == "window" && clause >= 0) {
      clause = 4;
    } else if (w == "order" && clause >= 0 && i + 1 < t.size() && is_word(t[i + 1], "by")) {
      clause = 6, s.order = static_cast<int>(i);
      ++i;
    } else if (w == "limit" && clause >= 0) {
      clause = 5, s.limit = static_cast<int>(i);
    } else if (w == "offset" && clause == 5) {
      s.offset = true;
    } else if (clause == 3 && !s.group_terms.empty()) {
      s.group_terms.back().push_back(static_cast<int>(i));
    }
  }
  return s;
}

// ---- The in-memory SQLite of the client. ----

struct Db {
  sqlite3* db = nullptr;
  ~Db() { sqlite3_close(db); }
};

struct Stmt {
  sqlite3_stmt* st = nullptr;
  ~Stmt() { sqlite3_finalize(st); }
};

std::string quote(const std::string& name) {
  std::string out = "\"";
  for (char c : name) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

Result<std::unique_ptr<Db>> open_db() {
  auto db = std::make_unique<Db>();
  if (sqlite3_open(":memory:", &db->db) != SQLITE_OK)
    return Status(Code::kInternal, "cannot open an in-memory SQLite");
  sql::register_functions(db->db);
  return db;
}

Status exec(Db& db, const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db.db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string message = err ? err : "SQL error";
    sqlite3_free(err);
    return Status(Code::kInvalidArgument, message);
  }
  return Status::ok();
}

// "schema.table" -> {schema, table}; a bare name is in main.
std::pair<std::string, std::string> split_name(const std::string& name) {
  const size_t dot = name.find('.');
  if (dot == std::string::npos) return {"main", name};
  return {name.substr(0, dot), name.substr(dot + 1)};
}

using Catalog = std::map<std::string, std::vector<std::pair<std::string, std::string>>>;

// The catalog's tables, empty, in schemas attached under their names; every one with _rank and
// _host first.
Status create_tables(Db& db, const Catalog& catalog) {
  std::set<std::string> attached{"main", "temp"};
  for (const auto& [name, columns] : catalog) {
    auto [schema, table] = split_name(name);
    if (attached.insert(schema).second) {
      if (Status st = exec(db, "ATTACH ':memory:' AS " + quote(schema)); !st.is_ok()) return st;
    }
    std::string ddl = "CREATE TABLE " + quote(schema) + "." + quote(table) + "(_rank INTEGER, _host TEXT";
    for (const auto& [column, type] : columns) {
      if (lower(column) == "_rank" || lower(column) == "_host") continue;
      ddl += ", " + quote(column) + " " + (type.empty() ? std::string("ANY") : type);
    }
    if (Status st = exec(db, ddl + ")"); !st.is_ok()) return st;
  }
  return Status::ok();
}

void bind_json(sqlite3_stmt* st, int i, const nlohmann::json& v) {
  if (v.is_null()) {
    sqlite3_bind_null(st, i);
  } else if (v.is_number_integer()) {
    sqlite3_bind_int64(st, i, v.get<long long>());
  } else if (v.is_number()) {
    sqlite3_bind_double(st, i, v.get<double>());
  } else if (v.is_boolean()) {
    sqlite3_bind_int(st, i, v.get<bool>() ? 1 : 0);
  } else {
    const std::string s = v.is_string() ? v.get<std::string>() : v.dump();
    sqlite3_bind_text(st, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
  }
}

nlohmann::json column_json(sqlite3_stmt* st, int i) {
  switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER:
      return static_cast<long long>(sqlite3_column_int64(st, i));
    case SQLITE_FLOAT:
      return sqlite3_column_double(st, i);
    case SQLITE_NULL:
      return nullptr;
    default: {
      const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(st, i));
      return std::string(text ? text : "", static_cast<size_t>(sqlite3_column_bytes(st, i)));
    }
  }
}

// Inserts a reply's rows into schema.table under the reply's column names.
Status insert_rows(Db& db, const std::string& name, const nlohmann::json& reply) {
  const nlohmann::json columns = reply.value("columns", nlohmann::json::array());
  const nlohmann::json rows = reply.value("rows", nlohmann::json::array());
  if (!columns.is_array() || columns.empty() || !rows.is_array() || rows.empty()) return Status::ok();
  auto [schema, table] = split_name(name);
  std::string sql = "INSERT INTO " + quote(schema) + "." + quote(table) + "(";
  std::string marks;
  for (size_t i = 0; i < columns.size(); ++i) {
    sql += (i ? ", " : "") + quote(columns[i].is_string() ? columns[i].get<std::string>() : "?");
    marks += i ? ", ?" : "?";
  }
  sql += ") VALUES (" + marks + ")";
  Stmt st;
  if (sqlite3_prepare_v2(db.db, sql.c_str(), -1, &st.st, nullptr) != SQLITE_OK) {
    return Status(Code::kInvalidArgument, sqlite3_errmsg(db.db));
  }
  for (const nlohmann::json& row : rows) {
    if (!row.is_array()) continue;
    sqlite3_reset(st.st);
    for (size_t i = 0; i < columns.size(); ++i) {
      bind_json(st.st, static_cast<int>(i + 1), i < row.size() ? row[i] : nlohmann::json());
    }
    if (sqlite3_step(st.st) != SQLITE_DONE) return Status(Code::kInternal, sqlite3_errmsg(db.db));
  }
  return Status::ok();
}

// Runs a statement; its result as {"columns", "rows"}.
Result<nlohmann::json> run(Db& db, const std::string& sql) {
  Stmt st;
  if (sqlite3_prepare_v2(db.db, sql.c_str(), -1, &st.st, nullptr) != SQLITE_OK) {
    return Status(Code::kInvalidArgument, sqlite3_errmsg(db.db));
  }
  nlohmann::json out = {{"columns", nlohmann::json::array()}, {"rows", nlohmann::json::array()}};
  const int n = sqlite3_column_count(st.st);
  for (int i = 0; i < n; ++i) out["columns"].push_back(sqlite3_column_name(st.st, i));
  int rc = SQLITE_ROW;
  while ((rc = sqlite3_step(st.st)) == SQLITE_ROW) {
    nlohmann::json row = nlohmann::json::array();
    for (int i = 0; i < n; ++i) row.push_back(column_json(st.st, i));
    out["rows"].push_back(std::move(row));
  }
  if (rc != SQLITE_DONE) return Status(Code::kInvalidArgument, sqlite3_errmsg(db.db));
  return out;
}

}  // namespace

std::string rank_ranges(std::vector<int> ranks) {
  std::sort(ranks.begin(), ranks.end());
  ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
  std::string out;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    out += (out.empty() ? "" : ",") + std::to_string(ranks[i]);
    if (j > i) out += (j == i + 1 ? "," : "-") + std::to_string(ranks[j]);
    i = j + 1;
  }
  return out;
}

std::string ranks_phrase(const std::vector<int>& ranks) {
  return (ranks.size() == 1 ? "rank " : "ranks ") + rank_ranges(ranks);
}

Result<std::vector<int>> parse_rank_list(const std::string& text) {
  std::vector<int> out;
  std::stringstream in(text);
  std::string part;
  auto number = [](const std::string& s, int* v) {
    if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos) return false;
    *v = std::stoi(s);
    return true;
  };
  while (std::getline(in, part, ',')) {
    part.erase(0, part.find_first_not_of(' '));
    part.erase(part.find_last_not_of(' ') + 1);
    const size_t dash = part.find('-');
    int a = 0, b = 0;
    if (dash == std::string::npos
            ? !number(part, &a)
            : !number(part.substr(0, dash), &a) || !number(part.substr(dash + 1), &b) || b < a) {
      return Status(Code::kInvalidArgument,
                    "'" + part + "' is not a rank or a range of ranks (like 0,3,5-7)");
    }
    if (dash == std::string::npos) b = a;
    if (b - a > 1000000) return Status(Code::kInvalidArgument, "'" + part + "' is too wide a range");
    for (int r = a; r <= b; ++r) out.push_back(r);
  }
  if (out.empty()) return Status(Code::kInvalidArgument, "no ranks given (like 0,3,5-7)");
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

QueryPlan plan_query(const std::string& sql) {
  const std::vector<Token> t = tokenize(sql);
  const Shape s = shape_of(t);
  QueryPlan plan;
  auto text = [&](int from, int to) {
    if (from < 0 || from >= to) return std::string();
    return sql.substr(t[static_cast<size_t>(from)].begin,
                      t[static_cast<size_t>(to - 1)].end - t[static_cast<size_t>(from)].begin);
  };
  if (t.empty() || !is_word(t[0], "select")) {
    if (s.with) {
      plan.why = "it has a WITH clause";
    } else {
      plan.per_rank = true;  // not a SELECT: each rank answers for itself (or says what is wrong)
      return plan;
    }
  } else if (s.compound) {
    plan.why = "it is a compound SELECT";
  } else if (s.subquery) {
    plan.why = "it has a subquery, which must see every rank's rows";
  } else if (s.distinct) {
    plan.why = "DISTINCT must see every rank's rows";
  } else if (s.window) {
    plan.why = "a window function must see every rank's rows";
  } else if (s.offset) {
    plan.why = "an OFFSET counts rows over every rank";
  } else if (s.group >= 0) {
    const bool by_rank =
        std::any_of(s.group_terms.begin(), s.group_terms.end(), [&](const std::vector<int>& term) {
          return term.size() == 1 && t[static_cast<size_t>(term[0])].text == "_rank" &&
                 t[static_cast<size_t>(term[0])].kind != Token::kString;
        });
    if (by_rank) {
      plan.per_rank = true;
    } else {
      plan.why = "its groups may span ranks (GROUP BY _rank keeps them apart)";
    }
  } else if (s.aggregate) {
    plan.why = "it aggregates over every rank";
  } else {
    plan.per_rank = true;
  }
  if (plan.per_rank) {
    const int tail = s.order >= 0 ? s.order : s.limit;
    plan.tail = text(tail, s.end);
    return plan;
  }
  if (!s.with && !s.compound && !s.subquery && !s.joins && s.from >= 0) {
    int from_end = s.end;
    for (int c : {s.group, s.having, s.order, s.limit}) {
      if (c > s.from) from_end = std::min(from_end, c);
    }
    plan.from_where = text(s.from, from_end);
    // A table-valued function or anything else in parentheses is left alone.
    if (plan.from_where.find('(') != std::string::npos) plan.from_where.clear();
  }
  return plan;
}

Result<nlohmann::json> merge_per_rank(const std::vector<RankResult>& results, const std::string& tail) {
  nlohmann::json columns = nlohmann::json::array();
  for (const RankResult& r : results) {
    if (r.reply.contains("columns") && r.reply["columns"].is_array() && !r.reply["columns"].empty()) {
      columns = r.reply["columns"];
      break;
    }
  }
  auto has = [&](const char* name) {
    return std::any_of(columns.begin(), columns.end(), [&](const nlohmann::json& c) {
      return c.is_string() && lower(c.get<std::string>()) == name;
    });
  };
  // _rank and _host in front when the statement selected neither; _host last when it selected
  // _rank (where the statement put it).
  const bool add_rank = !has("_rank"), add_host = !has("_host");
  const bool host_last = add_host && !add_rank;
  nlohmann::json merged = {{"columns", nlohmann::json::array()}, {"rows", nlohmann::json::array()}};
  if (add_rank) merged["columns"].push_back("_rank");
  if (add_host && !host_last) merged["columns"].push_back("_host");
  for (const nlohmann::json& c : columns) merged["columns"].push_back(c);
  if (host_last) merged["columns"].push_back("_host");
  const size_t front = (add_rank ? 1 : 0) + (add_host && !host_last ? 1 : 0);
  for (const RankResult& r : results) {
    for (const nlohmann::json& row : r.reply.value("rows", nlohmann::json::array())) {
      nlohmann::json out = nlohmann::json::array();
      if (add_rank) out.push_back(r.rank);
      if (add_host && !host_last) out.push_back(r.host);
      for (const nlohmann::json& v : row) out.push_back(v);
      if (host_last) out.push_back(r.host);
      merged["rows"].push_back(std::move(out));
    }
  }
  if (tail.empty() || columns.empty()) return merged;
  // The tail over a table of the result's columns (in their order, so ORDER BY 2 still means the
  // second), with the added ones after them; then they are put back where they go.
  Result<std::unique_ptr<Db>> db = open_db();
  if (!db.is_ok()) return db.status();
  std::vector<std::string> names;
  std::set<std::string> seen;
  for (const nlohmann::json& c : columns) {
    std::string name = c.is_string() ? c.get<std::string>() : "column";
    std::string unique = name;
    for (int k = 2; !seen.insert(lower(unique)).second; ++k) unique = name + "_" + std::to_string(k);
    names.push_back(unique);
  }
  const size_t added = merged["columns"].size() - columns.size();
  for (size_t i = 0; i < added; ++i) names.push_back("_added_" + std::to_string(i));
  std::string ddl = "CREATE TABLE merged(";
  for (size_t i = 0; i < names.size(); ++i) ddl += (i ? ", " : "") + quote(names[i]);
  if (Status st = exec(**db, ddl + ")"); !st.is_ok()) return st;
  // Row i of `merged` as [statement's columns..., added...].
  auto split = [&](const nlohmann::json& row) {
    nlohmann::json out = nlohmann::json::array();
    for (size_t i = front; i < front + columns.size(); ++i) out.push_back(row[i]);
    for (size_t i = 0; i < front; ++i) out.push_back(row[i]);
    if (host_last) out.push_back(row[row.size() - 1]);
    return out;
  };
  nlohmann::json table = {{"columns", nlohmann::json::array()}, {"rows", nlohmann::json::array()}};
  for (const std::string& n : names) table["columns"].push_back(n);
  for (const nlohmann::json& row : merged["rows"]) table["rows"].push_back(split(row));
  if (Status st = insert_rows(**db, "merged", table); !st.is_ok()) return st;
  Result<nlohmann::json> ordered = run(**db, "SELECT * FROM merged " + tail);
  if (!ordered.is_ok()) return Status(Code::kInvalidArgument, ordered.status().message());
  nlohmann::json out = {{"columns", merged["columns"]}, {"rows", nlohmann::json::array()}};
  for (const nlohmann::json& row : (*ordered)["rows"]) {
    nlohmann::json r = nlohmann::json::array();
    for (size_t i = 0; i < front; ++i) r.push_back(row[columns.size() + i]);
    for (size_t i = 0; i < columns.size(); ++i) r.push_back(row[i]);
    if (host_last) r.push_back(row[columns.size() + front]);
    out["rows"].push_back(std::move(r));
  }
  return out;
}

Result<std::map<std::string, std::vector<std::string>>> columns_read(const std::string& sql,
                                                                     const Catalog& catalog,
                                                                     std::vector<std::string>* missing) {
  Result<std::unique_ptr<Db>> db = open_db();
  if (!db.is_ok()) return db.status();
  if (Status st = create_tables(**db, catalog); !st.is_ok()) return st;
  struct Reads {
    std::map<std::string, std::vector<std::string>> columns;
  } reads;
  sqlite3_set_authorizer(
      (*db)->db,
      [](void* data, int action, const char* table, const char* column, const char* schema, const char*) {
        if (action == SQLITE_READ && table != nullptr && schema != nullptr) {
          auto& cols = static_cast<Reads*>(data)->columns[std::string(schema) + "." + table];
          const std::string c = column ? column : "";
          if (!c.empty() && std::find(cols.begin(), cols.end(), c) == cols.end()) cols.push_back(c);
        }
        return SQLITE_OK;
      },
      &reads);
  Stmt st;
  if (sqlite3_prepare_v2((*db)->db, sql.c_str(), -1, &st.st, nullptr) != SQLITE_OK) {
    const std::string message = sqlite3_errmsg((*db)->db);
    constexpr std::string_view kNoTable = "no such table: ";
    if (message.rfind(kNoTable, 0) == 0) {
      missing->push_back(message.substr(kNoTable.size()));
      return std::map<std::string, std::vector<std::string>>{};
    }
    return Status(Code::kInvalidArgument, message);
  }
  // A table read without a column (count(*)) is there with none: its rows still come, as
  // _rank and _host.
  return reads.columns;
}

Result<nlohmann::json> run_over_rows(const std::string& sql, const Catalog& columns,
                                     const std::map<std::string, std::vector<nlohmann::json>>& tables) {
  Result<std::unique_ptr<Db>> db = open_db();
  if (!db.is_ok()) return db.status();
  if (Status st = create_tables(**db, columns); !st.is_ok()) return st;
  if (Status st = exec(**db, "BEGIN"); !st.is_ok()) return st;
  for (const auto& [name, replies] : tables) {
    for (const nlohmann::json& reply : replies) {
      if (Status st = insert_rows(**db, name, reply); !st.is_ok()) return st;
    }
  }
  if (Status st = exec(**db, "COMMIT"); !st.is_ok()) return st;
  return run(**db, sql);
}

std::string stack_key(const nlohmann::json& frames, bool exact) {
  std::string key;
  if (!frames.is_array()) return key;
  for (const nlohmann::json& f : frames) {
    if (!f.is_object()) continue;
    key += f.value("func", std::string("?")) + "\t" + f.value("file", std::string("?"));
    if (exact && f.contains("lineno") && f["lineno"].is_number()) key += ":" + f["lineno"].dump();
    key += "\n";
  }
  return key;
}

}  // namespace probing::cli
