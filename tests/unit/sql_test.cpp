// The SQL engine without a target: column stores, their virtual tables (pruning, ordering,
// caps), live tables with pushdown, and the engine's limits and read-only rule.
#include <gtest/gtest.h>

#include <atomic>
#include <bit>
#include <cfloat>
#include <climits>
#include <cmath>
#include <functional>
#include <map>
#include <malloc.h>
#include <random>
#include <set>
#include <thread>

#include "core/settings.h"
#include "sql/authorizer.h"
#include "sql/column_store.h"
#include "sql/engine.h"

namespace probing::sql {
namespace {

class SqlTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    declare_builtin_settings(settings());
    // One store shared by the tests: 100 steps of 1000 rows, a time column, repeated text.
    auto store = std::make_shared<ColumnStore>(
        "python", "trace",
        std::vector<ColumnDef>{{"step", ColumnType::kInteger, ""},
                               {"module", ColumnType::kText, ""},
                               {"duration", ColumnType::kReal, ""},
                               {"note", ColumnType::kText, ""}},
        ColumnStore::Limits{1'000'000, 256u << 20, 4096});
    for (long long step = 0; step < 100; ++step) {
      for (int i = 0; i < 1000; ++i) {
        std::string module = "layer." + std::to_string(i % 10);
        Cell cells[] = {step, std::string_view(module), 0.001 * (i % 7), i == 0 ? Cell{std::string_view("first")} : Cell{}};
        ASSERT_TRUE(store->append(cells).is_ok());
      }
    }
    ASSERT_TRUE(Engine::get().add_store(store, "test store").is_ok());
    ASSERT_TRUE(Engine::get()
                    .add_live_table({"process", "numbers", "test live table",
                                     {{"n", ColumnType::kInteger, ""}, {"square", ColumnType::kInteger, ""}},
                                     {0},
                                     [](const ScanRequest& r) -> Result<LiveRows> {
                                       ++numbers_fetched;
                                       LiveRows out;
                                       for (const auto& [column, value] : r.equals) {
                                         long long n = std::get<long long>(value);
                                         out.rows.push_back({n, n * n});
                                         out.notices.push_back("pushed n = " + std::to_string(n));
                                         return out;
                                       }
                                       for (long long n = 0; n < 10; ++n) out.rows.push_back({n, n * n});
                                       return out;
                                     }})
                    .is_ok());
  }

  static inline int numbers_fetched = 0;  // calls of process.numbers' fetch

  static QueryResult run(const std::string& sql) {
    Result<QueryResult> r = Engine::get().query(sql);
    EXPECT_TRUE(r.is_ok()) << sql << ": " << r.status().message();
    return r.is_ok() ? std::move(r).value() : QueryResult{};
  }
};

TEST_F(SqlTest, TimeSeriesFunctions) {
  // Values worked out by hand; the e2e test checks them against Python's statistics on random data.
  auto one = [](const std::string& sql) {
    QueryResult r = run(sql);
    return r.rows.empty() ? nlohmann::json() : r.rows[0][0];
  };
  EXPECT_DOUBLE_EQ(one("SELECT median(column1) FROM (VALUES (1.0), (2.0), (4.0), (NULL), (7.0))").get<double>(), 3.0);
  EXPECT_DOUBLE_EQ(one("SELECT percentile(column1, 0.9) FROM (VALUES (1), (2), (4), (7))").get<double>(), 6.1);
  EXPECT_DOUBLE_EQ(one("SELECT variance(column1) FROM (VALUES (1), (2), (4), (7))").get<double>(), 7.0);
  EXPECT_DOUBLE_EQ(one("SELECT variance_pop(column1) FROM (VALUES (1), (2), (4), (7))").get<double>(), 5.25);
  EXPECT_TRUE(one("SELECT stddev(column1) FROM (VALUES (1))").is_null());  // one row: no sample deviation
  EXPECT_TRUE(one("SELECT median(column1) FROM (VALUES (NULL))").is_null());
  EXPECT_EQ(one("SELECT min_by(column1, column2) FROM (VALUES ('a', 3), ('b', 1), ('c', NULL), ('d', 1))"), "b");
  EXPECT_EQ(one("SELECT last(column1, column2) FROM (VALUES ('a', 3), ('b', 1), ('c', 9))"), "c");
  EXPECT_DOUBLE_EQ(one("SELECT rate(column1, column2) FROM (VALUES (10, 100), (40, 110), (25, 105))").get<double>(),
                   3.0);
  EXPECT_DOUBLE_EQ(one("SELECT delta(column1, column2) FROM (VALUES (10, 100), (40, 110))").get<double>(), 30.0);
  EXPECT_EQ(one("SELECT histogram(column1, 10) FROM (VALUES (1), (5), (12), (-3), (NULL))"), R"({"-10":1,"0":2,"10":1})");
  EXPECT_EQ(one("SELECT time_bucket('1 minute', 1700000059)"), 1700000040);  // 28333334 minutes
  EXPECT_DOUBLE_EQ(one("SELECT time_bucket(0.5, 10.74)").get<double>(), 10.5);
  EXPECT_DOUBLE_EQ(one("SELECT time_bucket('250 ms', 10.74)").get<double>(), 10.5);
  EXPECT_EQ(one("SELECT to_timestamp(1700000000.25)"), "2023-11-14 22:13:20.250000");
  for (const char* bad : {"SELECT time_bucket('fortnight', 1)", "SELECT percentile(column1, 99) FROM (VALUES (1))",
                          "SELECT histogram(column1, 0) FROM (VALUES (1))"}) {
    Result<QueryResult> r = Engine::get().query(bad);
    EXPECT_FALSE(r.is_ok()) << bad;
  }
}

TEST_F(SqlTest, GroupByOverTheStore) {
  QueryResult r = run("SELECT module, count(*), sum(step) FROM python.trace GROUP BY module ORDER BY module");
  ASSERT_EQ(r.rows.size(), 10u);
  EXPECT_EQ(r.rows[0][0], "layer.0");
  EXPECT_EQ(r.rows[0][1], 10000);
  EXPECT_EQ(r.rows[0][2], 100 * 99 / 2 * 100);
  EXPECT_EQ(r.columns, (std::vector<std::string>{"module", "count(*)", "sum(step)"}));
}

TEST_F(SqlTest, PrunedScansGiveTheSameRowsAsFullOnes) {
  // `+ 0` keeps the constraint from the virtual table, so the second query scans everything.
  for (const char* op : {">", ">=", "<", "<=", "="}) {
    std::string cond = std::string(op) + " 57";
    QueryResult pruned = run("SELECT count(*), sum(duration) FROM python.trace WHERE step " + cond);
    QueryResult full = run("SELECT count(*), sum(duration) FROM python.trace WHERE step + 0 " + cond);
    EXPECT_EQ(pruned.rows, full.rows) << op;
  }
  EXPECT_EQ(run("SELECT count(*) FROM python.trace WHERE step > 94").rows[0][0], 5000);
  EXPECT_EQ(run("SELECT count(*) FROM python.trace WHERE step > 1000").rows[0][0], 0);
  EXPECT_EQ(run("SELECT count(*) FROM python.trace WHERE step > 94.5").rows[0][0], 5000);
  EXPECT_EQ(run("SELECT count(*) FROM python.trace WHERE step > '94'").rows[0][0], 5000);  // text converts
}

TEST_F(SqlTest, SeedQueryOnTheLastSteps) {
  QueryResult r = run(
      "SELECT module, avg(duration) AS avg_time FROM python.trace "
      "WHERE step > (SELECT max(step) - 5 FROM python.trace) GROUP BY module ORDER BY module LIMIT 3");
  ASSERT_EQ(r.rows.size(), 3u);
  EXPECT_EQ(r.rows[0][0], "layer.0");
  EXPECT_EQ(run("SELECT max(step), min(step) FROM python.trace").rows[0], (std::vector<nlohmann::json>{99, 0}));
}

TEST_F(SqlTest, OrderByTheAscendingColumnIsServedInOrder) {
  QueryResult desc = run("SELECT step FROM python.trace ORDER BY step DESC LIMIT 3");
  EXPECT_EQ(desc.rows, (std::vector<std::vector<nlohmann::json>>{{99}, {99}, {99}}));
  QueryResult asc = run("SELECT step FROM python.trace WHERE step >= 98 ORDER BY step LIMIT 1001");
  ASSERT_EQ(asc.rows.size(), 1001u);
  EXPECT_EQ(asc.rows.front()[0], 98);
  EXPECT_EQ(asc.rows.back()[0], 99);
}

TEST_F(SqlTest, TextColumnsAreNotPrunedByNumbers) {
  auto store = std::make_shared<ColumnStore>("python", "texty", std::vector<ColumnDef>{{"v", ColumnType::kText, ""}},
                                             ColumnStore::Limits{1'000'000, 64u << 20, 4});
  for (long long v : {2, 3, 4, 9, 20, 30}) {
    Cell c[] = {v};
    ASSERT_TRUE(store->append(c).is_ok());
  }
  ASSERT_TRUE(Engine::get().add_store(store, "").is_ok());
  // Declared TEXT: the literal compares as text, '9' > '10', and the first chunk (2..9) must be read.
  QueryResult pruned = run("SELECT count(*) FROM python.texty WHERE v > '10'");
  QueryResult full = run("SELECT count(*) FROM python.texty WHERE v || '' > '10'");
  EXPECT_EQ(pruned.rows, full.rows);
}

TEST_F(SqlTest, MinAndMaxOfTextAcrossRescans) {
  // max() keeps its text between two scans of the inner table: the values must be copies.
  auto store = std::make_shared<ColumnStore>(
      "python", "names", std::vector<ColumnDef>{{"k", ColumnType::kInteger, ""}, {"name", ColumnType::kText, ""}},
      ColumnStore::Limits{1'000'000, 64u << 20, 100});  // all in the open chunk: copied per scan
  for (long long k = 0; k < 12; ++k) {
    std::string name = "name-" + std::to_string(k % 6) + std::string(40, 'x');  // not a short string
    Cell c[] = {k % 3, std::string_view(name)};
    ASSERT_TRUE(store->append(c).is_ok());
  }
  ASSERT_TRUE(Engine::get().add_store(store, "").is_ok());
  QueryResult r = run("SELECT max(b.name), min(b.name) FROM (SELECT 0 AS k UNION ALL SELECT 1 UNION ALL SELECT 2) a "
                      "JOIN python.names b ON b.k = a.k");
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0][0], "name-5" + std::string(40, 'x'));
  EXPECT_EQ(r.rows[0][1], "name-0" + std::string(40, 'x'));
}

TEST_F(SqlTest, NullsAndSparseText) {
  EXPECT_EQ(run("SELECT count(note), count(*) FROM python.trace").rows[0], (std::vector<nlohmann::json>{100, 100000}));
  EXPECT_EQ(run("SELECT note FROM python.trace WHERE step = 3 AND note IS NOT NULL").rows[0][0], "first");
}

TEST_F(SqlTest, LiveTablePushdownAndNotices) {
  QueryResult all = run("SELECT sum(square) FROM process.numbers");
  EXPECT_EQ(all.rows[0][0], 285);
  EXPECT_TRUE(all.notices.empty());
  QueryResult one = run("SELECT square FROM process.numbers WHERE n = 12");
  ASSERT_EQ(one.rows.size(), 1u);
  EXPECT_EQ(one.rows[0][0], 144);
  ASSERT_EQ(one.notices.size(), 1u);
  EXPECT_EQ(one.notices[0], "process.numbers: pushed n = 12");
}

TEST_F(SqlTest, LiveTableIsFetchedOncePerRequestInAQuery) {
  // A nested loop scans the inner side once per outer row: the same request is served from the
  // query's copy, so a self-join of python.objects takes the census once per side.
  numbers_fetched = 0;
  EXPECT_EQ(run("SELECT count(*) FROM process.numbers a, process.numbers b").rows[0][0], 100);
  EXPECT_LE(numbers_fetched, 2);
  // Pushed-down values are part of the request: one fetch per distinct n, each answered right.
  numbers_fetched = 0;
  QueryResult joined = run("SELECT a.n, b.square FROM process.numbers a JOIN process.numbers b ON b.n = a.n "
                           "ORDER BY a.n");
  ASSERT_EQ(joined.rows.size(), 10u);
  for (size_t i = 0; i < joined.rows.size(); ++i) {
    EXPECT_EQ(joined.rows[i][0], static_cast<long long>(i));
    EXPECT_EQ(joined.rows[i][1], static_cast<long long>(i * i));
  }
  EXPECT_LE(numbers_fetched, 11);
  numbers_fetched = 0;
  QueryResult three = run("SELECT count(*) FROM process.numbers a, process.numbers b, process.numbers c");
  EXPECT_EQ(three.rows[0][0], 1000);
  EXPECT_LE(numbers_fetched, 3);
  numbers_fetched = 0;
  run("SELECT sum(square) FROM process.numbers");
  run("SELECT sum(square) FROM process.numbers");
  EXPECT_EQ(numbers_fetched, 2);  // nothing is kept from one query to the next
}

TEST_F(SqlTest, ErrorsCarrySqliteMessages) {
  Result<QueryResult> r = Engine::get().query("SELEC 1");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find("syntax error"), std::string::npos);
  r = Engine::get().query("SELECT * FROM python.nope");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("no such table: python.nope"), std::string::npos);
}

TEST_F(SqlTest, ReadOnly) {
  for (const char* sql : {"DROP TABLE python.trace", "ATTACH '/tmp/probing-test.db' AS x", "CREATE TABLE t(x)",
                          "CREATE TEMP TABLE t(x)", "PRAGMA writable_schema = 1", "DELETE FROM python.trace"}) {
    Result<QueryResult> r = Engine::get().query(sql);
    ASSERT_FALSE(r.is_ok()) << sql;
    EXPECT_NE(r.status().message().find("read-only"), std::string::npos) << sql << ": " << r.status().message();
  }
  EXPECT_EQ(run("SELECT count(*) FROM python.trace").rows[0][0], 100000);  // still there
  EXPECT_FALSE(run("PRAGMA python.table_info(trace)").rows.empty());
}

TEST_F(SqlTest, OnlyAllowListedFunctions) {
  // fts3_tokenizer('simple') returns the address of a tokenizer module: a heap pointer.
  for (const char* sql : {"SELECT fts3_tokenizer('simple')", "SELECT load_extension('/tmp/x.so')",
                          "SELECT sqlite_log(1, 'x')", "SELECT fts5(NULL)", "SELECT rtreenode(2, x'00')",
                          "SELECT Load_Extension('/tmp/x.so')", "SELECT upper(fts3_tokenizer('simple'))"}) {
    Result<QueryResult> r = Engine::get().query(sql);
    ASSERT_FALSE(r.is_ok()) << sql;
    EXPECT_NE(r.status().message().find("does not allow the function"), std::string::npos)
        << sql << ": " << r.status().message();
  }
  // What users write still works: core, aggregate, window, date, math, JSON functions, -> and ->>.
  QueryResult ok = run(
      "SELECT upper('a'), round(avg(step), 1), max(duration), json_object('n', count(*)) ->> '$.n', "
      "strftime('%Y', 0, 'unixepoch'), sqrt(16.0), row_number() OVER () FROM python.trace GROUP BY module LIMIT 1");
  ASSERT_EQ(ok.rows.size(), 1u);
  EXPECT_EQ(ok.rows[0][0], "A");
  EXPECT_EQ(ok.rows[0][4], "1970");
  EXPECT_EQ(ok.rows[0][5], 4.0);
}

TEST(AuthorizerTest, FunctionsAndActions) {
  EXPECT_TRUE(function_allowed("count"));
  EXPECT_TRUE(function_allowed("JSON_EXTRACT"));
  EXPECT_TRUE(function_allowed("->>"));
  EXPECT_FALSE(function_allowed("fts3_tokenizer"));
  EXPECT_FALSE(function_allowed("load_extension"));
  EXPECT_FALSE(function_allowed(""));
  std::string denied;
  EXPECT_EQ(authorize(SQLITE_FUNCTION, nullptr, "fts3_tokenizer", &denied), SQLITE_DENY);
  EXPECT_EQ(denied, "the function fts3_tokenizer");
  denied.clear();
  EXPECT_EQ(authorize(SQLITE_READ, "trace", "step", &denied), SQLITE_OK);
  EXPECT_EQ(authorize(SQLITE_PRAGMA, "table_info", nullptr, &denied), SQLITE_OK);
  EXPECT_EQ(authorize(SQLITE_PRAGMA, "writable_schema", nullptr, &denied), SQLITE_DENY);
  EXPECT_EQ(denied, "this PRAGMA");
  denied.clear();
  // DROP TABLE deletes from the schema too: the statement is named, not its row change.
  EXPECT_EQ(authorize(SQLITE_DROP_TABLE, "t", nullptr, &denied), SQLITE_DENY);
  EXPECT_EQ(authorize(SQLITE_DELETE, "sqlite_master", nullptr, &denied), SQLITE_DENY);
  EXPECT_EQ(denied, "DROP TABLE");
}

TEST_F(SqlTest, RowCapCutsWithANotice) {
  QueryResult r = run("SELECT step FROM python.trace");
  EXPECT_TRUE(r.truncated);
  EXPECT_EQ(r.rows.size(), static_cast<size_t>(settings().get_int("query.max_rows")));
  ASSERT_FALSE(r.notices.empty());
  EXPECT_NE(r.notices.back().find("query.max_rows"), std::string::npos);
}

TEST_F(SqlTest, ResultBytesAreCountedBeforeARowIsEncoded) {
  // Each cell is under SQLite's length limit, the row is not: it is measured (blobs at their hex
  // size) and refused before any of it is encoded.
  ASSERT_TRUE(settings().set("query.max_result_bytes", "1000000").is_ok());
  QueryResult wide = run("SELECT randomblob(300000), randomblob(300000)");
  EXPECT_TRUE(wide.truncated);
  EXPECT_TRUE(wide.rows.empty());
  ASSERT_FALSE(wide.notices.empty());
  EXPECT_NE(wide.notices.back().find("1200006 bytes would pass 1000000"), std::string::npos) << wide.notices.back();
  QueryResult many = run("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 50) "
                         "SELECT randomblob(100000) FROM c");
  EXPECT_TRUE(many.truncated);
  EXPECT_EQ(many.rows.size(), 4u);  // 4 x 200003 bytes fit in 1000000; a 5th would not
  ASSERT_TRUE(settings().set("query.max_result_bytes", "16777216").is_ok());
}

TEST_F(SqlTest, TimeoutStopsARunawayQuery) {
  ASSERT_TRUE(settings().set("query.timeout_s", "0.2").is_ok());
  auto start = std::chrono::steady_clock::now();
  Result<QueryResult> r = Engine::get().query(
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c");
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(settings().set("query.timeout_s", "10").is_ok());
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), Code::kTimeout);
  EXPECT_NE(r.status().message().find("query.timeout_s"), std::string::npos);
  EXPECT_LT(took, 2.0);
}

TEST_F(SqlTest, SetChangesSettings) {
  QueryResult r = run("SET eval.timeout_s = 12");
  EXPECT_EQ(r.rows[0], (std::vector<nlohmann::json>{"eval.timeout_s", "12"}));
  EXPECT_EQ(settings().get_double("eval.timeout_s"), 12);
  run("set eval.timeout_s to '30'");
  EXPECT_EQ(settings().get_double("eval.timeout_s"), 30);
  Result<QueryResult> bad = Engine::get().query("SET eval.timeout_s = soon");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  Result<QueryResult> unknown = Engine::get().query("SET no.such = 1");
  ASSERT_FALSE(unknown.is_ok());
  EXPECT_NE(unknown.status().message().find("unknown setting 'no.such'"), std::string::npos);
}

TEST_F(SqlTest, ConcurrentQueriesAndAppends) {
  auto store = std::make_shared<ColumnStore>("python", "busy",
                                             std::vector<ColumnDef>{{"i", ColumnType::kInteger, ""}},
                                             ColumnStore::Limits{1'000'000, 64u << 20, 1024});
  ASSERT_TRUE(Engine::get().add_store(store, "").is_ok());
  std::atomic<bool> stop{false};
  Cell first[] = {0LL};
  ASSERT_TRUE(store->append(first).is_ok());
  std::thread writer([&] {
    for (long long i = 1; !stop && i < 500'000; ++i) {  // under the caps: nothing dropped
      Cell c[] = {i};
      (void)store->append(c);
    }
  });
  std::vector<std::thread> readers;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&] {
      for (int k = 0; k < 20; ++k) {
        // The rows seen are a prefix of 0, 1, 2, ...: count(*) = max(i) + 1 in every snapshot.
        Result<QueryResult> r = Engine::get().query("SELECT count(*), max(i) + 1 FROM python.busy");
        if (!r.is_ok() || r->rows[0][0] != r->rows[0][1]) {
          ADD_FAILURE() << (r.is_ok() ? r->to_json().dump() : r.status().message());
          ++failures;
        }
      }
    });
  }
  for (auto& r : readers) r.join();
  stop = true;
  writer.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST(ColumnStoreTest, DropsTheOldestChunksPastTheCaps) {
  ColumnStore store("python", "capped", {{"i", ColumnType::kInteger, ""}}, {1000, 1u << 30, 100});
  for (long long i = 0; i < 5050; ++i) {
    Cell c[] = {i};
    ASSERT_TRUE(store.append(c).is_ok());
  }
  ColumnStore::Stats st = store.stats();
  EXPECT_LE(st.rows, 1000u);
  EXPECT_GE(st.rows, 900u);
  EXPECT_EQ(st.appended, 5050u);
  EXPECT_EQ(st.dropped + st.rows, 5050u);
  ColumnStore::Snapshot snap = store.snapshot();
  const ColumnChunk& last = snap.chunks.back()->columns[0];
  EXPECT_EQ(last.int_at(snap.chunks.back()->rows - 1), 5049);  // the newest rows survive

  ColumnStore by_bytes("python", "small", {{"s", ColumnType::kText, ""}}, {1'000'000, 64 << 10, 100});
  std::string big(500, 'x');
  for (int i = 0; i < 1000; ++i) {
    std::string v = big + std::to_string(i);
    Cell c[] = {std::string_view(v)};
    ASSERT_TRUE(by_bytes.append(c).is_ok());
  }
  EXPECT_LE(by_bytes.stats().bytes, 64u << 10);
  EXPECT_GT(by_bytes.stats().dropped, 0u);
}

TEST(ColumnStoreTest, DropBelowDropsSealedChunksWhollyOlderThanTheCutoff) {
  ColumnStore store("python", "timed", {{"time", ColumnType::kReal, ""}}, {1'000'000, 1u << 30, 100});
  for (int i = 0; i < 1050; ++i) {
    Cell c[] = {1000.0 + i};
    ASSERT_TRUE(store.append(c).is_ok());
  }
  // Chunks of 100: [1000, 1100), [1100, 1200), ...; 1250 falls inside the third.
  EXPECT_EQ(store.drop_below(0, 1250), 200u);
  EXPECT_EQ(store.stats().rows, 850u);
  EXPECT_EQ(store.snapshot().chunks.front()->columns[0].number_at(0), 1200.0);
  EXPECT_EQ(store.drop_below(0, 1250), 0u);  // the chunk holding 1250 stays whole
  EXPECT_EQ(store.drop_below(0, 1e9), 1000u - 200u + 0u);  // every sealed chunk; the open one stays
  EXPECT_EQ(store.stats().rows, 50u);
  EXPECT_EQ(store.drop_below(7, 1e9), 0u);  // no such column
}

TEST(ColumnStoreTest, TextHintsSkipTheLookupOnlyInTheChunkTheyWereTakenIn) {
  ColumnStore store("python", "hinted", {{"i", ColumnType::kInteger, ""}, {"name", ColumnType::kText, ""}},
                    {1'000'000, 1u << 30, 4});
  ColumnStore::TextHint a, b;
  ColumnStore::TextHint* const hint_a[] = {nullptr, &a};
  ColumnStore::TextHint* const hint_b[] = {nullptr, &b};
  const char* names[] = {"encoder", "head", "encoder", "encoder", "head", "encoder", "head", "head", "x"};
  for (int i = 0; i < 9; ++i) {  // chunks of 4: the hints go stale at each seal
    Cell c[] = {static_cast<long long>(i), std::string_view(names[i])};
    bool is_a = std::string_view(names[i]) == "encoder";
    std::span<ColumnStore::TextHint* const> hints = is_a ? hint_a : hint_b;
    if (i == 8) hints = {};  // without a hint: looked up
    ASSERT_TRUE(store.append(c, hints).is_ok());
    if (i == 0) {
      EXPECT_NE(a.epoch, 0u);  // taken at the first append
    }
  }
  ColumnStore::Snapshot snap = store.snapshot();
  ASSERT_EQ(snap.chunks.size(), 3u);
  int row = 0;
  for (const auto& chunk : snap.chunks) {
    for (size_t r = 0; r < chunk->rows; ++r, ++row) {
      EXPECT_EQ(chunk->columns[0].int_at(r), row);
      EXPECT_EQ(chunk->columns[1].text_at(r), names[row]) << row;
    }
    // one dictionary entry per text in the chunk, hinted or not
    std::set<std::string> distinct(chunk->columns[1].dict().begin(), chunk->columns[1].dict().end());
    EXPECT_EQ(distinct.size(), chunk->columns[1].dict().size());
  }
  EXPECT_EQ(row, 9);
}

TEST(ColumnStoreTest, NaNIsNullAndBigIntegersCompareExactly) {
  ColumnStore store("python", "exact", {{"a", ColumnType::kInteger, ""}, {"b", ColumnType::kReal, ""}}, {});
  long long big = (1LL << 53) + 1;
  Cell r1[] = {big, 1.0};
  Cell r2[] = {big - 1, std::nan("")};
  ASSERT_TRUE(store.append(r1).is_ok());
  ASSERT_TRUE(store.append(r2).is_ok());
  EXPECT_FALSE(store.ascending(0));  // 2^53 + 1, then 2^53: a double would call them equal
  EXPECT_FALSE(store.ascending(1));  // NaN is not a number to order by
  ColumnStore::Snapshot snap = store.snapshot();
  EXPECT_EQ(snap.chunks.back()->columns[1].tag(1), ColumnChunk::kNull);
}

TEST(ColumnStoreTest, TracksWhetherAColumnAscends) {
  ColumnStore store("python", "asc", {{"a", ColumnType::kInteger, ""}, {"b", ColumnType::kReal, ""}}, {});
  Cell r1[] = {1LL, 2.0};
  Cell r2[] = {1LL, 1.0};
  ASSERT_TRUE(store.append(r1).is_ok());
  ASSERT_TRUE(store.append(r2).is_ok());
  EXPECT_TRUE(store.ascending(0));
  EXPECT_FALSE(store.ascending(1));
  Cell too_many[] = {1LL, 2.0, 3.0};
  EXPECT_EQ(store.append(too_many).code(), Code::kInvalidArgument);
}


// Every cell of a sealed (encoded) chunk reads back as it was appended, bit for bit, whatever the
// column holds: each encoding, NULLs among the values, mixed kinds, and the extremes.
TEST(ColumnStoreTest, EncodedChunksReadBackEveryCell) {
  using Row = std::vector<Cell>;
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> unit(0, 1);
  const size_t n = 1000;
  const double ns = 1e-9;
  std::vector<std::string> words = {"forward", "backward", "step", "data", ""};
  // Column generators: i -> cell.
  std::vector<std::pair<std::string, std::function<Cell(size_t)>>> gens = {
      {"step", [](size_t i) { return Cell{static_cast<long long>(i / 100)}; }},
      {"big", [&](size_t i) { return Cell{i % 2 ? LLONG_MIN + static_cast<long long>(i) : LLONG_MAX - 1}; }},
      {"ints_nulls",
       [&](size_t i) { return i % 7 ? Cell{static_cast<long long>(rng() % 1000) - 500} : Cell{}; }},
      {"time", [&](size_t i) { return Cell{1.7e9 + static_cast<double>(i) * 0.001234 + unit(rng) * 1e-6}; }},
      {"ns", [&](size_t) { return Cell{static_cast<double>(rng() % 100'000'000) * ns}; }},
      {"ns_div", [&](size_t) { return Cell{static_cast<double>(rng() % 100'000'000) / 1e9}; }},
      {"whole", [&](size_t i) { return Cell{static_cast<double>(i) - 300.0}; }},
      {"aligned", [&](size_t) { return Cell{static_cast<long long>(rng() % 1000) * 512 - 4096}; }},
      {"mib", [&](size_t) { return Cell{static_cast<double>((rng() % 1000000) * 512) / 1048576}; }},
      {"random",
       [&](size_t) {
         return Cell{(unit(rng) - 0.5) * std::pow(10.0, static_cast<double>(rng() % 40) - 20)};
       }},
      {"odd_reals",
       [&](size_t i) {
         const double odd[] = {-0.0, 0.0, INFINITY, -INFINITY, 5e-324, DBL_MAX, -DBL_MIN, 1.0};
         return Cell{odd[i % 8]};
       }},
      {"text", [&](size_t i) { return i % 5 == 4 ? Cell{} : Cell{std::string_view(words[rng() % 4])}; }},
      {"mixed", [&](size_t i) {
         switch (i % 4) {
           case 0: return Cell{static_cast<long long>(i)};
           case 1: return Cell{0.5 * static_cast<double>(i)};
           case 2: return Cell{std::string_view(words[i % 5])};
           default: return Cell{};
         }
       }},
      {"nulls", [](size_t) { return Cell{}; }},
  };
  std::vector<ColumnDef> defs;
  for (const auto& [name, gen] : gens) defs.push_back({name, ColumnType::kReal, ""});
  ColumnStore store("python", "encoded", defs, {1'000'000, 1u << 30, 256});
  std::vector<Row> rows;
  for (size_t i = 0; i < n; ++i) {
    Row row;
    for (auto& g : gens) row.push_back(g.second(i));
    ASSERT_TRUE(store.append(row).is_ok());
    rows.push_back(std::move(row));
  }
  ColumnStore::Snapshot snap = store.snapshot();
  size_t i = 0, sealed = 0;
  for (const auto& chunk : snap.chunks) {
    if (chunk->columns[0].encoded()) ++sealed;
    for (size_t r = 0; r < chunk->rows; ++r, ++i) {
      for (size_t c = 0; c < gens.size(); ++c) {
        const ColumnChunk& col = chunk->columns[c];
        const Cell& want = rows[i][c];
        SCOPED_TRACE(gens[c].first + " row " + std::to_string(i));
        if (const long long* v = std::get_if<long long>(&want)) {
          ASSERT_EQ(col.tag(r), ColumnChunk::kInt);
          ASSERT_EQ(col.int_at(r), *v);
        } else if (const double* d = std::get_if<double>(&want)) {
          ASSERT_EQ(col.tag(r), ColumnChunk::kReal);
          ASSERT_EQ(std::bit_cast<uint64_t>(col.real_at(r)), std::bit_cast<uint64_t>(*d)) << *d;
        } else if (const std::string_view* s = std::get_if<std::string_view>(&want)) {
          ASSERT_EQ(col.tag(r), ColumnChunk::kText);
          ASSERT_EQ(col.text_at(r), *s);
        } else {
          ASSERT_EQ(col.tag(r), ColumnChunk::kNull);
        }
      }
    }
  }
  EXPECT_EQ(i, n);
  EXPECT_EQ(sealed, n / 256);
}

// What the encodings save on a torch_trace-shaped table: bytes per row as the store counts them,
// and as the allocator has them.
TEST(ColumnStoreTest, EncodedTorchTraceRowsAreSmall) {
  std::vector<ColumnDef> defs = {
      {"step", ColumnType::kInteger, ""},   {"seq", ColumnType::kInteger, ""},
      {"module", ColumnType::kText, ""},    {"stage", ColumnType::kText, ""},
      {"duration", ColumnType::kReal, ""},  {"self_duration", ColumnType::kReal, ""},
      {"allocated", ColumnType::kReal, ""}, {"max_allocated", ColumnType::kReal, ""},
      {"time", ColumnType::kReal, ""}};
  const size_t in_use_before = mallinfo2().uordblks;
  ColumnStore store("python", "shaped", defs, {10'000'000, 1u << 30, 8192});
  std::mt19937_64 rng(7);
  const size_t modules = 60, steps = 2000;
  double t = 1.7e9;
  std::vector<std::string> names;
  for (size_t m = 0; m < modules; ++m) names.push_back("model.layers." + std::to_string(m) + ".mlp");
  for (size_t step = 0; step < steps; ++step) {
    for (size_t m = 0; m < modules; ++m) {
      const long long ns = 2000 + static_cast<long long>(rng() % 50000);
      const double duration = static_cast<double>(ns) / 1e9;
      t += duration;
      Cell row[] = {static_cast<long long>(step), static_cast<long long>(m), std::string_view(names[m]),
                    std::string_view("forward"), duration, duration * 0.7, Cell{}, Cell{}, t};
      ASSERT_TRUE(store.append(row).is_ok());
    }
  }
  ColumnStore::Stats st = store.stats();
  // What the store says it keeps is what it holds from the allocator (the encoded chunks, and the
  // open chunk's 9 bytes a cell): sealing gives the unencoded cells back.
  const size_t held = mallinfo2().uordblks - in_use_before;
  EXPECT_LT(static_cast<double>(held), 1.25 * static_cast<double>(st.bytes) + (1 << 20))
      << held << " " << st.bytes;
  const double per_row = static_cast<double>(st.bytes) / static_cast<double>(st.rows);
  RecordProperty("bytes_per_row", std::to_string(per_row));
  EXPECT_LT(per_row, 24.0) << per_row;
}


// GROUP BY and DISTINCT over a store are grouped by the store (hashing, no sort): the groups must
// be SQLite's own, where an integer and a double of the same value are one group, NULLs are one
// group and text is told apart from numbers, across sealed chunks and the open one.
TEST_F(SqlTest, StoreGroupsRowsAsSqliteWould) {
  auto store = std::make_shared<ColumnStore>(
      "python", "grouped",
      std::vector<ColumnDef>{
          {"a", ColumnType::kText, ""}, {"b", ColumnType::kReal, ""}, {"x", ColumnType::kInteger, ""}},
      ColumnStore::Limits{1'000'000, 64u << 20, 256});
  const char* texts[] = {"x", "y", "z"};
  std::map<std::pair<std::string, std::string>, std::pair<long long, long long>> want;  // -> count, sum
  std::mt19937_64 rng(3);
  for (long long i = 0; i < 5000; ++i) {
    const int ta = static_cast<int>(rng() % 4), tb = static_cast<int>(rng() % 6);
    Cell a = ta == 3 ? Cell{} : Cell{std::string_view(texts[ta])};
    Cell b;
    std::string b_key;
    switch (tb) {
      case 0: b = 1LL; b_key = "n1"; break;
      case 1: b = 1.0; b_key = "n1"; break;  // the same group as the integer 1
      case 2: b = 2.5; b_key = "n2.5"; break;
      case 3: b = -0.0; b_key = "n0"; break;
      case 4: b = 0LL; b_key = "n0"; break;  // 0 and -0.0: one group
      default: b = std::string_view("1"); b_key = "t1"; break;  // text '1' is not the number 1
    }
    Cell row[] = {a, b, i};
    ASSERT_TRUE(store->append(row).is_ok());
    auto& w = want[{ta == 3 ? "NULL" : texts[ta], b_key}];
    ++w.first;
    w.second += i;
  }
  ASSERT_TRUE(Engine::get().add_store(store, "").is_ok());
  QueryResult plan = run("EXPLAIN QUERY PLAN SELECT a, b, count(*) FROM python.grouped GROUP BY a, b");
  EXPECT_EQ(plan.to_json().dump().find("TEMP B-TREE"), std::string::npos) << plan.to_json().dump();
  QueryResult r = run("SELECT coalesce(a, 'NULL'), typeof(b), b, count(*), sum(x) FROM python.grouped GROUP BY a, b");
  std::map<std::pair<std::string, std::string>, std::pair<long long, long long>> got;
  for (const auto& row : r.rows) {
    std::string b_key;
    if (row[1] == "text") {
      b_key = "t" + row[2].get<std::string>();
    } else {
      const double v = row[2].get<double>();
      b_key = v == 2.5 ? "n2.5" : v == 1 ? "n1" : "n0";
    }
    EXPECT_TRUE(got.emplace(std::make_pair(row[0].get<std::string>(), b_key),
                            std::make_pair(row[3].get<long long>(), row[4].get<long long>()))
                    .second)
        << "a group came twice: " << row;
  }
  EXPECT_EQ(got, want);
  QueryResult distinct = run("SELECT DISTINCT a FROM python.grouped");
  EXPECT_EQ(distinct.rows.size(), 4u);  // x, y, z and NULL
  // An ORDER BY of the GROUP BY's terms gets SQLite's order: NULL, numbers by value, then text.
  QueryResult down = run("SELECT a FROM python.grouped GROUP BY a ORDER BY a DESC");
  EXPECT_EQ(down.rows, (std::vector<std::vector<nlohmann::json>>{{"z"}, {"y"}, {"x"}, {nullptr}}));
  QueryResult up = run("SELECT typeof(b), b FROM python.grouped GROUP BY b ORDER BY b");
  ASSERT_EQ(up.rows.size(), 4u);
  EXPECT_EQ(up.rows[0][1].get<double>(), 0);
  EXPECT_EQ(up.rows[1][1].get<double>(), 1);
  EXPECT_EQ(up.rows[2][1].get<double>(), 2.5);
  EXPECT_EQ(up.rows[3], (std::vector<nlohmann::json>{"text", "1"}));
}


// Grouping on a column of many distinct values (past what the store hashes) sorts the rows
// instead: the groups are still SQLite's, in its order.
TEST_F(SqlTest, StoreGroupsManyDistinctValuesBySorting) {
  auto store = std::make_shared<ColumnStore>(
      "python", "many", std::vector<ColumnDef>{{"x", ColumnType::kInteger, ""}, {"s", ColumnType::kText, ""}},
      ColumnStore::Limits{1'000'000, 256u << 20, 8192});
  const long long n = 70'000;
  for (long long i = 0; i < n; ++i) {
    const long long x = (i * 7919) % n;  // every value once, not in order
    std::string text = "k" + std::to_string(x % 69'000);
    Cell row[] = {x, std::string_view(text)};
    ASSERT_TRUE(store->append(row).is_ok());
  }
  ASSERT_TRUE(Engine::get().add_store(store, "").is_ok());
  EXPECT_EQ(run("SELECT x FROM python.many GROUP BY x ORDER BY x DESC LIMIT 3").rows,
            (std::vector<std::vector<nlohmann::json>>{{n - 1}, {n - 2}, {n - 3}}));
  EXPECT_EQ(run("SELECT count(*) FROM (SELECT x FROM python.many GROUP BY x)").rows[0][0], n);
  QueryResult texts =
      run("SELECT count(*), sum(c) FROM (SELECT s, count(*) AS c FROM python.many GROUP BY s)");
  EXPECT_EQ(texts.rows[0], (std::vector<nlohmann::json>{69'000, n}));
  EXPECT_EQ(run("SELECT s FROM python.many GROUP BY s LIMIT 2").rows,
            (std::vector<std::vector<nlohmann::json>>{{"k0"}, {"k1"}}));
}

}  // namespace
}  // namespace probing::sql
