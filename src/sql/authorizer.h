// What a query may do: the SQLite authorizer of every connection, and the connection settings
// that go with it. A security boundary (docs/security.md), kept apart so it can be read and tested
// on its own.
#pragma once

#include <sqlite3.h>

#include <string>
#include <string_view>

namespace probing::sql {

// Whether a query may call the SQL function `name`: SQLite's core scalar, aggregate, window,
// date, math and JSON functions, and probing's own (functions.h). Anything that reaches memory or files is not on the list:
// fts3_tokenizer (returns a heap pointer), fts5 (an API pointer), load_extension, sqlite_log,
// the rtree and full-text helpers (they parse blobs as structures).
bool function_allowed(std::string_view name) noexcept;

// The decision for one authorizer call (SQLite's action code and its first two arguments):
// SQLITE_OK for reading (SELECT, tables, allowed functions, the read-only PRAGMAs), else
// SQLITE_DENY with *denied naming what was refused ("UPDATE", "the function load_extension").
// A statement's name wins over the row changes it implies (DROP TABLE also deletes rows).
int authorize(int action, const char* arg1, const char* arg2, std::string* denied) noexcept;

// Turns off what a connection must never do whatever the SQL: load extensions, the FTS3
// tokenizer pointer interface, writes to the schema (SQLITE_DBCONFIG_DEFENSIVE), and functions
// in the schema that were not marked innocuous (SQLITE_DBCONFIG_TRUSTED_SCHEMA off).
void harden_connection(sqlite3* db) noexcept;

}  // namespace probing::sql
