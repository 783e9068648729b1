// The profiler's parts that need no target: the stack table, the asyncio task book on snapshots
// written by hand, and the renderers of `probing profile` on profiles written by hand.
#include <gtest/gtest.h>

#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "cli/profile_format.h"
#include "profile/stack_table.h"
#include "profile/tasks.h"

namespace probing {
namespace {

TEST(StackTable, InternsFramesAndStacksOnce) {
  profile::StackTable t(1 << 20);
  uint32_t a = t.intern_frame("f", "a.py", 3);
  uint32_t b = t.intern_frame("g", "a.py", 9);
  EXPECT_EQ(t.intern_frame("f", "a.py", 3), a);
  EXPECT_NE(t.intern_frame("f", "a.py", 4), a);  // another line, another frame
  std::vector<uint32_t> s1 = {a, b}, s2 = {b, a};
  uint32_t id = t.intern_stack(s1);
  EXPECT_NE(id, profile::StackTable::kFull);
  EXPECT_EQ(t.intern_stack(s1), id);
  EXPECT_NE(t.intern_stack(s2), id);
  EXPECT_EQ(t.stacks(), 2u);
  std::vector<profile::Frame> frames = t.frames_of(id);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].func, "f");
  EXPECT_EQ(frames[1].line, 9);
  EXPECT_TRUE(t.frames_of(999).empty());
}

TEST(StackTable, PastItsCapNewStacksAreKFull) {
  profile::StackTable t(2048);
  uint32_t f = t.intern_frame("f", "a.py", 1);
  std::vector<uint32_t> stack;
  uint32_t last = 1;
  for (int i = 0; i < 100 && last != profile::StackTable::kFull; ++i) {
    stack.push_back(f);
    last = t.intern_stack(stack);
  }
  EXPECT_EQ(last, profile::StackTable::kFull);
  EXPECT_TRUE(t.full());
  EXPECT_LE(t.bytes(), 2048u);
  EXPECT_NE(t.intern_stack(std::vector<uint32_t>{f}),
            profile::StackTable::kFull);  // known ones still resolve
}

// Two threads; stack 1 is main > work > spin, stack 2 is main > wait, stack 3 the worker's.
nlohmann::json reply() {
  return nlohmann::json::parse(R"({
    "since": 100.0, "until": 101.0, "mode": "wall", "idle": false, "max_hz": 100,
    "counts": {"seen": 9, "kept": 6, "idle": 3, "other_mode": 0, "dropped": 0},
    "threads": [{"thread_id": 1, "native_thread_id": 11, "name": "MainThread"},
                {"thread_id": 2, "native_thread_id": null, "name": ""}],
    "stacks": {"1": [["spin", "a.py", 5], ["work", "a.py", 9], ["main", "a.py", 20]],
               "2": [["wait", "a.py", 14], ["main", "a.py", 21]],
               "3": [["get", "queue.py", 171]]},
    "samples": [[100.00, 1, 1, 0.01], [100.01, 1, 1, 0.01], [100.02, 1, 2, 0.01],
                [100.03, 1, 1, 0.01], [100.50, 2, 3, 0.1], [100.04, 1, 1, 0.01]],
    "notices": ["a note"]})");
}

cli::Profile parsed() {
  Result<cli::Profile> p = cli::parse_profile(reply());
  EXPECT_TRUE(p.is_ok()) << p.status().message();
  return *p;
}

// A snapshot as tasks_helpers.py writes it: loop thread 7 runs Task-1 (main, waiting on a
// gather), its child "busy" (running) and "sleeper" (waiting in asyncio.sleep).
nlohmann::json task_snapshot(double time) {
  return nlohmann::json::parse(R"({"time": )" + std::to_string(time) +
                               R"(, "asyncio": true, "truncated": false,
    "loops": [{"thread": 7, "tasks": [
      [1, 11, "Task-1", false, [], [["main", "app.py", 27]]],
      [2, 22, "busy", true, [1], null],
      [3, 33, "sleeper", false, [1], [["sleep", "tasks.py", 639], ["sleeper", "app.py", 18]]]]}]})");
}

std::vector<std::string> names(const std::vector<profile::Frame>& frames) {
  std::vector<std::string> out;
  for (const profile::Frame& f : frames) out.push_back(f.func + "@" + f.file);
  return out;
}

TEST(TaskBook, ASampleRunningATasksCoroutineEndsInItsTasks) {
  profile::TaskBook book;
  book.add(100, 0.2, task_snapshot(100));
  // Innermost first: a plain coroutine (44) the task awaits, then the task's own (22).
  const std::vector<layout::SampledGenerator> gens{{44, 1}, {22, 2}};
  uint32_t depth = 0;
  std::vector<profile::Frame> rest;
  ASSERT_TRUE(book.running(100.1, 7, gens, &depth, &rest));
  EXPECT_EQ(depth, 2u);
  EXPECT_EQ(names(rest), (std::vector<std::string>{"busy@<task>", "main@app.py", "Task-*@<task>"}));
  rest.clear();
  EXPECT_FALSE(book.running(100.1, 8, gens, &depth, &rest)) << "thread 8 runs no loop";
  EXPECT_FALSE(book.running(130, 7, gens, &depth, &rest)) << "no snapshot near that time";
  const std::vector<layout::SampledGenerator> unknown{{55, 0}, {66, 3}};
  ASSERT_TRUE(book.running(100.1, 7, unknown, &depth, &rest));
  EXPECT_EQ(depth, 3u) << "the outermost coroutine";
  EXPECT_EQ(names(rest), (std::vector<std::string>{"(unnamed task)@<task>"}));
}

TEST(TaskBook, WaitingLeafTasksAreSamplesOfEachSnapshot) {
  profile::TaskBook book;
  book.add(100, 0.2, task_snapshot(100));
  book.add(100.2, 0.2, task_snapshot(100.2));
  const std::vector<profile::TaskBook::Wait> waits = book.waiting(99, 101, 100);
  ASSERT_EQ(waits.size(), 2u) << "sleeper twice; main awaits a task, busy runs";
  EXPECT_EQ(waits[0].time, 100);
  EXPECT_EQ(waits[0].thread, 7u);
  EXPECT_NEAR(waits[0].weight, 0.2, 1e-9);
  EXPECT_EQ(names(waits[0].frames),
            (std::vector<std::string>{"sleep@tasks.py", "sleeper@app.py", "sleeper@<task>", "main@app.py",
                                      "Task-*@<task>"}));
  EXPECT_EQ(book.waiting(99, 101, 1).size(), 1u) << "bounded";
  book.drop_before(150);
  EXPECT_TRUE(book.waiting(0, 1e12, 100).empty());
  uint32_t depth = 0;
  std::vector<profile::Frame> rest;
  const std::vector<layout::SampledGenerator> gens{{22, 0}};
  EXPECT_FALSE(book.running(100.1, 7, gens, &depth, &rest));
}

TEST(TaskBook, NoticesSayWhatIsMissing) {
  profile::TaskBook book;
  EXPECT_EQ(book.notices(0, 10),
            (std::vector<std::string>{"no asyncio task snapshot was taken in this window"}));
  book.add(5, 0.2, nlohmann::json::parse(R"({"time": 5, "asyncio": false, "loops": []})"));
  EXPECT_EQ(book.notices(0, 10),
            (std::vector<std::string>{"this process has not imported asyncio: there are no tasks to show"}));
  book.fail(6, "the GIL was not released within 2 s");
  EXPECT_EQ(book.notices(0, 10).back(), "asyncio task snapshots failed: the GIL was not released within 2 s");
}

TEST(ProfileFormat, ParsesTheAgentsReply) {
  cli::Profile p = parsed();
  EXPECT_EQ(p.samples.size(), 6u);
  EXPECT_EQ(p.idle_left_out, 3);
  EXPECT_EQ(p.threads[0].label(), "MainThread (tid 11)");
  EXPECT_EQ(p.threads[1].label(), "thread 2");
  EXPECT_EQ(p.notices, std::vector<std::string>{"a note"});
  EXPECT_FALSE(cli::parse_profile(nlohmann::json::parse(R"({"rows": []})")).is_ok());
  EXPECT_FALSE(cli::parse_profile(nlohmann::json::parse(R"({"samples": [[1]], "stacks": {}})")).is_ok());
}

TEST(ProfileFormat, CountsWeighSamplesByTheirInterval) {
  // The worker's one sample at 10 Hz stands for ten of the main thread's at 100 Hz.
  EXPECT_EQ(parsed().counts(), (std::vector<long long>{1, 1, 1, 1, 10, 1}));
}

TEST(ProfileFormat, FoldedPutsTheThreadFirstAndTheLeafLast) {
  EXPECT_EQ(cli::render_folded(parsed()),
            "MainThread (tid 11);main (a.py:20);work (a.py:9);spin (a.py:5) 4\n"
            "MainThread (tid 11);main (a.py:21);wait (a.py:14) 1\n"
            "thread 2;get (queue.py:171) 10\n");
  cli::Profile merged = parsed();
  merged.merge_threads = true;
  EXPECT_EQ(cli::render_folded(merged).substr(0, 41), "get (queue.py:171) 10\nmain (a.py:20);work");
}

TEST(ProfileFormat, SpeedscopeHasOneSampledProfilePerThreadRootFirst) {
  auto doc = nlohmann::json::parse(cli::render_speedscope(parsed(), "test"));
  ASSERT_EQ(doc["profiles"].size(), 2u);
  const auto& main = doc["profiles"][0];
  EXPECT_EQ(main["type"], "sampled");
  EXPECT_EQ(main["name"], "MainThread (tid 11)");
  ASSERT_EQ(main["samples"].size(), 5u);
  ASSERT_EQ(main["weights"].size(), 5u);
  const auto& frames = doc["shared"]["frames"];
  const auto& first = main["samples"][0];
  EXPECT_EQ(frames[first[0].get<size_t>()]["name"], "main");  // the root
  EXPECT_EQ(frames[first[2].get<size_t>()]["name"], "spin");  // the leaf
  EXPECT_EQ(frames[first[2].get<size_t>()]["line"], 5);
  EXPECT_DOUBLE_EQ(doc["profiles"][1]["weights"][0].get<double>(), 0.1);
}

// A sample's stack in a Firefox Profiler thread, root first, read back through its tables.
std::vector<std::string> gecko_stack(const nlohmann::json& doc, const nlohmann::json& thread, size_t sample) {
  std::vector<std::string> out;
  nlohmann::json at = thread["samples"]["stack"][sample];
  while (!at.is_null()) {
    const size_t stack = at.get<size_t>();
    const size_t frame = thread["stackTable"]["frame"][stack].get<size_t>();
    const size_t func = thread["frameTable"]["func"][frame].get<size_t>();
    const size_t name = thread["funcTable"]["name"][func].get<size_t>();
    out.insert(out.begin(), doc["shared"]["stringArray"][name].get<std::string>() + ":" +
                                thread["frameTable"]["line"][frame].dump());
    at = thread["stackTable"]["prefix"][stack];
  }
  return out;
}

TEST(ProfileFormat, GeckoTablesRebuildEachSampleWithItsWeight) {
  auto doc = nlohmann::json::parse(cli::render_gecko(parsed(), 4242));
  EXPECT_EQ(doc["meta"]["preprocessedProfileVersion"], 57);
  EXPECT_DOUBLE_EQ(doc["meta"]["interval"].get<double>(), 10.0);  // ms, at 100 Hz
  EXPECT_DOUBLE_EQ(doc["meta"]["startTime"].get<double>(), 100000.0);
  ASSERT_EQ(doc["threads"].size(), 2u);
  const auto& main = doc["threads"][0];
  EXPECT_EQ(main["name"], "MainThread (tid 11)");
  EXPECT_EQ(main["tid"], 11);
  EXPECT_EQ(main["pid"], "4242");
  EXPECT_TRUE(main["isMainThread"].get<bool>());
  ASSERT_EQ(main["samples"]["length"], 5);
  EXPECT_EQ(gecko_stack(doc, main, 0), (std::vector<std::string>{"main:20", "work:9", "spin:5"}));
  EXPECT_EQ(gecko_stack(doc, main, 2), (std::vector<std::string>{"main:21", "wait:14"}));
  EXPECT_NEAR(main["samples"]["time"][1].get<double>(), 10.0, 1e-6);  // ms after startTime
  // Shared prefixes are one stack node: main:20 > work:9 > spin:5 and main:21 > wait:14.
  EXPECT_EQ(main["stackTable"]["length"], 5);
  for (const char* table : {"stackTable", "frameTable", "funcTable", "resourceTable"}) {
    for (const auto& [column, values] : main[table].items()) {
      if (values.is_array()) {
        EXPECT_EQ(values.size(), main[table]["length"].get<size_t>()) << table << "." << column;
      }
    }
  }
  const auto& worker = doc["threads"][1];
  EXPECT_EQ(worker["samples"]["weight"][0], 10);  // a 10 Hz sample among 100 Hz ones
  EXPECT_EQ(worker["samples"]["weightType"], "samples");
  EXPECT_EQ(*cli::profile_format_for("", "run.gecko.json"), "gecko");
  EXPECT_EQ(*cli::profile_format_for("firefox", ""), "gecko");
}

TEST(ProfileFormat, ChromeSlicesNestAndEndAtGaps) {
  auto doc = nlohmann::json::parse(cli::render_chrome(parsed(), 4242));
  std::vector<nlohmann::json> slices;
  for (const auto& e : doc["traceEvents"]) {
    if (e["ph"] == "X" && e["tid"] == 11) slices.push_back(e);
  }
  // main runs throughout (one slice: its line changes, the function does not); work and spin
  // twice, around wait.
  std::map<std::string, int> count;
  for (const auto& e : slices) ++count[e["name"].get<std::string>()];
  EXPECT_EQ(count["main"], 1);
  EXPECT_EQ(count["work"], 2);
  EXPECT_EQ(count["spin"], 2);
  EXPECT_EQ(count["wait"], 1);
  for (const auto& e : slices) {
    if (e["name"] == "main") {
      EXPECT_EQ(e["ts"].get<long long>(), 100'000'000);
      EXPECT_EQ(e["dur"].get<long long>(), 50'000);  // to the end of the last sample
    }
  }
  bool named = false;
  for (const auto& e : doc["traceEvents"]) named |= e["ph"] == "M" && e["args"]["name"] == "MainThread";
  EXPECT_TRUE(named);
  // Each slice comes after the slices that hold it: main, then work, then spin, at one start.
  std::vector<std::string> first_three;
  for (size_t i = 0; i < 3; ++i) first_three.push_back(slices[i]["name"].get<std::string>());
  EXPECT_EQ(first_three, (std::vector<std::string>{"main", "work", "spin"}));
}

TEST(ProfileFormat, SvgIsAFlamegraphWithCountsInItsTitles) {
  const std::string svg = cli::render_svg(parsed(), "a <title> & more");
  EXPECT_NE(svg.find("data-total=\"15\""), std::string::npos);
  EXPECT_NE(svg.find("a &lt;title&gt; &amp; more"), std::string::npos);
  EXPECT_NE(svg.find("<title>spin (a.py:5) (4 samples, 26.67%)</title>"), std::string::npos);
  EXPECT_NE(svg.find("<title>thread 2 (10 samples, 66.67%)</title>"), std::string::npos);
  EXPECT_NE(svg.find("<script><![CDATA["), std::string::npos);
  EXPECT_EQ(svg.find("http://www.w3.org/2000/svg\" data-total"), svg.find("http://www.w3.org/2000/svg"));
  EXPECT_EQ(svg.find("https://"), std::string::npos);  // nothing fetched
}

TEST(ProfileFormat, TopRanksByOwnTimeThenTotal) {
  const std::string top = cli::render_top(parsed(), 2, 0);
  const size_t get = top.find("get (queue.py)"), spin = top.find("spin (a.py)"),
               wait = top.find("wait (a.py)");
  ASSERT_NE(get, std::string::npos);
  ASSERT_NE(spin, std::string::npos);
  EXPECT_LT(get, spin);
  EXPECT_EQ(wait, std::string::npos);  // two rows only
  EXPECT_NE(top.find("  66.7   66.7     0.10     0.10  get (queue.py)"), std::string::npos);
}

TEST(ProfileFormat, MergedProfilesKeepTheirThreadsAndStacksApart) {
  std::vector<std::tuple<long long, std::string, cli::Profile>> parts;
  parts.emplace_back(10, "pid 10", parsed());
  parts.emplace_back(11, "pid 11 (fork of 10)", parsed());
  cli::Profile m = cli::merge_profiles(std::move(parts));
  ASSERT_EQ(m.threads.size(), 4u);
  ASSERT_EQ(m.samples.size(), 12u);
  EXPECT_EQ(m.stacks.size(), 6u);
  EXPECT_EQ(m.threads[2].label(), "pid 11 (fork of 10): MainThread (tid 11)");
  EXPECT_EQ(m.threads[2].pid, 11);
  EXPECT_EQ(m.idle_left_out, 6);
  for (size_t i = 1; i < m.samples.size(); ++i) EXPECT_LE(m.samples[i - 1].time, m.samples[i].time);
  const std::string folded = cli::render_folded(m);
  EXPECT_NE(folded.find("pid 11 (fork of 10): thread 2;get (queue.py:171) 10\n"), std::string::npos)
      << folded;
  EXPECT_NE(folded.find("pid 10: MainThread (tid 11);main (a.py:20);work (a.py:9);spin (a.py:5) 4\n"),
            std::string::npos);
  auto chrome = nlohmann::json::parse(cli::render_chrome(m, 10));
  std::set<long long> pids;
  for (const auto& e : chrome["traceEvents"]) {
    if (e["ph"] == "X") pids.insert(e["pid"].get<long long>());
  }
  EXPECT_EQ(pids, (std::set<long long>{10, 11}));
}

TEST(ProfileFormat, FormatFromTheOptionOrTheFileName) {
  EXPECT_EQ(*cli::profile_format_for("", "run.svg"), "svg");
  EXPECT_EQ(*cli::profile_format_for("", "run.json"), "speedscope");
  EXPECT_EQ(*cli::profile_format_for("", "run.trace.json"), "chrome");
  EXPECT_EQ(*cli::profile_format_for("", "/home/me/traces/run.json"),
            "speedscope");  // the name, not the folder
  EXPECT_EQ(*cli::profile_format_for("", "out.folded"), "folded");
  EXPECT_EQ(*cli::profile_format_for("", ""), "top");
  EXPECT_EQ(*cli::profile_format_for("perfetto", "x"), "chrome");
  EXPECT_FALSE(cli::profile_format_for("", "run.bin").is_ok());
  EXPECT_FALSE(cli::profile_format_for("pdf", "").is_ok());
}

}  // namespace
}  // namespace probing
