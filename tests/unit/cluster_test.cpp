// How `probing cluster` merges every rank's answer: rank lists, the plan of a statement over a
// job, the merge of per-rank rows, the statement run over the rows ranks sent, stack keys, and
// the job identity read from a launcher's environment.
#include "cli/cluster_merge.h"

#include <gtest/gtest.h>

#include "core/job.h"

namespace probing::cli {
namespace {

using nlohmann::json;

TEST(RankRanges, CompactsRuns) {
  EXPECT_EQ(rank_ranges({0, 1, 2, 4, 5, 6, 7}), "0-2,4-7");
  EXPECT_EQ(rank_ranges({3}), "3");
  EXPECT_EQ(rank_ranges({7, 0, 1, 0}), "0,1,7");  // a run of two is written out
  EXPECT_EQ(rank_ranges({}), "");
  EXPECT_EQ(ranks_phrase({3}), "rank 3");
  EXPECT_EQ(ranks_phrase({0, 1, 2}), "ranks 0-2");
}

TEST(ParseRankList, ReadsListsAndRanges) {
  EXPECT_EQ(*parse_rank_list("0,3,5-7"), (std::vector<int>{0, 3, 5, 6, 7}));
  EXPECT_EQ(*parse_rank_list(" 2 , 2,1"), (std::vector<int>{1, 2}));
  for (const char* bad : {"", "a", "3-1", "1,,x", "-2", "1-"}) {
    Result<std::vector<int>> r = parse_rank_list(bad);
    EXPECT_FALSE(r.is_ok()) << bad;
  }
}

TEST(PlanQuery, RunsOnEachRankWhenNoGroupSpansRanks) {
  QueryPlan p = plan_query("SELECT _rank, max(step) FROM python.torch_trace GROUP BY _rank");
  EXPECT_TRUE(p.per_rank);
  EXPECT_EQ(p.tail, "");
  p = plan_query(
      "SELECT _rank, avg(duration) FROM python.torch_trace WHERE stage = 'step' "
      "GROUP BY _rank, module ORDER BY 2 DESC LIMIT 3;");
  EXPECT_TRUE(p.per_rank);
  EXPECT_EQ(p.tail, "ORDER BY 2 DESC LIMIT 3");
  p = plan_query("select func, file from python.backtrace limit 5");
  EXPECT_TRUE(p.per_rank);
  EXPECT_EQ(p.tail, "limit 5");
  // Two-argument max() is scalar; the words inside strings and comments are not clauses.
  p = plan_query("SELECT max(a, b), 'count(x) GROUP BY' FROM t -- ORDER BY nothing\n WHERE x = 'union'");
  EXPECT_TRUE(p.per_rank) << p.why;
  EXPECT_EQ(p.tail, "");
  // An ORDER BY inside a window is not the statement's.
  EXPECT_FALSE(plan_query("SELECT lag(loss) OVER (ORDER BY step) FROM python.losses").per_rank);
}

TEST(PlanQuery, RunsHereWhenGroupsSpanRanks) {
  QueryPlan p = plan_query("SELECT module, median(duration) FROM python.torch_trace GROUP BY module");
  EXPECT_FALSE(p.per_rank);
  EXPECT_EQ(p.from_where, "FROM python.torch_trace");
  p = plan_query("SELECT count(*) FROM python.torch_trace t WHERE t.stage = 'step' ORDER BY 1");
  EXPECT_FALSE(p.per_rank);
  EXPECT_EQ(p.from_where, "FROM python.torch_trace t WHERE t.stage = 'step'");
  for (const char* sql :
       {"SELECT DISTINCT module FROM python.torch_trace", "SELECT * FROM a UNION SELECT * FROM b",
        "SELECT * FROM t WHERE step = (SELECT max(step) FROM t)", "WITH x AS (SELECT 1) SELECT * FROM x",
        "SELECT * FROM t LIMIT 5 OFFSET 10", "SELECT round(avg(duration), 3) FROM t",
        "SELECT \"_rank\" AS r, count(*) FROM t GROUP BY r"}) {
    EXPECT_FALSE(plan_query(sql).per_rank) << sql;
  }
  // Joins and subqueries are not pushed down: each rank sends the tables whole.
  EXPECT_EQ(plan_query("SELECT count(*) FROM a JOIN b ON a.x = b.x").from_where, "");
  EXPECT_EQ(plan_query("SELECT count(*) FROM a, b").from_where, "");
}

json reply(const char* text) { return json::parse(text); }

TEST(MergePerRank, AddsRankAndHostAndAppliesTheTail) {
  std::vector<RankResult> results = {
      {0, "h0", reply(R"({"columns": ["module", "avg"], "rows": [["a", 1.0], ["b", 5.0]]})")},
      {1, "h1", reply(R"({"columns": ["module", "avg"], "rows": [["a", 3.0]]})")},
  };
  Result<json> merged = merge_per_rank(results, "");
  ASSERT_TRUE(merged.is_ok()) << merged.status().message();
  EXPECT_EQ((*merged)["columns"], json({"_rank", "_host", "module", "avg"}));
  EXPECT_EQ((*merged)["rows"], json({{0, "h0", "a", 1.0}, {0, "h0", "b", 5.0}, {1, "h1", "a", 3.0}}));
  merged = merge_per_rank(results, "ORDER BY 2 DESC LIMIT 2");  // 2: the statement's second column
  ASSERT_TRUE(merged.is_ok()) << merged.status().message();
  EXPECT_EQ((*merged)["rows"], json({{0, "h0", "b", 5.0}, {1, "h1", "a", 3.0}}));
  merged = merge_per_rank(results, "ORDER BY avg LIMIT 1");
  ASSERT_TRUE(merged.is_ok());
  EXPECT_EQ((*merged)["rows"], json({{0, "h0", "a", 1.0}}));
  // An ORDER BY on what the result lacks cannot be applied here.
  EXPECT_FALSE(merge_per_rank(results, "ORDER BY duration").is_ok());
}

TEST(MergePerRank, KeepsARankColumnTheStatementSelected) {
  std::vector<RankResult> results = {{3, "h", reply(R"({"columns": ["_rank", "n"], "rows": [[3, 7]]})")}};
  Result<json> merged = merge_per_rank(results, "ORDER BY n");
  ASSERT_TRUE(merged.is_ok());
  EXPECT_EQ((*merged)["columns"], json({"_rank", "n", "_host"}));
  EXPECT_EQ((*merged)["rows"], json({{3, 7, "h"}}));
  results.push_back({5, "g", reply(R"({"columns": ["_rank", "n"], "rows": [[5, 9]]})")});
  merged = merge_per_rank(results, "ORDER BY 2 DESC");
  ASSERT_TRUE(merged.is_ok());
  EXPECT_EQ((*merged)["rows"], json({{5, 9, "g"}, {3, 7, "h"}}));
}

TEST(RunOverRows, AggregatesEveryRanksRowsWithTheAgentsFunctions) {
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> catalog = {
      {"python.torch_trace", {{"module", "TEXT"}, {"duration", "REAL"}}}};
  std::vector<std::string> missing;
  Result<std::map<std::string, std::vector<std::string>>> reads = columns_read(
      "SELECT module, median(duration) FROM python.torch_trace GROUP BY module", catalog, &missing);
  ASSERT_TRUE(reads.is_ok()) << reads.status().message();
  EXPECT_TRUE(missing.empty());
  EXPECT_EQ((*reads)["python.torch_trace"], (std::vector<std::string>{"module", "duration"}));
  // A table the catalog lacks is named, to be described by a rank.
  reads = columns_read("SELECT * FROM process.threads", catalog, &missing);
  ASSERT_TRUE(reads.is_ok());
  EXPECT_EQ(missing, std::vector<std::string>{"process.threads"});

  std::map<std::string, std::vector<json>> tables = {
      {"python.torch_trace",
       {reply(R"({"columns": ["module", "duration", "_rank", "_host"],
                  "rows": [["a", 1, 0, "h"], ["a", 2, 0, "h"]]})"),
        reply(R"({"columns": ["module", "duration", "_rank", "_host"],
                  "rows": [["a", 9, 1, "g"], ["b", 4, 1, "g"]]})")}}};
  Result<json> r = run_over_rows(
      "SELECT module, median(duration) AS m, count(DISTINCT _rank) AS ranks FROM python.torch_trace "
      "GROUP BY module ORDER BY module",
      catalog, tables);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ((*r)["columns"], json({"module", "m", "ranks"}));
  EXPECT_EQ((*r)["rows"], json({{"a", 2.0, 2}, {"b", 4.0, 1}}));
}

TEST(StackKey, GroupsByFunctionAndFileUnlessExact) {
  json a = reply(R"([{"func": "get", "file": "queue.py", "lineno": 171},
                     {"func": "main", "file": "t.py", "lineno": 3}])");
  json b = reply(R"([{"func": "get", "file": "queue.py", "lineno": 180},
                     {"func": "main", "file": "t.py", "lineno": 3}])");
  EXPECT_EQ(stack_key(a, false), stack_key(b, false));
  EXPECT_NE(stack_key(a, true), stack_key(b, true));
}

TEST(Job, ReadsTheLaunchersEnvironment) {
  using namespace std::string_literals;
  JobInfo job = parse_job(
      "PATH=/bin\0RANK=5\0WORLD_SIZE=8\0LOCAL_RANK=1\0MASTER_ADDR=10.0.0.1\0"
      "MASTER_PORT=29500\0TORCHELASTIC_RUN_ID=abc\0"s);
  EXPECT_TRUE(job.in_job());
  EXPECT_EQ(job.rank, 5);
  EXPECT_EQ(job.port_offset(), 1);
  EXPECT_EQ(job.key(), "10.0.0.1:29500/abc/8");
  EXPECT_FALSE(parse_job("RANK=8\0WORLD_SIZE=8\0"s).in_job());  // not a rank of that job
  EXPECT_FALSE(parse_job("RANK=x\0WORLD_SIZE=8\0"s).in_job());
  EXPECT_EQ(parse_job("RANK=6\0WORLD_SIZE=8\0LOCAL_WORLD_SIZE=4\0"s).port_offset(), 2);
  // torchrun's own Python is a launcher; its ranks are not.
  EXPECT_TRUE(
      is_rank_launcher("/usr/bin/python3\0-m\0torch.distributed.run\0--nproc_per_node\0008\0t.py\0"s, {}));
  EXPECT_TRUE(is_rank_launcher("/usr/bin/python3\0/usr/local/bin/torchrun\0t.py\0"s, {}));
  EXPECT_TRUE(is_rank_launcher("python3\0scripts/torchrun.py\0--nproc_per_node\0002\0"s, {}));
  EXPECT_TRUE(is_rank_launcher("python3\0/usr/lib/python3/dist-packages/torch/distributed/run.py\0"s, {}));
  EXPECT_FALSE(is_rank_launcher("/usr/bin/python3\0-u\0t.py\0"s, {}));
  EXPECT_FALSE(is_rank_launcher("python3\0-m\0torch.distributed.run\0"s, job));
}

}  // namespace
}  // namespace probing::cli
