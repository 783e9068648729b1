// How `probing query` and `probing config` print a result. The formatters are pure functions of
// the agent's reply {"columns": [...], "rows": [[...], ...], "truncated": bool, "notices": [...]};
// a missing or ill-typed field reads as empty. Cells are strings, numbers, null, or (printed as
// their JSON) anything else.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace probing::cli {

// Aligned columns for people: a header, a `-+-` rule, one line per row, then "(N rows)" when
// `row_count`. Columns are joined by " | "; numbers are right-aligned, text left-aligned; NULL
// reads NULL; floats print as %.6g, integers exactly; newline, CR, tab and other control
// characters in a cell read \n, \r, \t, \xNN, so a row stays one line. When `max_width` > 0 and
// the table is wider, the widest columns shrink (to 3 at the least; a column of numbers keeps its
// width) and their cells are cut with "…"; widths count code points. With no columns: "OK\n"
// when the reply has no notices, else "".
std::string format_table(const nlohmann::json& reply, int max_width, bool row_count = true);

// One JSON array of objects, one per row, keys in column order, indent 2. A repeated column name
// gets a suffix: a, a -> a, a_2 (skipping names another column already has).
std::string format_json(const nlohmann::json& reply);

// RFC 4180 with "\n" line ends: a header row, then the rows. A field holding , " CR or LF is
// quoted, its quotes doubled; NULL is an empty field; numbers print as JSON does (exactly).
// With no columns: "".
std::string format_csv(const nlohmann::json& reply);

// The reply's notices as stderr lines "probing: note: <notice>\n"; when the reply is truncated
// and carries no notice, one that says the result was cut.
std::string format_notices(const nlohmann::json& reply);

// `text` in at most `width` code points: unchanged when it fits, else its first width - 1 code
// points and "…". Never splits a UTF-8 sequence.
std::string cut_to_width(std::string_view text, size_t width);

// The width tables are fit to: the terminal's, when stdout is one; else $COLUMNS when set;
// else 0, no limit (a pipe gets whole cells). Unlike the rest of this file, it looks outside.
int terminal_width();

}  // namespace probing::cli
