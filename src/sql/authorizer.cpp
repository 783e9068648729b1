#include "sql/authorizer.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <string>

#include "sqlext/functions.h"

namespace probing::sql {
namespace {

// Sorted, for binary search. SQLite's built-in functions (PRAGMA function_list) minus those named
// in authorizer.h.
constexpr std::array<std::string_view, 115> kFunctions = {
    "->", "->>", "abs", "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "avg", "ceil", "ceiling",
    "changes", "char", "coalesce", "cos", "cosh", "count", "cume_dist", "current_date", "current_time",
    "current_timestamp", "date", "datetime", "degrees", "dense_rank", "exp", "first_value", "floor", "format",
    "glob", "group_concat", "hex", "ifnull", "iif", "instr", "json", "json_array", "json_array_length",
    "json_each", "json_extract", "json_group_array", "json_group_object", "json_insert", "json_object",
    "json_patch", "json_quote", "json_remove", "json_replace", "json_set", "json_tree", "json_type",
    "json_valid", "julianday", "lag", "last_insert_rowid", "last_value", "lead", "length", "like",
    "likelihood", "likely", "ln", "log", "log10", "log2", "lower", "ltrim", "max", "min", "mod", "nth_value",
    "ntile", "nullif", "percent_rank", "pi", "pow", "power", "printf", "quote", "radians", "random",
    "randomblob", "rank", "replace", "round", "row_number", "rtrim", "sign", "sin", "sinh", "soundex",
    "sqlite_compileoption_get", "sqlite_compileoption_used", "sqlite_source_id", "sqlite_version", "sqrt",
    "strftime", "substr", "substring", "sum", "tan", "tanh", "time", "total", "total_changes", "trim",
    "trunc", "typeof", "unicode", "unixepoch", "unlikely", "upper", "zeroblob",
};

const char* action_name(int action) {
  switch (action) {
    case SQLITE_INSERT: return "INSERT";
    case SQLITE_UPDATE: return "UPDATE";
    case SQLITE_DELETE: return "DELETE";
    case SQLITE_ATTACH: return "ATTACH";
    case SQLITE_DETACH: return "DETACH";
    case SQLITE_CREATE_TABLE:
    case SQLITE_CREATE_TEMP_TABLE:
    case SQLITE_CREATE_VTABLE: return "CREATE TABLE";
    case SQLITE_DROP_TABLE:
    case SQLITE_DROP_TEMP_TABLE:
    case SQLITE_DROP_VTABLE: return "DROP TABLE";
    case SQLITE_CREATE_VIEW:
    case SQLITE_CREATE_TEMP_VIEW: return "CREATE VIEW";
    case SQLITE_PRAGMA: return "this PRAGMA";
    case SQLITE_TRANSACTION: return "a transaction";
    default: return "this statement";
  }
}

bool pragma_allowed(std::string_view name) {
  constexpr std::array<std::string_view, 7> kPragmas = {"compile_options", "database_list", "function_list",
                                                        "module_list",     "table_info",    "table_list",
                                                        "table_xinfo"};
  return std::binary_search(kPragmas.begin(), kPragmas.end(), name);
}

}  // namespace

bool function_allowed(std::string_view name) noexcept {
  std::string lower(name.size(), '\0');
  std::transform(name.begin(), name.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  return std::binary_search(kFunctions.begin(), kFunctions.end(), lower) ||
         std::binary_search(kProbingFunctions.begin(), kProbingFunctions.end(), lower);
}

int authorize(int action, const char* arg1, const char* arg2, std::string* denied) noexcept {
  try {
    switch (action) {
      case SQLITE_SELECT:
      case SQLITE_READ:
      case SQLITE_RECURSIVE:
        return SQLITE_OK;
      case SQLITE_FUNCTION:  // arg2: the function's name
        if (arg2 != nullptr && function_allowed(arg2)) return SQLITE_OK;
        if (denied != nullptr && denied->empty()) *denied = "the function " + std::string(arg2 ? arg2 : "?");
        return SQLITE_DENY;
      case SQLITE_PRAGMA:  // arg1: the pragma's name
        if (arg1 != nullptr && pragma_allowed(arg1)) return SQLITE_OK;
        break;
      default:
        break;
    }
    bool row_change = action == SQLITE_INSERT || action == SQLITE_UPDATE || action == SQLITE_DELETE;
    if (denied != nullptr && (denied->empty() || !row_change)) *denied = action_name(action);
  } catch (...) {  // out of memory naming it: still refused
  }
  return SQLITE_DENY;
}

void harden_connection(sqlite3* db) noexcept {
  sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, nullptr);
  sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, 0, nullptr);
  sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
  sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);
}

}  // namespace probing::sql
