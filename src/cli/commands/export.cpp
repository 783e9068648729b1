// probing TARGET export: the last training steps (python.torch_trace), with the spans and events
// of the same time (python.spans, python.events), as a Chrome trace that ui.perfetto.dev and
// chrome://tracing open: a track of steps, one of module calls and optimizer steps, one of
// backward passes, and one per thread that ran spans.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>

#include "cli/common.h"

namespace probing::cli {
namespace {

constexpr double kTimeoutS = 60;
constexpr long long kMaxRows = 200'000;  // per table: a trace viewer slows down past that
constexpr double kFallbackSeconds = 60;  // the window when no step was recorded
// Track ids (Chrome's "tid") of the torch tracks; threads that ran spans follow from kFirstThreadTrack.
constexpr int kStepsTrack = 1;
constexpr int kForwardTrack = 2;
constexpr int kBackwardTrack = 3;
constexpr int kFirstThreadTrack = 10;

struct ExportArgs {
  long long last = 20;
  double seconds = 0;
  std::string format;
  std::string output;
};

class Exporter {
 public:
  Exporter(client::Client& client, const ExportArgs& args) : client_(client), args_(args) {}

  Result<nlohmann::json> run(std::string* summary);

 private:
  Result<std::vector<nlohmann::json>> rows(const std::string& sql) {
    Result<nlohmann::json> r = agent_json(client_, "POST", "/query", nlohmann::json{{"sql", sql}}.dump(),
                                          kTimeoutS, "this agent has no SQL endpoint");
    if (!r.is_ok()) return r.status();
    return rows_as_objects(*r);
  }
  static double num(const nlohmann::json& v, double otherwise = 0) {
    return v.is_number() ? v.get<double>() : otherwise;
  }
  static std::string str(const nlohmann::json& v, const char* otherwise) {
    return v.is_string() ? v.get<std::string>() : otherwise;
  }
  static double us(double seconds) { return std::round(seconds * 1e7) / 10; }  // µs, 0.1 µs kept
  void add(nlohmann::json event) {
    event["pid"] = pid_;
    events_.push_back(std::move(event));
  }
  void name_track(int tid, const std::string& name, int order) {
    add({{"ph", "M"}, {"name", "thread_name"}, {"tid", tid}, {"args", {{"name", name}}}});
    add({{"ph", "M"}, {"name", "thread_sort_index"}, {"tid", tid}, {"args", {{"sort_index", order}}}});
  }
  int thread_track(long long thread_id);

  client::Client& client_;
  const ExportArgs& args_;
  long long pid_ = 0;
  nlohmann::json events_ = nlohmann::json::array();
  std::map<long long, int> thread_tracks_;  // Python thread ident -> track
  std::map<long long, std::string> thread_names_;
};

int Exporter::thread_track(long long thread_id) {
  auto [it, fresh] =
      thread_tracks_.try_emplace(thread_id, kFirstThreadTrack + static_cast<int>(thread_tracks_.size()));
  if (fresh) {
    auto name = thread_names_.find(thread_id);
    char hex[32];
    std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(thread_id));
    name_track(it->second, "spans: " + (name != thread_names_.end() ? name->second + " (" + hex + ")" : hex),
               it->second);
  }
  return it->second;
}

Result<nlohmann::json> Exporter::run(std::string* summary) {
  Result<std::vector<nlohmann::json>> info = rows("SELECT pid, cmdline FROM process.info");
  if (!info.is_ok()) return info.status();
  if (!info->empty()) pid_ = static_cast<long long>(num((*info)[0]["pid"]));
  std::string cmdline = info->empty() ? "" : str((*info)[0]["cmdline"], "");
  add({{"ph", "M"},
       {"name", "process_name"},
       {"args", {{"name", cmdline + " (pid " + std::to_string(pid_) + ")"}}}});
  // Names of the threads alive now: best effort (they are read with the GIL).
  if (Result<std::vector<nlohmann::json>> threads = rows("SELECT thread_id, name FROM python.threads");
      threads.is_ok()) {
    for (const nlohmann::json& t : *threads) {
      if (t["thread_id"].is_number() && t["name"].is_string())
        thread_names_[t["thread_id"].get<long long>()] = t["name"].get<std::string>();
    }
  }

  // The window: the last N steps, or the last S seconds, or (no step recorded) the last minute.
  std::string torch_sql =
      "SELECT step, seq, module, stage, duration, allocated, max_allocated, time FROM python.torch_trace ";
  double t0 = 0, t1 = 0;
  std::string window;
  if (args_.seconds > 0) {
    Result<std::vector<nlohmann::json>> now = rows("SELECT (julianday('now') - 2440587.5) * 86400.0 AS now");
    if (!now.is_ok()) return now.status();
    t1 = num((*now)[0]["now"]);
    t0 = t1 - args_.seconds;
    torch_sql += "WHERE time >= " + std::to_string(t0);
    char buf[64];
    std::snprintf(buf, sizeof buf, "the last %g s", args_.seconds);
    window = buf;
  } else {
    Result<std::vector<nlohmann::json>> last = rows("SELECT max(step) AS s FROM python.torch_trace");
    if (!last.is_ok()) return last.status();
    if (last->empty() || !(*last)[0]["s"].is_number()) {
      Result<std::vector<nlohmann::json>> now =
          rows("SELECT (julianday('now') - 2440587.5) * 86400.0 AS now");
      if (!now.is_ok()) return now.status();
      t1 = num((*now)[0]["now"]);
      t0 = t1 - kFallbackSeconds;
      torch_sql.clear();
      window = "the last minute (no training step was recorded: torch.trace is off, or no model ran)";
    } else {
      const long long s = (*last)[0]["s"].get<long long>();
      torch_sql += "WHERE step > " + std::to_string(s - args_.last) + " AND step <= " + std::to_string(s);
    }
  }
  std::vector<nlohmann::json> calls;
  if (!torch_sql.empty()) {
    Result<std::vector<nlohmann::json>> r =
        rows(torch_sql + " ORDER BY time LIMIT " + std::to_string(kMaxRows));
    if (!r.is_ok()) return r.status();
    calls = std::move(*r);
  }

  // Steps and module calls. Forward calls nest (a parent's call contains its children's); the
  // backward passes get their own track, since on a GPU they overlap the next forward.
  std::map<long long, std::pair<double, double>> steps;  // step -> [start, end)
  for (const nlohmann::json& c : calls) {
    const double start = num(c["time"]), dur = num(c["duration"]);
    const long long step = static_cast<long long>(num(c["step"]));
    auto [it, fresh] = steps.try_emplace(step, start, start + dur);
    if (!fresh) {
      it->second.first = std::min(it->second.first, start);
      it->second.second = std::max(it->second.second, start + dur);
    }
    const std::string stage = str(c["stage"], "");
    nlohmann::json args{{"step", step}, {"seq", c["seq"]}, {"stage", stage}};
    if (c["allocated"].is_number()) args["allocated_mb"] = c["allocated"];
    if (c["max_allocated"].is_number()) args["max_allocated_mb"] = c["max_allocated"];
    add({{"ph", "X"},
         {"name", str(c["module"], "?")},
         {"cat", stage},
         {"ts", us(start)},
         {"dur", us(dur)},
         {"tid", stage == "backward" ? kBackwardTrack : kForwardTrack},
         {"args", args}});
  }
  if (!calls.empty()) {
    name_track(kStepsTrack, "steps", kStepsTrack);
    name_track(kForwardTrack, "torch: forward and optimizer", kForwardTrack);
    name_track(kBackwardTrack, "torch: backward", kBackwardTrack);
    for (const auto& [step, span] : steps) {
      add({{"ph", "X"},
           {"name", "step " + std::to_string(step)},
           {"cat", "steps"},
           {"ts", us(span.first)},
           {"dur", us(span.second - span.first)},
           {"tid", kStepsTrack},
           {"args", {{"step", step}}}});
    }
    if (args_.seconds <= 0) {  // the steps' own time
      t0 = steps.begin()->second.first;
      t1 = t0;
      for (const auto& [step, span] : steps) t1 = std::max(t1, span.second);
    }
    if (window.empty()) {
      window = "steps " + std::to_string(steps.begin()->first) + "-" + std::to_string(steps.rbegin()->first);
    }
  }

  // Spans that overlap the window, and events inside it, on a track per thread.
  const std::string from = std::to_string(t0), to = std::to_string(t1);
  Result<std::vector<nlohmann::json>> spans = rows(
      "SELECT span_id, parent_id, name, start, duration, thread_id, attrs, error FROM python.spans WHERE "
      "start <= " +
      to + " AND start + duration >= " + from + " ORDER BY start LIMIT " + std::to_string(kMaxRows));
  if (!spans.is_ok()) return spans.status();
  for (const nlohmann::json& s : *spans) {
    nlohmann::json args = nlohmann::json::parse(str(s["attrs"], "{}"), nullptr, false);
    if (!args.is_object()) args = nlohmann::json::object();
    args["span_id"] = s["span_id"];
    if (s["parent_id"].is_number()) args["parent_id"] = s["parent_id"];
    if (s["error"].is_string()) args["error"] = s["error"];
    add({{"ph", "X"},
         {"name", str(s["name"], "?")},
         {"cat", "span"},
         {"ts", us(num(s["start"]))},
         {"dur", us(num(s["duration"]))},
         {"tid", thread_track(static_cast<long long>(num(s["thread_id"])))},
         {"args", args}});
  }
  Result<std::vector<nlohmann::json>> marks =
      rows("SELECT time, name, span_id, thread_id, attrs FROM python.events WHERE time >= " + from +
           " AND time <= " + to + " ORDER BY time LIMIT " + std::to_string(kMaxRows));
  if (!marks.is_ok()) return marks.status();
  for (const nlohmann::json& e : *marks) {
    nlohmann::json args = nlohmann::json::parse(str(e["attrs"], "{}"), nullptr, false);
    if (!args.is_object()) args = nlohmann::json::object();
    if (e["span_id"].is_number()) args["span_id"] = e["span_id"];
    add({{"ph", "i"},
         {"s", "t"},
         {"name", str(e["name"], "?")},
         {"cat", "event"},
         {"ts", us(num(e["time"]))},
         {"tid", thread_track(static_cast<long long>(num(e["thread_id"])))},
         {"args", args}});
  }

  char line[256];
  std::snprintf(line, sizeof line, "%zu step(s), %zu module call(s), %zu span(s), %zu event(s)", steps.size(),
                calls.size(), spans->size(), marks->size());
  *summary = window + ": " + line;
  if (calls.size() >= static_cast<size_t>(kMaxRows) || spans->size() >= static_cast<size_t>(kMaxRows) ||
      marks->size() >= static_cast<size_t>(kMaxRows)) {
    *summary += " (cut at " + std::to_string(kMaxRows) + " rows per table: ask for fewer steps)";
  }
  return nlohmann::json{{"traceEvents", std::move(events_)}, {"displayTimeUnit", "ms"}};
}

Result<std::string> resolve_format(const ExportArgs& args) {
  std::string f = args.format;
  if (f.empty()) {
    const std::string& o = args.output;
    f = o.size() > 8 && o.compare(o.size() - 8, 8, ".pftrace") == 0 ? "perfetto" : "chrome";
  }
  if (f == "chrome" || f == "chrome-json" || f == "json" || f == "perfetto") return f;
  return Status(Code::kInvalidArgument, "unknown format '" + f + "': chrome (or chrome-json) or perfetto");
}

int run_export(const Context& ctx, const ExportArgs& args) {
  Result<std::string> format = resolve_format(args);
  if (!format.is_ok()) return fail(format.status());
  if (args.output.empty() && ::isatty(STDOUT_FILENO)) {
    return fail(Status(Code::kInvalidArgument, "give -o FILE (say steps.json), or redirect the output"));
  }
  auto client = connect_target(ctx);
  if (!client.is_ok()) return fail(client.status());
  Exporter exporter(**client, args);
  std::string summary;
  Result<nlohmann::json> trace = exporter.run(&summary);
  if (!trace.is_ok()) return fail(trace.status());
  const std::string text = trace->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (args.output.empty() || args.output == "-") {
    std::cout << text << "\n";
  } else {
    std::ofstream out(args.output, std::ios::binary | std::ios::trunc);
    out << text << "\n";
    out.close();
    if (!out) return fail(Status(Code::kUnavailable, "cannot write " + args.output));
  }
  std::cerr << "probing: exported " << summary
            << (args.output.empty() || args.output == "-" ? "" : " to " + args.output)
            << "; open it in ui.perfetto.dev or chrome://tracing\n";
  return kExitOk;
}

}  // namespace

void add_export_command(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<ExportArgs>();
  CLI::App* cmd = app.add_subcommand(
      "export",
      "The last training steps as a trace for ui.perfetto.dev or chrome://tracing: a track of steps, one\n"
      "of module calls (nested) and optimizer steps, one of backward passes, from python.torch_trace, and\n"
      "the spans and events (probing.span, probing.event) of the same time on a track per thread.");
  cmd->add_option("--last", args->last, "the last N steps (default 20)")->check(CLI::Range(1LL, 1000000LL));
  cmd->add_option("--seconds", args->seconds, "the last S seconds instead of a number of steps")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--format", args->format,
                  "chrome (also chrome-json), or perfetto: the same Chrome JSON, which Perfetto reads;\n"
                  "by default from -o's name (.pftrace: perfetto), else chrome");
  cmd->add_option("-o,--output", args->output, "the file to write ('-' or none: standard output)");
  cmd->footer(
      "Examples:\n"
      "  probing 1234 export --last 50 -o steps.json\n"
      "  probing 1234 export --seconds 30 --format perfetto -o last30s.pftrace\n"
      "  probing 1234 export | gzip > steps.json.gz");
  on_run(cmd, [&ctx, args] { return run_export(ctx, *args); });
}

}  // namespace probing::cli
