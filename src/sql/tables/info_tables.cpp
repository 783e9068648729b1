// information_schema: the settings table and the catalogue of every table and column.
#include <mutex>

#include "core/settings.h"
#include "sql/tables/tables.h"

namespace probing::sql {
namespace {

Result<LiveRows> fetch_settings(const ScanRequest&) {
  LiveRows out;
  for (const SettingInfo& s : settings().list()) {
    out.rows.push_back({s.name, s.value, s.description, s.default_value, std::string(kind_name(s.kind)),
                        Settings::env_name(s.name)});
  }
  return out;
}

Result<LiveRows> fetch_tables(const ScanRequest&) {
  LiveRows out;
  for (const TableInfo& t : Engine::get().tables()) {
    Value rows, bytes, dropped;
    if (t.store) {
      ColumnStore::Stats st = t.store->stats();
      rows = static_cast<long long>(st.rows);
      bytes = static_cast<long long>(st.bytes);
      dropped = static_cast<long long>(st.dropped);
    }
    out.rows.push_back({t.schema, t.name, t.kind, t.description, rows, bytes, dropped});
  }
  return out;
}

Result<LiveRows> fetch_columns(const ScanRequest&) {
  LiveRows out;
  for (const TableInfo& t : Engine::get().tables()) {
    long long position = 0;
    for (const ColumnDef& c : t.columns) {
      out.rows.push_back({t.schema, t.name, c.name, position++, std::string(type_name(c.type)), c.description});
    }
  }
  return out;
}

}  // namespace

Status add_information_schema(Engine& engine) {
  constexpr ColumnType kText = ColumnType::kText, kInt = ColumnType::kInteger;
  PROBING_RETURN_IF_ERROR(engine.add_live_table(
      {"information_schema", "df_settings",
       "Every setting of the agent; change one with SET name = value or `probing PID config name=value`.",
       {{"name", kText, "setting name"},
        {"value", kText, "current value"},
        {"description", kText, "what it does, with its unit"},
        {"default", kText, "value at start unless PROBING_<NAME> or -D set it"},
        {"kind", kText, "bool, int, double or string"},
        {"env", kText, "the environment variable that sets it at start"}},
       {},
       fetch_settings}));
  PROBING_RETURN_IF_ERROR(engine.add_live_table(
      {"information_schema", "tables", "Every table that can be queried.",
       {{"table_schema", kText, "schema (python, process, information_schema)"},
        {"table_name", kText, "table name"},
        {"kind", kText, "live (read when queried) or store (recorded rows)"},
        {"description", kText, "what the table holds"},
        {"rows", kInt, "rows kept now (store tables)"},
        {"bytes", kInt, "bytes kept now (store tables)"},
        {"dropped_rows", kInt, "rows dropped so far to stay under the caps (store tables)"}},
       {},
       fetch_tables}));
  return engine.add_live_table({"information_schema", "columns", "Every column of every table.",
                                {{"table_schema", kText, "schema"},
                                 {"table_name", kText, "table"},
                                 {"column_name", kText, "column"},
                                 {"position", kInt, "0-based position in the table"},
                                 {"type", kText, "INTEGER, REAL or TEXT"},
                                 {"description", kText, "meaning and unit"}},
                                {},
                                fetch_columns});
}

Status add_builtin_tables() {
  static std::once_flag once;
  static Status* result = nullptr;  // never destroyed
  std::call_once(once, [] {
    Engine& engine = Engine::get();
    Status st = add_information_schema(engine);
    if (st.is_ok()) st = add_process_tables(engine);
    if (st.is_ok()) st = add_python_tables(engine);
    result = new Status(std::move(st));
  });
  return *result;
}

}  // namespace probing::sql
