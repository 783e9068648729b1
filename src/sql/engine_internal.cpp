#include "sql/engine_internal.h"

#include <unistd.h>

#include "core/job.h"

namespace probing::sql {

thread_local QueryState* t_query = nullptr;

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
  return sql + ", _rank INTEGER HIDDEN, _host TEXT HIDDEN)";
}

bool job_column(sqlite3_context* ctx, int column, size_t visible) {
  if (column < 0 || static_cast<size_t>(column) < visible) return false;
  if (static_cast<size_t>(column) == visible) {
    const JobInfo& job = this_job();
    if (job.in_job()) {
      sqlite3_result_int(ctx, job.rank);
    } else {
      sqlite3_result_null(ctx);
    }
  } else {
    static const std::string* host = [] {  // never destroyed: queries may run during exit
      char name[256] = {};
      ::gethostname(name, sizeof name - 1);
      return new std::string(name);
    }();
    sqlite3_result_text(ctx, host->data(), static_cast<int>(host->size()), SQLITE_STATIC);
  }
  return true;
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

}  // namespace probing::sql
