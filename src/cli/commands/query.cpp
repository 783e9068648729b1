// probing TARGET query SQL|- [--format table|json|csv]
#include <iostream>
#include <sstream>

#include "cli/common.h"
#include "cli/format.h"

namespace probing::cli {
namespace {

// The client's deadline for one query. The agent bounds the query itself; this only keeps the
// CLI from waiting forever on an agent that stopped answering.
constexpr double kQueryDeadlineS = 120;

struct QueryArgs {
  std::string sql;
  std::string format = "table";
};

Result<std::string> read_sql(const QueryArgs& args) {
  std::string sql = args.sql;
  if (sql == "-") {
    std::ostringstream text;
    text << std::cin.rdbuf();
    sql = text.str();
  }
  if (sql.find_first_not_of(" \t\r\n") == std::string::npos) {
    return Status(Code::kInvalidArgument, "nothing to run: give SQL, or - to read it from standard input");
  }
  return sql;
}

int run_query(const Context& ctx, const QueryArgs& args) {
  Result<std::string> sql = read_sql(args);
  if (!sql.is_ok()) return fail(sql.status());
  auto client = connect_target(ctx);
  if (!client.is_ok()) return fail(client.status());
  nlohmann::json body = {{"sql", *sql}};
  Result<client::Response> reply = (*client)->request("POST", "/query", body.dump(), kQueryDeadlineS);
  if (!reply.is_ok()) return fail(reply.status());
  if (reply->status / 100 != 2) return fail(reply->error_message());
  nlohmann::json j = reply->json();
  if (j.is_discarded() || !j.is_object())
    return fail("the agent sent a reply that is not JSON: " + reply->body.substr(0, 200));
  if (args.format == "json") {
    std::cout << format_json(j);
  } else if (args.format == "csv") {
    std::cout << format_csv(j);
  } else {
    std::cout << format_table(j, terminal_width());
  }
  std::cout << std::flush;
  std::cerr << format_notices(j);
  return kExitOk;
}

}  // namespace

void add_query_command(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<QueryArgs>();
  CLI::App* cmd = app.add_subcommand(
      "query",
      "Run SQL in the target and print the result. The tables describe the live process\n"
      "(python.backtrace, ...); SET name = value changes a setting, as config KEY=VALUE does.\n"
      "Notices (a result cut at the row cap, a setting's new value) go to standard error.");
  cmd->add_option("sql", args->sql, "the SQL; - reads it from standard input")->required();
  cmd->add_option("--format", args->format, "table, json or csv (below)")
      ->default_val("table")
      ->check(CLI::IsMember({"table", "json", "csv"}));
  cmd->footer(
      "Formats:\n"
      "  table  aligned columns fit to the terminal (long cells cut with \xe2\x80\xa6; a pipe gets\n"
      "         whole cells), NULL shown as NULL, floats to 6 significant digits (3 decimals past 1e6), then (N rows)\n"
      "  json   an array of objects, one per row; a repeated column name gets _2, _3, ...\n"
      "  csv    RFC 4180 with a header row; NULL is an empty field\n"
      "\n"
      "Examples:\n"
      "  probing 1234 query \"SELECT func, file, lineno FROM python.backtrace ORDER BY depth LIMIT 10\"\n"
      "  probing 1234 query --format csv \"SELECT * FROM python.backtrace\" > stack.csv\n"
      "  echo \"SET eval.timeout_s = 10\" | probing 1234 query -");
  on_run(cmd, [&ctx, args] { return run_query(ctx, *args); });
}

}  // namespace probing::cli
