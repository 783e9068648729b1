// What the SQL layer's tables are made of: typed column declarations and the values of one row.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace probing::sql {

enum class ColumnType { kInteger, kReal, kText };

struct ColumnDef {
  std::string name;
  ColumnType type;
  std::string description;  // with the unit, for docs/tables.md and information_schema.columns
};

// One cell: NULL, INTEGER, REAL or TEXT. A Value owns its text; a Cell borrows it (the append
// path, which must not allocate per cell).
using Value = std::variant<std::monostate, long long, double, std::string>;
using Cell = std::variant<std::monostate, long long, double, std::string_view>;
using Row = std::vector<Value>;

const char* type_name(ColumnType type);  // "INTEGER", "REAL", "TEXT"

}  // namespace probing::sql
