// The SQL functions probing adds to SQLite's, for time series (docs/tables.md, "Functions"):
//   time_bucket(width, t)      t rounded down to a multiple of width: seconds, or '1 minute'
//   to_timestamp(t)            unix seconds as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC)
//   percentile(x, p), median(x)               linear interpolation between the closest ranks
//   stddev(x), variance(x)                    of a sample (n - 1), as Python's statistics
//   stddev_pop(x), variance_pop(x)            of a population (n)
//   min_by(v, k), max_by(v, k)                v where k is least / greatest (arg_min, arg_max)
//   first(v, k), last(v, k)                   the same, read as "in the order of k"
//   delta(v, t), rate(v, t)                   last minus first by t, and that per second of t
//   histogram(x, width)                       {"bucket start": count, ...} as JSON text
// Every one is deterministic and touches nothing outside its arguments; NULL arguments are
// skipped by the aggregates, as SQLite's own are.
#pragma once

#include <array>
#include <string_view>

struct sqlite3;

namespace probing::sql {

// Their names, sorted: the authorizer allows them.
constexpr std::array<std::string_view, 17> kProbingFunctions = {
    "arg_max",  "arg_min", "delta",  "first",      "histogram",  "last",         "max_by",   "median", "min_by",
    "percentile", "rate",  "stddev", "stddev_pop", "time_bucket", "to_timestamp", "variance", "variance_pop",
};

// Registers them on a connection. False when SQLite refuses one (out of memory).
bool register_functions(sqlite3* db) noexcept;

}  // namespace probing::sql
