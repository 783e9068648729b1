// How `probing cluster` turns every rank's answer into one (docs/cluster.md): rank lists, the
// plan for a SQL statement over a job, the merge of per-rank results in an in-memory SQLite, and
// stacks grouped into classes of ranks. Pure functions of their inputs, tested without agents.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace probing::cli {

// {0,1,2,4,5,6,7} -> "0-2,4-7"; sorted and deduplicated first.
std::string rank_ranges(std::vector<int> ranks);
// "ranks 0-2,4-7" or "rank 3".
std::string ranks_phrase(const std::vector<int>& ranks);
// "0,3,5-7" -> {0,3,5,6,7}; kInvalidArgument naming the bad part.
Result<std::vector<int>> parse_rank_list(const std::string& text);

// How a statement runs over a job.
struct QueryPlan {
  // The whole statement runs on each rank and the answers are concatenated: no group spans two
  // ranks (it aggregates nothing, or it groups by _rank). Otherwise the ranks send the rows the
  // statement reads and it runs here, over all of them.
  bool per_rank = false;
  std::string why;   // why it runs here (for --explain and tests)
  std::string tail;  // per_rank: the top-level ORDER BY / LIMIT, applied again to the merged rows
  // Not per_rank, one table read and no subquery: the FROM and WHERE text, so that ranks send
  // only the rows the statement keeps ("FROM python.torch_trace t WHERE t.stage = 'step'").
  std::string from_where;
};
QueryPlan plan_query(const std::string& sql);

struct RankResult {
  int rank = -1;
  std::string host;
  nlohmann::json reply;  // {"columns", "rows", "notices"}
};

// Per-rank answers as one: _rank and _host columns in front (unless the statement selected
// them), rows in rank order, then `tail` (ORDER BY/LIMIT) over the whole. kInvalidArgument when the
// tail cannot be applied to the result's columns (it names an expression the result lacks).
Result<nlohmann::json> merge_per_rank(const std::vector<RankResult>& results, const std::string& tail);

// The statement run here over the rows the ranks sent. `tables` maps "schema.table" to each
// rank's reply to "SELECT <columns>, _rank, _host FROM schema.table ..."; `columns` maps it to
// the table's columns and types (information_schema). The SQL functions of the agent are here too.
Result<nlohmann::json> run_over_rows(
    const std::string& sql,
    const std::map<std::string, std::vector<std::pair<std::string, std::string>>>& columns,
    const std::map<std::string, std::vector<nlohmann::json>>& tables);

// The columns of each table `sql` reads, given a catalog of "schema.table" -> columns; the
// tables it names that the catalog lacks go to `missing` (to ask the ranks about them).
Result<std::map<std::string, std::vector<std::string>>> columns_read(
    const std::string& sql,
    const std::map<std::string, std::vector<std::pair<std::string, std::string>>>& catalog,
    std::vector<std::string>* missing);

// One rank's stack (its main thread's frames, innermost first) as a key: function and file of
// each frame, and the line when `exact`.
std::string stack_key(const nlohmann::json& frames, bool exact);

}  // namespace probing::cli
