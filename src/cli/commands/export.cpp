// probing TARGET export: the last training steps (python.torch_trace), with the spans and events
// of the same time (python.spans, python.events), the sampler's stacks (python.samples) and the
// process's memory (process.metrics), as a trace for ui.perfetto.dev: Perfetto's own protobuf
// format, or Chrome's JSON trace events (which chrome://tracing, speedscope and Perfetto open). A
// track of steps, one of module calls and optimizer steps, one of backward passes, one per thread
// that ran spans, one per sampled thread, and counters.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>

#include "cli/common.h"
#include "cli/profile_format.h"

namespace probing::cli {
namespace {

constexpr double kTimeoutS = 60;
constexpr long long kMaxRows = 200'000;  // per table: a trace viewer slows down past that
constexpr double kFallbackSeconds = 60;  // the window when no step was recorded

struct ExportArgs {
  long long last = 20;
  double seconds = 0;
  std::string format;
  std::string output;
};

// What is exported, before it is written in either format.
struct Track {
  std::string name;
  bool counter = false;
};
struct Slice {
  size_t track;
  std::string name, category;
  double start, duration;  // seconds; a duration < 0 is an instant
  nlohmann::json args;
};
struct Sample {
  size_t track;
  double time, value;
};
struct TraceModel {
  long long pid = 0;
  std::string process;
  std::vector<Track> tracks;
  std::vector<Slice> slices;
  std::vector<Sample> samples;  // of counter tracks
};

double num(const nlohmann::json& v, double otherwise = 0) {
  return v.is_number() ? v.get<double>() : otherwise;
}
std::string str(const nlohmann::json& v, const char* otherwise) {
  return v.is_string() ? v.get<std::string>() : otherwise;
}

// A slice that starts inside another on its track ends inside it too (times measured apart can
// overlap by a rounding): both formats then nest it under that one, never across.
void nest(TraceModel* m) {
  std::stable_sort(m->slices.begin(), m->slices.end(), [](const Slice& a, const Slice& b) {
    if (a.track != b.track) return a.track < b.track;
    if (a.start != b.start) return a.start < b.start;
    return a.duration > b.duration;  // the enclosing one first
  });
  std::vector<double> open;  // ends of the slices open on the current track
  size_t track = SIZE_MAX;
  for (Slice& s : m->slices) {
    if (s.track != track) {
      open.clear();
      track = s.track;
    }
    while (!open.empty() && s.start >= open.back()) open.pop_back();
    if (s.duration < 0) continue;
    if (!open.empty()) s.duration = std::min(s.duration, open.back() - s.start);
    open.push_back(s.start + s.duration);
  }
}

class Exporter {
 public:
  Exporter(client::Client& client, const ExportArgs& args) : client_(client), args_(args) {}

  Result<TraceModel> run(std::string* summary);

 private:
  Result<std::vector<nlohmann::json>> rows(const std::string& sql) {
    Result<nlohmann::json> r = agent_json(client_, "POST", "/query", nlohmann::json{{"sql", sql}}.dump(),
                                          kTimeoutS, "this agent has no SQL endpoint");
    if (!r.is_ok()) return r.status();
    return rows_as_objects(*r);
  }
  Result<double> agent_now() {
    Result<std::vector<nlohmann::json>> now = rows("SELECT (julianday('now') - 2440587.5) * 86400.0 AS now");
    if (!now.is_ok()) return now.status();
    return num((*now)[0]["now"]);
  }
  size_t track(const std::string& name, bool counter = false) {
    m_.tracks.push_back({name, counter});
    return m_.tracks.size() - 1;
  }
  size_t thread_track(long long thread_id);

  client::Client& client_;
  const ExportArgs& args_;
  TraceModel m_;
  std::map<long long, size_t> thread_tracks_;  // Python thread ident -> track
  std::map<long long, std::string> thread_names_;
};

size_t Exporter::thread_track(long long thread_id) {
  auto it = thread_tracks_.find(thread_id);
  if (it != thread_tracks_.end()) return it->second;
  auto name = thread_names_.find(thread_id);
  char hex[32];
  std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(thread_id));
  return thread_tracks_[thread_id] =
             track("spans: " + (name != thread_names_.end() ? name->second + " (" + hex + ")" : hex));
}

Result<TraceModel> Exporter::run(std::string* summary) {
  Result<std::vector<nlohmann::json>> info = rows("SELECT pid, cmdline FROM process.info");
  if (!info.is_ok()) return info.status();
  if (!info->empty()) m_.pid = static_cast<long long>(num((*info)[0]["pid"]));
  m_.process =
      (info->empty() ? "" : str((*info)[0]["cmdline"], "")) + " (pid " + std::to_string(m_.pid) + ")";
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
      "SELECT step, seq, module, stage, duration, self_duration, allocated, max_allocated, time "
      "FROM python.torch_trace ";
  double t0 = 0, t1 = 0;
  std::string window;
  if (args_.seconds > 0) {
    Result<double> now = agent_now();
    if (!now.is_ok()) return now.status();
    t1 = *now;
    t0 = t1 - args_.seconds;
    torch_sql += "WHERE time >= " + std::to_string(t0);
    char buf[64];
    std::snprintf(buf, sizeof buf, "the last %g s", args_.seconds);
    window = buf;
  } else {
    Result<std::vector<nlohmann::json>> last = rows("SELECT max(step) AS s FROM python.torch_trace");
    if (!last.is_ok()) return last.status();
    if (last->empty() || !(*last)[0]["s"].is_number()) {
      Result<double> now = agent_now();
      if (!now.is_ok()) return now.status();
      t1 = *now;
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
  if (!calls.empty()) {
    const size_t steps_track = track("steps"), forward = track("torch: forward and optimizer"),
                 backward = track("torch: backward");
    std::optional<size_t> cuda;
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
      if (c["self_duration"].is_number()) args["self_us"] = num(c["self_duration"]) * 1e6;
      if (c["allocated"].is_number()) {
        args["allocated_mb"] = c["allocated"];
        if (!cuda) cuda = track("CUDA allocated (MB)", true);
        m_.samples.push_back({*cuda, start + dur, num(c["allocated"])});
      }
      if (c["max_allocated"].is_number()) args["max_allocated_mb"] = c["max_allocated"];
      m_.slices.push_back({stage == "backward" ? backward : forward, str(c["module"], "?"), stage, start, dur,
                           std::move(args)});
    }
    for (const auto& [step, span] : steps) {
      m_.slices.push_back({steps_track,
                           "step " + std::to_string(step),
                           "steps",
                           span.first,
                           span.second - span.first,
                           {{"step", step}}});
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
      "SELECT span_id, parent_id, name, start, duration, thread_id, attrs, error FROM python.spans "
      "WHERE start <= " +
      to + " AND start + duration >= " + from + " ORDER BY start LIMIT " + std::to_string(kMaxRows));
  if (!spans.is_ok()) return spans.status();
  for (const nlohmann::json& s : *spans) {
    nlohmann::json args = nlohmann::json::parse(str(s["attrs"], "{}"), nullptr, false);
    if (!args.is_object()) args = nlohmann::json::object();
    args["span_id"] = s["span_id"];
    if (s["parent_id"].is_number()) args["parent_id"] = s["parent_id"];
    if (s["error"].is_string()) args["error"] = s["error"];
    m_.slices.push_back({thread_track(static_cast<long long>(num(s["thread_id"]))), str(s["name"], "?"),
                         "span", num(s["start"]), num(s["duration"]), std::move(args)});
  }
  Result<std::vector<nlohmann::json>> marks =
      rows("SELECT time, name, span_id, thread_id, attrs FROM python.events WHERE time >= " + from +
           " AND time <= " + to + " ORDER BY time LIMIT " + std::to_string(kMaxRows));
  if (!marks.is_ok()) return marks.status();
  for (const nlohmann::json& e : *marks) {
    nlohmann::json args = nlohmann::json::parse(str(e["attrs"], "{}"), nullptr, false);
    if (!args.is_object()) args = nlohmann::json::object();
    if (e["span_id"].is_number()) args["span_id"] = e["span_id"];
    m_.slices.push_back({thread_track(static_cast<long long>(num(e["thread_id"]))), str(e["name"], "?"),
                         "event", num(e["time"]), -1, std::move(args)});
  }
  // What each thread ran, from the sampler (the flight recorder, and any profile of the window):
  // a slice per function for as long as consecutive samples had it on the stack.
  size_t sampled = 0;
  char window_qs[96];
  std::snprintf(window_qs, sizeof window_qs, "/profile?since=%.6f&until=%.6f&mode=wall&idle=1", t0, t1);
  if (Result<nlohmann::json> reply = agent_json(client_, "GET", window_qs, "", kTimeoutS, "no profiler");
      reply.is_ok()) {
    if (Result<Profile> profile = parse_profile(*reply); profile.is_ok()) {
      std::map<long long, size_t> tracks;  // profile thread -> track
      for (const StackSlice& x : stack_slices(*profile)) {
        auto [it, fresh] = tracks.try_emplace(x.thread, 0);
        if (fresh) {
          const ProfileThread* t = profile->thread(x.thread);
          it->second =
              track("samples: " + (t != nullptr ? t->label() : "thread " + std::to_string(x.thread)));
        }
        m_.slices.push_back({it->second,
                             x.frame->func,
                             "sample",
                             x.start,
                             x.duration,
                             {{"file", x.frame->file}, {"line", x.frame->line}}});
      }
      sampled = profile->samples.size();
    }
  }
  // The process's memory over the window (process.metrics, every metrics.interval_s).
  Result<std::vector<nlohmann::json>> metrics =
      rows("SELECT time, rss_mb FROM process.metrics WHERE time >= " + from + " AND time <= " + to +
           " ORDER BY time LIMIT " + std::to_string(kMaxRows));
  if (!metrics.is_ok()) return metrics.status();
  if (!metrics->empty()) {
    const size_t rss = track("RSS (MB)", true);
    for (const nlohmann::json& r : *metrics) m_.samples.push_back({rss, num(r["time"]), num(r["rss_mb"])});
  }
  nest(&m_);

  char line[256];
  std::snprintf(line, sizeof line,
                "%zu step(s), %zu module call(s), %zu span(s), %zu event(s), %zu stack sample(s)",
                steps.size(), calls.size(), spans->size(), marks->size(), sampled);
  *summary = window + ": " + line;
  if (calls.size() >= static_cast<size_t>(kMaxRows) || spans->size() >= static_cast<size_t>(kMaxRows) ||
      marks->size() >= static_cast<size_t>(kMaxRows)) {
    *summary += " (cut at " + std::to_string(kMaxRows) + " rows per table: ask for fewer steps)";
  }
  return std::move(m_);
}

// ---- Chrome's JSON trace events: a "thread" per track ----

double micros(double seconds) { return std::round(seconds * 1e7) / 10; }  // µs, 0.1 µs kept

std::string render_chrome(const TraceModel& m) {
  nlohmann::json events = nlohmann::json::array();
  auto add = [&](nlohmann::json e) {
    e["pid"] = m.pid;
    events.push_back(std::move(e));
  };
  add({{"ph", "M"}, {"name", "process_name"}, {"args", {{"name", m.process}}}});
  for (size_t i = 0; i < m.tracks.size(); ++i) {
    if (m.tracks[i].counter) continue;
    const int tid = static_cast<int>(i) + 1;
    add({{"ph", "M"}, {"name", "thread_name"}, {"tid", tid}, {"args", {{"name", m.tracks[i].name}}}});
    add({{"ph", "M"}, {"name", "thread_sort_index"}, {"tid", tid}, {"args", {{"sort_index", tid}}}});
  }
  for (const Slice& s : m.slices) {
    nlohmann::json e{{"name", s.name},
                     {"cat", s.category},
                     {"ts", micros(s.start)},
                     {"tid", static_cast<int>(s.track) + 1},
                     {"args", s.args}};
    if (s.duration >= 0) {
      e["ph"] = "X";
      e["dur"] = micros(s.duration);
    } else {
      e["ph"] = "i";
      e["s"] = "t";
    }
    add(std::move(e));
  }
  for (const Sample& c : m.samples) {
    add({{"ph", "C"},
         {"name", m.tracks[c.track].name},
         {"ts", micros(c.time)},
         {"args", {{"value", c.value}}}});
  }
  return nlohmann::json{{"traceEvents", std::move(events)}, {"displayTimeUnit", "ms"}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// ---- Perfetto's protobuf (protos/perfetto/trace/trace.proto): a track descriptor per track,
// then TrackEvent slice begin/end pairs, instants and counter values, in time order ----

class Proto {
 public:
  Proto& varint(int field, uint64_t v) {
    key(field, 0);
    raw_varint(v);
    return *this;
  }
  Proto& sint(int field, int64_t v) { return varint(field, static_cast<uint64_t>(v)); }  // int32/int64
  Proto& f64(int field, double v) {
    key(field, 1);
    char b[8];
    std::memcpy(b, &v, 8);  // little-endian, as protobuf's fixed64
    out_.append(b, 8);
    return *this;
  }
  Proto& bytes(int field, const std::string& v) {
    key(field, 2);
    raw_varint(v.size());
    out_ += v;
    return *this;
  }
  Proto& message(int field, const Proto& m) { return bytes(field, m.out_); }
  const std::string& str() const { return out_; }

 private:
  void key(int field, int wire) {
    raw_varint(static_cast<uint64_t>(field) << 3 | static_cast<uint64_t>(wire));
  }
  void raw_varint(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<char>(v | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<char>(v));
  }
  std::string out_;
};

// Field numbers of Perfetto's published schema.
namespace pf {
constexpr int kTracePacket = 1;  // Trace.packet
constexpr int kTimestamp = 8, kSequenceId = 10, kTrackEvent = 11, kSequenceFlags = 13, kTrackDescriptor = 60;
constexpr int kSeqIncrementalStateCleared = 1;
constexpr int kUuid = 1, kTrackName = 2, kProcess = 3, kParentUuid = 5, kCounter = 8;  // TrackDescriptor
constexpr int kPid = 1, kProcessName = 6;                                              // ProcessDescriptor
constexpr int kDebugAnnotations = 4, kType = 9, kTrackUuid = 11, kCategories = 22, kName = 23,
              kDoubleCounterValue = 44;  // TrackEvent
constexpr int kSliceBegin = 1, kSliceEnd = 2, kInstant = 3, kCounterEvent = 4;
constexpr int kBool = 2, kInt = 4, kDouble = 5, kString = 6, kAnnotationName = 10;  // DebugAnnotation
}  // namespace pf

std::string render_perfetto(const TraceModel& m) {
  std::string trace;
  constexpr uint64_t kProcessUuid = 1;
  auto track_uuid = [](size_t track) { return static_cast<uint64_t>(track) + 100; };
  bool first = true;
  auto packet = [&](Proto p) {
    p.varint(pf::kSequenceId, 1);
    if (first) p.varint(pf::kSequenceFlags, pf::kSeqIncrementalStateCleared);
    first = false;
    trace += Proto().message(pf::kTracePacket, p).str();
  };
  packet(Proto().message(
      pf::kTrackDescriptor,
      Proto()
          .varint(pf::kUuid, kProcessUuid)
          .message(pf::kProcess, Proto().sint(pf::kPid, m.pid).bytes(pf::kProcessName, m.process))));
  for (size_t i = 0; i < m.tracks.size(); ++i) {
    Proto d;
    d.varint(pf::kUuid, track_uuid(i))
        .varint(pf::kParentUuid, kProcessUuid)
        .bytes(pf::kTrackName, m.tracks[i].name);
    if (m.tracks[i].counter) d.message(pf::kCounter, Proto());
    packet(Proto().message(pf::kTrackDescriptor, d));
  }
  // Every begin, end, instant and counter value by time; at one time, ends before begins (and the
  // inner slice's end first), enclosing begins before enclosed ones.
  struct Point {
    uint64_t ns;
    int order;      // 0 end, 1 instant or counter, 2 begin
    double nested;  // ends: -start (the later-started first); begins: -duration (the longer first)
    size_t index;   // into slices (or samples, for counters: kind 3)
    int kind;       // pf::kSliceBegin, kSliceEnd, kInstant or kCounterEvent
  };
  auto ns = [](double seconds) { return static_cast<uint64_t>(std::llround(seconds * 1e9)); };
  std::vector<Point> points;
  for (size_t i = 0; i < m.slices.size(); ++i) {
    const Slice& s = m.slices[i];
    if (s.duration < 0) {
      points.push_back({ns(s.start), 1, 0, i, pf::kInstant});
    } else {
      points.push_back({ns(s.start), 2, -s.duration, i, pf::kSliceBegin});
      points.push_back({ns(s.start + s.duration), 0, -s.start, i, pf::kSliceEnd});
    }
  }
  for (size_t i = 0; i < m.samples.size(); ++i)
    points.push_back({ns(m.samples[i].time), 1, 0, i, pf::kCounterEvent});
  std::stable_sort(points.begin(), points.end(), [](const Point& a, const Point& b) {
    if (a.ns != b.ns) return a.ns < b.ns;
    if (a.order != b.order) return a.order < b.order;
    return a.nested < b.nested;
  });
  for (const Point& p : points) {
    Proto e;
    e.varint(pf::kType, static_cast<uint64_t>(p.kind));
    if (p.kind == pf::kCounterEvent) {
      const Sample& c = m.samples[p.index];
      e.varint(pf::kTrackUuid, track_uuid(c.track)).f64(pf::kDoubleCounterValue, c.value);
    } else {
      const Slice& s = m.slices[p.index];
      e.varint(pf::kTrackUuid, track_uuid(s.track));
      if (p.kind != pf::kSliceEnd) {
        e.bytes(pf::kCategories, s.category).bytes(pf::kName, s.name);
        for (const auto& [key, value] : s.args.items()) {
          Proto a;
          a.bytes(pf::kAnnotationName, key);
          if (value.is_boolean()) {
            a.varint(pf::kBool, value.get<bool>() ? 1 : 0);
          } else if (value.is_number_integer()) {
            a.sint(pf::kInt, value.get<int64_t>());
          } else if (value.is_number()) {
            a.f64(pf::kDouble, value.get<double>());
          } else {
            a.bytes(pf::kString, value.is_string() ? value.get<std::string>() : value.dump());
          }
          e.message(pf::kDebugAnnotations, a);
        }
      }
    }
    packet(Proto().varint(pf::kTimestamp, p.ns).message(pf::kTrackEvent, e));
  }
  return trace;
}

Result<std::string> resolve_format(const ExportArgs& args) {
  std::string f = args.format;
  if (f.empty()) {
    const std::string& o = args.output;
    f = o.size() > 8 && o.compare(o.size() - 8, 8, ".pftrace") == 0 ? "perfetto" : "chrome";
  }
  if (f == "chrome-json" || f == "json") f = "chrome";
  if (f == "chrome" || f == "perfetto") return f;
  return Status(Code::kInvalidArgument, "unknown format '" + f + "': perfetto, or chrome (also chrome-json)");
}

int run_export(const Context& ctx, const ExportArgs& args) {
  Result<std::string> format = resolve_format(args);
  if (!format.is_ok()) return fail(format.status());
  if (args.output.empty() && ::isatty(STDOUT_FILENO)) {
    return fail(Status(Code::kInvalidArgument, "give -o FILE (say steps.pftrace), or redirect the output"));
  }
  auto client = connect_target(ctx);
  if (!client.is_ok()) return fail(client.status());
  Exporter exporter(**client, args);
  std::string summary;
  Result<TraceModel> model = exporter.run(&summary);
  if (!model.is_ok()) return fail(model.status());
  const std::string text = *format == "perfetto" ? render_perfetto(*model) : render_chrome(*model) + "\n";
  if (args.output.empty() || args.output == "-") {
    std::cout << text << std::flush;
  } else {
    std::ofstream out(args.output, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) return fail(Status(Code::kUnavailable, "cannot write " + args.output));
  }
  std::cerr << "probing: exported " << summary
            << (args.output.empty() || args.output == "-" ? "" : " to " + args.output)
            << "; open it in ui.perfetto.dev" << (*format == "chrome" ? " or chrome://tracing" : "") << "\n";
  return kExitOk;
}

}  // namespace

void add_export_command(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<ExportArgs>();
  CLI::App* cmd = app.add_subcommand(
      "export",
      "The last training steps as a trace for ui.perfetto.dev: a track of steps, one of module calls\n"
      "(nested) and optimizer steps, one of backward passes, from python.torch_trace; the spans and events\n"
      "(probing.span, probing.event) of the same time on a track per thread; RSS and CUDA memory counters.");
  cmd->add_option("--last", args->last, "the last N steps (default 20)")->check(CLI::Range(1LL, 1000000LL));
  cmd->add_option("--seconds", args->seconds, "the last S seconds instead of a number of steps")
      ->check(CLI::PositiveNumber);
  cmd->add_option(
      "--format", args->format,
      "perfetto (Perfetto's protobuf trace) or chrome (JSON trace events, also chrome-json:\n"
      "chrome://tracing, speedscope); by default from -o's name (.pftrace: perfetto), else chrome");
  cmd->add_option("-o,--output", args->output, "the file to write ('-' or none: standard output)");
  cmd->footer(
      "Examples:\n"
      "  probing 1234 export --last 50 -o steps.pftrace\n"
      "  probing 1234 export --seconds 30 --format chrome -o last30s.json\n"
      "  probing 1234 export | gzip > steps.json.gz");
  on_run(cmd, [&ctx, args] { return run_export(ctx, *args); });
}

}  // namespace probing::cli
