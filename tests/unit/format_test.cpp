// The result formatters of `probing query` and `probing config`, on replies written by hand.
#include "cli/format.h"

#include <gtest/gtest.h>

namespace probing::cli {
namespace {

nlohmann::json reply(const char* text) { return nlohmann::json::parse(text); }

TEST(FormatTable, AlignsColumnsAndRightAlignsNumbers) {
  auto r = reply(R"({"columns": ["func", "file", "lineno"],
                     "rows": [["main", "/a.py", 3], ["handler", "/srv/b.py", 120]]})");
  EXPECT_EQ(format_table(r, 0),
            "func    | file      | lineno\n"
            "--------+-----------+-------\n"
            "main    | /a.py     |      3\n"
            "handler | /srv/b.py |    120\n"
            "(2 rows)\n");
}

TEST(FormatTable, OneRowFooterAndNoFooter) {
  auto r = reply(R"({"columns": ["n"], "rows": [[1]]})");
  EXPECT_EQ(format_table(r, 0), "n\n-\n1\n(1 row)\n");
  EXPECT_EQ(format_table(r, 0, /*row_count=*/false), "n\n-\n1\n");
}

TEST(FormatTable, NullAndMixedColumnIsLeftAligned) {
  auto r = reply(R"({"columns": ["v", "w"], "rows": [[null, "xyz"], ["text", 5]]})");
  EXPECT_EQ(format_table(r, 0),
            "v    | w\n"
            "-----+----\n"
            "NULL | xyz\n"
            "text |   5\n"
            "(2 rows)\n");
}

TEST(FormatTable, FloatsCompactIntegersExact) {
  auto r = reply(R"({"columns": ["x"], "rows": [[1.5], [3.14159265358979], [1e-7], [2.0], [9007199254740993],
                                               [-9007199254740993], [18446744073709551615]]})");
  EXPECT_EQ(format_table(r, 0),
            "                   x\n"
            "--------------------\n"
            "                 1.5\n"
            "             3.14159\n"
            "               1e-07\n"
            "                   2\n"
            "    9007199254740993\n"
            "   -9007199254740993\n"
            "18446744073709551615\n"
            "(7 rows)\n");
}

TEST(FormatTable, EscapesNewlinesTabsAndControls) {
  auto r = reply(R"({"columns": ["s"], "rows": [["a\nb\tc\r\u001b[31m"]]})");
  EXPECT_EQ(format_table(r, 0), "s\n-----------------\na\\nb\\tc\\r\\x1b[31m\n(1 row)\n");
}

TEST(FormatTable, ShrinksTheWidestColumnToFit) {
  auto r = reply(R"({"columns": ["id", "text"], "rows": [[1, "abcdefghijklmnopqrstuvwxyz"]]})");
  // 2 + 3 + 10 = 15 columns: only the wide column shrinks.
  EXPECT_EQ(format_table(r, 15),
            "id | text\n"
            "---+-----------\n"
            " 1 | abcdefghi\xe2\x80\xa6\n"
            "(1 row)\n");
  // Unlimited and wide enough both leave cells whole.
  EXPECT_NE(format_table(r, 0).find("abcdefghijklmnopqrstuvwxyz"), std::string::npos);
  EXPECT_NE(format_table(r, 80).find("abcdefghijklmnopqrstuvwxyz"), std::string::npos);
}

TEST(FormatTable, EveryLineFitsTheWidth) {
  auto r = reply(R"({"columns": ["name", "value", "default", "description"],
                     "rows": [["eval.timeout_s", "30", "30", "Seconds an eval may run when the request names no timeout."],
                              ["server.max_body_bytes", "8388608", "8388608", "Largest request body the agent reads."]]})");
  std::string table = format_table(r, 60, false);
  size_t start = 0;
  for (size_t end = table.find('\n'); end != std::string::npos;
       start = end + 1, end = table.find('\n', start)) {
    std::string line = table.substr(start, end - start);
    size_t points = 0;
    for (char c : line) points += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    EXPECT_LE(points, 60u) << line;
  }
  EXPECT_NE(table.find("eval.timeout_s"), std::string::npos);  // the narrow columns stay whole
  EXPECT_NE(table.find("\xe2\x80\xa6"), std::string::npos);
}

TEST(FormatTable, NumbersAreNeverCut) {
  auto r = reply(R"({"columns": ["n", "s"], "rows": [[9007199254740993, "abcdefghij"], [null, "x"]]})");
  EXPECT_EQ(format_table(r, 24),
            "               n | s\n"
            "-----------------+------\n"
            "9007199254740993 | abcd\xe2\x80\xa6\n"
            "            NULL | x\n"
            "(2 rows)\n");
}

TEST(FormatTable, NeverNarrowerThanTheMinimum) {
  auto r = reply(R"({"columns": ["aaaaaa", "bbbbbb"], "rows": []})");
  EXPECT_EQ(format_table(r, 4), "aa\xe2\x80\xa6 | bb\xe2\x80\xa6\n----+----\n(0 rows)\n");
}

TEST(FormatTable, CutsUtf8ByCodePoints) {
  // "héllo wörld ✓" counts 13 code points; cut to 6 keeps 5 and the marker.
  auto r = reply(R"({"columns": ["k", "s"], "rows": [[1, "h\u00e9llo w\u00f6rld \u2713"]]})");
  EXPECT_EQ(format_table(r, 10), "k | s\n--+-------\n1 | h\xc3\xa9llo\xe2\x80\xa6\n(1 row)\n");
  EXPECT_EQ(format_table(r, 0),
            "k | s\n--+--------------\n1 | h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93\n(1 row)\n");
}

TEST(FormatTable, ZeroRows) {
  auto r = reply(R"({"columns": ["func", "lineno"], "rows": []})");
  EXPECT_EQ(format_table(r, 0), "func | lineno\n-----+-------\n(0 rows)\n");
}

TEST(FormatTable, ZeroColumns) {
  EXPECT_EQ(format_table(reply(R"({"columns": [], "rows": []})"), 0), "OK\n");
  EXPECT_EQ(format_table(reply(R"({"columns": [], "rows": [], "notices": ["eval.timeout_s = 10"]})"), 0), "");
  EXPECT_EQ(format_table(reply("{}"), 0), "OK\n");
}

TEST(FormatTable, ShortRowsReadNull) {
  auto r = reply(R"({"columns": ["a", "b"], "rows": [["x"]]})");
  EXPECT_EQ(format_table(r, 0), "a | b\n--+-----\nx | NULL\n(1 row)\n");
}

TEST(FormatCut, KeepsWholeUtf8Sequences) {
  std::string s = "\xe2\x9c\x93\xe2\x9c\x93\xe2\x9c\x93\xe2\x9c\x93";  // four ✓, 3 bytes each
  EXPECT_EQ(cut_to_width(s, 4), s);
  EXPECT_EQ(cut_to_width(s, 3), "\xe2\x9c\x93\xe2\x9c\x93\xe2\x80\xa6");
  EXPECT_EQ(cut_to_width(s, 1), "\xe2\x80\xa6");
  EXPECT_EQ(cut_to_width(s, 0), "");
  EXPECT_EQ(cut_to_width("abc", 10), "abc");
}

TEST(FormatJson, ArrayOfObjectsInColumnOrder) {
  auto r = reply(R"({"columns": ["z", "a"], "rows": [["main", 9007199254740993], [null, 1.5]]})");
  EXPECT_EQ(format_json(r),
            "[\n"
            "  {\n"
            "    \"z\": \"main\",\n"
            "    \"a\": 9007199254740993\n"
            "  },\n"
            "  {\n"
            "    \"z\": null,\n"
            "    \"a\": 1.5\n"
            "  }\n"
            "]\n");
}

TEST(FormatJson, SuffixesDuplicateColumnNames) {
  auto r = reply(R"({"columns": ["a", "a", "a_2", "a"], "rows": [[1, 2, 3, 4]]})");
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(format_json(r));
  ASSERT_EQ(j.size(), 1u);
  std::vector<std::string> keys;
  for (const auto& [key, value] : j[0].items()) keys.push_back(key);
  EXPECT_EQ(keys, (std::vector<std::string>{"a", "a_3", "a_2", "a_4"}));
  EXPECT_EQ(j[0]["a"], 1);
  EXPECT_EQ(j[0]["a_3"], 2);
  EXPECT_EQ(j[0]["a_2"], 3);
  EXPECT_EQ(j[0]["a_4"], 4);
}

TEST(FormatJson, ZeroRowsAndZeroColumns) {
  EXPECT_EQ(format_json(reply(R"({"columns": ["a"], "rows": []})")), "[]\n");
  EXPECT_EQ(format_json(reply(R"({"columns": [], "rows": []})")), "[]\n");
}

TEST(FormatCsv, QuotesOnlyWhatNeedsIt) {
  auto r = reply(R"({"columns": ["s", "n"],
                     "rows": [["plain", 1], ["a,b", 2.5], ["say \"hi\"", null], ["two\nlines", 9007199254740993],
                              ["cr\r", -1]]})");
  EXPECT_EQ(format_csv(r),
            "s,n\n"
            "plain,1\n"
            "\"a,b\",2.5\n"
            "\"say \"\"hi\"\"\",\n"
            "\"two\nlines\",9007199254740993\n"
            "\"cr\r\",-1\n");
}

TEST(FormatCsv, HeaderOnlyAndNothing) {
  EXPECT_EQ(format_csv(reply(R"({"columns": ["a", "b,c"], "rows": []})")), "a,\"b,c\"\n");
  EXPECT_EQ(format_csv(reply(R"({"columns": [], "rows": []})")), "");
}

TEST(FormatNotices, OneLineEachOnStderr) {
  EXPECT_EQ(
      format_notices(reply(
          R"j({"notices": ["the result was cut at 10000 rows (query.max_rows)"], "truncated": true})j")),
      "probing: note: the result was cut at 10000 rows (query.max_rows)\n");
  EXPECT_EQ(format_notices(reply(R"({"columns": ["a"], "rows": [[1], [2]], "truncated": true})")),
            "probing: note: the result was cut at 2 rows\n");
  EXPECT_EQ(format_notices(reply(R"({"columns": ["a"], "rows": [], "truncated": false, "notices": []})")),
            "");
}

}  // namespace
}  // namespace probing::cli
