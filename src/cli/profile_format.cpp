#include "cli/profile_format.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <set>
#include <sstream>
#include <unordered_map>

#include "cli/format.h"

namespace probing::cli {
namespace {

std::string xml_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t') {
          out += ' ';
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// A frame in folded text: ';' separates frames there, so it may not appear inside one.
std::string folded_label(std::string label) {
  std::replace(label.begin(), label.end(), ';', ':');
  std::replace(label.begin(), label.end(), '\n', ' ');
  return label;
}

const std::vector<ProfileFrame>& frames_of(const Profile& p, long long stack) {
  static const std::vector<ProfileFrame> none;
  auto it = p.stacks.find(stack);
  return it == p.stacks.end() ? none : it->second;
}

// The labels of one sample's path, root first: its thread (unless merged), then its frames.
std::vector<std::string> path_of(const Profile& p, const ProfileSample& s) {
  std::vector<std::string> path;
  if (!p.merge_threads) {
    const ProfileThread* t = p.thread(s.thread);
    path.push_back(t != nullptr ? t->label() : "thread " + std::to_string(s.thread));
  }
  const std::vector<ProfileFrame>& frames = frames_of(p, s.stack);
  for (auto it = frames.rbegin(); it != frames.rend(); ++it) path.push_back(it->label());
  return path;
}

struct Node {
  std::string label;
  long long value = 0;
  std::map<std::string, size_t> children;  // label -> index in the tree
};

// The samples as a call tree (node 0 is the root, "all").
std::vector<Node> call_tree(const Profile& p) {
  std::vector<Node> tree(1);
  tree[0].label = "all";
  const std::vector<long long> counts = p.counts();
  for (size_t i = 0; i < p.samples.size(); ++i) {
    size_t at = 0;
    tree[0].value += counts[i];
    for (const std::string& label : path_of(p, p.samples[i])) {
      auto it = tree[at].children.find(label);
      if (it == tree[at].children.end()) {
        tree.push_back({label, 0, {}});
        it = tree[at].children.emplace(label, tree.size() - 1).first;
      }
      at = it->second;
      tree[at].value += counts[i];
    }
  }
  return tree;
}

// flamegraph.pl's "hot" palette, chosen by the function's name so a function keeps its colour.
std::string colour_for(const std::string& label, bool thread) {
  if (thread) return "rgb(160,170,190)";
  const std::string name = label.substr(0, label.find(" ("));
  const size_t h = std::hash<std::string>{}(name);
  const int r = 205 + static_cast<int>(h % 50);
  const int g = static_cast<int>((h >> 8) % 230);
  const int b = static_cast<int>((h >> 16) % 55);
  return "rgb(" + std::to_string(r) + "," + std::to_string(g) + "," + std::to_string(b) + ")";
}

constexpr const char* kSvgScript = R"JS(
var W = 1180, X0 = 10, CHAR = 7;
var frames = [].slice.call(document.querySelectorAll('g.f'));
var info = document.getElementById('info'), matched = document.getElementById('matched');
var zoomed = null, term = null;
function attr(g, n) { return parseFloat(g.getAttribute(n)); }
function fit(t, label, w) {
  var n = Math.floor((w - 6) / CHAR);
  t.textContent = n < 3 ? '' : (label.length <= n ? label : label.substring(0, n - 2) + '..');
}
function layout(x, w, d) {
  frames.forEach(function (g) {
    var gx = attr(g, 'data-x'), gw = attr(g, 'data-w'), gd = attr(g, 'data-d');
    var r = g.querySelector('rect'), t = g.querySelector('text');
    var ancestor = gd < d && gx <= x + 1e-9 && gx + gw >= x + w - 1e-9;
    var inside = gd >= d && gx >= x - 1e-9 && gx + gw <= x + w + 1e-9;
    if (!ancestor && !inside) { g.style.display = 'none'; return; }
    var nx = ancestor ? X0 : X0 + (gx - x) / w * W, nw = ancestor ? W : gw / w * W;
    if (nw < 0.3) { g.style.display = 'none'; return; }
    g.style.display = '';
    g.style.opacity = ancestor && d > 0 ? 0.6 : 1;
    r.setAttribute('x', nx); r.setAttribute('width', nw);
    t.setAttribute('x', nx + 3); fit(t, g.getAttribute('data-l'), nw);
  });
}
function zoom(g) {
  zoomed = g;
  layout(attr(g, 'data-x'), attr(g, 'data-w'), attr(g, 'data-d'));
  document.getElementById('unzoom').style.display = '';
}
function unzoom() {
  zoomed = null;
  layout(0, TOTAL, 0);
  document.getElementById('unzoom').style.display = 'none';
}
function search(text) {
  term = text;
  var re = null;
  if (text) { try { re = new RegExp(text); } catch (e) { re = null; } }
  var spans = [];
  frames.forEach(function (g) {
    var r = g.querySelector('rect');
    var hit = re !== null && re.test(g.getAttribute('data-l'));
    r.setAttribute('fill', hit ? 'rgb(230,0,230)' : r.getAttribute('data-fill'));
    if (hit) spans.push([attr(g, 'data-x'), attr(g, 'data-w')]);
  });
  spans.sort(function (a, b) { return a[0] - b[0] || b[1] - a[1]; });
  var total = 0, end = -1;
  spans.forEach(function (s) {
    if (s[0] >= end) { total += s[1]; end = s[0] + s[1]; }
    else if (s[0] + s[1] > end) { total += s[0] + s[1] - end; end = s[0] + s[1]; }
  });
  matched.textContent = re === null ? '' : 'Matched: ' + (100 * total / TOTAL).toFixed(1) + '%';
  document.getElementById('reset').style.display = re === null ? 'none' : '';
  return total;
}
frames.forEach(function (g) {
  g.addEventListener('click', function () { zoom(g); });
  g.addEventListener('mouseover', function () { info.textContent = g.querySelector('title').textContent; });
  g.addEventListener('mouseout', function () { info.textContent = ' '; });
});
document.getElementById('unzoom').addEventListener('click', unzoom);
document.getElementById('search').addEventListener('click', function () {
  var t = prompt('Search (a regular expression)', term || ''); if (t !== null) search(t);
});
document.getElementById('reset').addEventListener('click', function () { search(''); });
window.addEventListener('keydown', function (e) {
  if ((e.ctrlKey || e.metaKey) && e.key === 'f') {
    e.preventDefault(); var t = prompt('Search (a regular expression)', term || ''); if (t !== null) search(t);
  } else if (e.key === 'Escape') { unzoom(); search(''); }
});
)JS";

}  // namespace

std::string ProfileFrame::label() const {
  if (file.empty()) return func;
  return func + " (" + file + (line > 0 ? ":" + std::to_string(line) : "") + ")";
}

std::string ProfileThread::label() const {
  std::string text = name.empty() ? "thread " + std::to_string(id) : name;
  if (tid != 0) text += " (tid " + std::to_string(tid) + ")";
  return process.empty() ? text : process + ": " + text;
}

Profile merge_profiles(std::vector<std::tuple<long long, std::string, Profile>> parts) {
  Profile out;
  long long next_thread = 1, next_stack = 1;
  bool first = true;
  for (auto& [pid, process, p] : parts) {
    out.mode = p.mode;
    out.idle = p.idle;
    out.merge_threads = p.merge_threads;
    out.since = first ? p.since : std::min(out.since, p.since);
    out.until = first ? p.until : std::max(out.until, p.until);
    first = false;
    out.max_hz = std::max(out.max_hz, p.max_hz);
    out.seen += p.seen;
    out.idle_left_out += p.idle_left_out;
    out.other_mode += p.other_mode;
    std::map<long long, long long> threads, stacks;
    for (ProfileThread t : p.threads) {
      if (t.name.empty()) t.name = "thread " + std::to_string(t.id);  // its own ident, not the new number
      threads[t.id] = next_thread;
      t.id = next_thread++;
      t.pid = pid;
      t.process = process;
      out.threads.push_back(std::move(t));
    }
    for (auto& [id, frames] : p.stacks) {
      stacks[id] = next_stack;
      out.stacks[next_stack++] = std::move(frames);
    }
    for (ProfileSample s : p.samples) {
      auto t = threads.find(s.thread);
      if (t == threads.end()) {  // a thread the part did not list: listed now, unnamed
        threads[s.thread] = next_thread;
        out.threads.push_back({next_thread++, 0, "", pid, process});
        t = threads.find(s.thread);
      }
      s.thread = t->second;
      auto st = stacks.find(s.stack);
      s.stack = st == stacks.end() ? 0 : st->second;
      out.samples.push_back(s);
    }
    for (std::string& n : p.notices) out.notices.push_back(process + ": " + n);
  }
  std::stable_sort(out.samples.begin(), out.samples.end(),
                   [](const ProfileSample& a, const ProfileSample& b) { return a.time < b.time; });
  return out;
}

const ProfileThread* Profile::thread(long long id) const {
  for (const ProfileThread& t : threads) {
    if (t.id == id) return &t;
  }
  return nullptr;
}

std::vector<long long> Profile::counts() const {
  double shortest = 0;
  for (const ProfileSample& s : samples) {
    if (s.weight > 0 && (shortest == 0 || s.weight < shortest)) shortest = s.weight;
  }
  std::vector<long long> out;
  out.reserve(samples.size());
  for (const ProfileSample& s : samples) {
    out.push_back(shortest > 0 ? std::max(1LL, std::llround(s.weight / shortest)) : 1);
  }
  return out;
}

Result<Profile> parse_profile(const nlohmann::json& reply) {
  if (!reply.is_object() || !reply.contains("samples") || !reply["samples"].is_array() ||
      !reply.contains("stacks") || !reply["stacks"].is_object()) {
    return Status(Code::kInvalidArgument, "the agent's reply is not a profile");
  }
  try {
    Profile p;
    p.since = reply.value("since", 0.0);
    p.until = reply.value("until", 0.0);
    p.mode = reply.value("mode", "wall");
    p.idle = reply.value("idle", false);
    p.max_hz = reply.value("max_hz", 0.0);
    if (reply.contains("counts") && reply["counts"].is_object()) {
      const nlohmann::json& c = reply["counts"];
      p.seen = c.value("seen", 0LL);
      p.idle_left_out = c.value("idle", 0LL);
      p.other_mode = c.value("other_mode", 0LL);
    }
    for (const auto& t : reply.value("threads", nlohmann::json::array())) {
      ProfileThread thread;
      thread.id = t.value("thread_id", 0LL);
      thread.tid = t.contains("native_thread_id") && t["native_thread_id"].is_number()
                       ? t["native_thread_id"].get<long long>()
                       : 0;
      thread.name = t.value("name", "");
      p.threads.push_back(std::move(thread));
    }
    for (const auto& [id, frames] : reply["stacks"].items()) {
      std::vector<ProfileFrame>& out = p.stacks[std::stoll(id)];
      for (const auto& f : frames)
        out.push_back({f.at(0).get<std::string>(), f.at(1).get<std::string>(), f.at(2).get<long long>()});
    }
    for (const auto& s : reply["samples"]) {
      p.samples.push_back(
          {s.at(0).get<double>(), s.at(1).get<long long>(), s.at(2).get<long long>(), s.at(3).get<double>()});
    }
    for (const auto& n : reply.value("notices", nlohmann::json::array())) {
      if (n.is_string()) p.notices.push_back(n.get<std::string>());
    }
    return p;
  } catch (const std::exception& e) {
    return Status(Code::kInvalidArgument, std::string("the agent's profile does not parse: ") + e.what());
  }
}

std::string render_folded(const Profile& p) {
  std::map<std::string, long long> lines;
  const std::vector<long long> counts = p.counts();
  for (size_t i = 0; i < p.samples.size(); ++i) {
    std::string line;
    for (const std::string& label : path_of(p, p.samples[i])) {
      if (!line.empty()) line += ';';
      line += folded_label(label);
    }
    lines[line] += counts[i];
  }
  std::string out;
  for (const auto& [line, count] : lines) out += line + " " + std::to_string(count) + "\n";
  return out;
}

std::string render_speedscope(const Profile& p, const std::string& name) {
  nlohmann::json frames = nlohmann::json::array();
  std::map<std::tuple<std::string, std::string, long long>, size_t> frame_index;
  auto index_of = [&](const ProfileFrame& f) {
    auto key = std::make_tuple(f.func, f.file, f.line);
    auto it = frame_index.find(key);
    if (it != frame_index.end()) return it->second;
    nlohmann::json frame = {{"name", f.func}, {"file", f.file}};
    if (f.line > 0) frame["line"] = f.line;  // a native frame has none
    frames.push_back(std::move(frame));
    return frame_index.emplace(key, frames.size() - 1).first->second;
  };
  // One sampled profile per thread, or one for all.
  std::map<long long, std::vector<const ProfileSample*>> by_thread;
  for (const ProfileSample& s : p.samples) by_thread[p.merge_threads ? 0 : s.thread].push_back(&s);
  nlohmann::json profiles = nlohmann::json::array();
  for (const auto& [thread, samples] : by_thread) {
    nlohmann::json stacks = nlohmann::json::array(), weights = nlohmann::json::array();
    for (const ProfileSample* s : samples) {
      nlohmann::json stack = nlohmann::json::array();
      const std::vector<ProfileFrame>& f = frames_of(p, s->stack);
      for (auto it = f.rbegin(); it != f.rend(); ++it) stack.push_back(index_of(*it));
      stacks.push_back(std::move(stack));
      weights.push_back(s->weight);
    }
    const ProfileThread* t = p.thread(thread);
    double end = samples.empty() ? 0 : samples.back()->time + samples.back()->weight - p.since;
    profiles.push_back(
        {{"type", "sampled"},
         {"name", p.merge_threads ? std::string("all threads")
                                  : (t != nullptr ? t->label() : "thread " + std::to_string(thread))},
         {"unit", "seconds"},
         {"startValue", samples.empty() ? 0 : samples.front()->time - p.since},
         {"endValue", end},
         {"samples", std::move(stacks)},
         {"weights", std::move(weights)}});
  }
  nlohmann::json doc = {{"$schema", "https://www.speedscope.app/file-format-schema.json"},
                        {"shared", {{"frames", std::move(frames)}}},
                        {"profiles", std::move(profiles)},
                        {"name", name},
                        {"activeProfileIndex", 0},
                        {"exporter", "probing"}};
  return doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::vector<StackSlice> stack_slices(const Profile& p) {
  std::map<long long, std::vector<const ProfileSample*>> by_thread;
  for (const ProfileSample& s : p.samples) by_thread[s.thread].push_back(&s);
  std::vector<StackSlice> slices;
  for (const auto& [thread, samples] : by_thread) {
    std::vector<const ProfileFrame*> open;  // root first
    std::vector<double> opened;
    double last_end = 0;
    auto close_to = [&, thread = thread](size_t keep, double at) {
      while (open.size() > keep) {
        slices.push_back({thread, opened.back(), at - opened.back(), open.size() - 1, open.back()});
        open.pop_back();
        opened.pop_back();
      }
    };
    for (const ProfileSample* s : samples) {
      // A gap (samples left out as idle, or none taken) ends every slice at the last sample's end.
      if (!open.empty() && s->time - last_end > s->weight) close_to(0, last_end);
      const std::vector<ProfileFrame>& f = frames_of(p, s->stack);
      size_t same = 0;
      // Slices continue while the function (not the line) stays on the stack.
      while (same < open.size() && same < f.size()) {
        const ProfileFrame& now = f[f.size() - 1 - same];
        if (now.func != open[same]->func || now.file != open[same]->file) break;
        ++same;
      }
      close_to(same, s->time);
      for (size_t i = same; i < f.size(); ++i) {
        open.push_back(&f[f.size() - 1 - i]);
        opened.push_back(s->time);
      }
      last_end = s->time + s->weight;
    }
    close_to(0, last_end);
  }
  return slices;
}

std::string render_chrome(const Profile& p, long long main_pid) {
  nlohmann::json events = nlohmann::json::array();
  events.push_back(
      {{"name", "process_name"}, {"ph", "M"}, {"pid", main_pid}, {"args", {{"name", "python"}}}});
  std::set<long long> named;
  std::map<long long, std::pair<long long, long long>> ids;  // thread -> (pid, tid)
  for (const ProfileSample& s : p.samples) {
    if (ids.count(s.thread) != 0) continue;
    const ProfileThread* t = p.thread(s.thread);
    const long long tid = t != nullptr && t->tid != 0 ? t->tid : s.thread;
    const long long pid = t != nullptr && t->pid != 0 ? t->pid : main_pid;
    ids[s.thread] = {pid, tid};
    if (pid != main_pid && named.insert(pid).second) {
      events.push_back({{"name", "process_name"},
                        {"ph", "M"},
                        {"pid", pid},
                        {"args", {{"name", t->process.empty() ? std::string("python") : t->process}}}});
    }
    // Viewers add the tid and pid to these names themselves.
    events.push_back(
        {{"name", "thread_name"},
         {"ph", "M"},
         {"pid", pid},
         {"tid", tid},
         {"args",
          {{"name", t != nullptr && !t->name.empty() ? t->name : "thread " + std::to_string(s.thread)}}}});
  }
  struct Slice {
    long long pid, tid, ts, dur;
    size_t depth;
    const ProfileFrame* frame;
  };
  std::vector<Slice> slices;
  for (const StackSlice& x : stack_slices(p)) {
    const auto [pid, tid] = ids[x.thread];
    const long long ts = std::llround(x.start * 1e6);
    slices.push_back(
        {pid, tid, ts, std::max(1LL, std::llround((x.start + x.duration) * 1e6) - ts), x.depth, x.frame});
  }
  // Slices close innermost first; viewers that nest them by their order (speedscope) want each
  // parent before the children that start with it: by start, then longest, then outermost first.
  std::sort(slices.begin(), slices.end(), [](const Slice& a, const Slice& b) {
    return std::tie(a.pid, a.tid, a.ts, b.dur, a.depth) < std::tie(b.pid, b.tid, b.ts, a.dur, b.depth);
  });
  for (const Slice& x : slices) {
    events.push_back({{"name", x.frame->func},
                      {"cat", "python"},
                      {"ph", "X"},
                      {"pid", x.pid},
                      {"tid", x.tid},
                      {"ts", x.ts},
                      {"dur", x.dur},
                      {"args", {{"file", x.frame->file}, {"line", x.frame->line}}}});
  }
  nlohmann::json doc = {{"traceEvents", std::move(events)}, {"displayTimeUnit", "ms"}};
  return doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string render_gecko(const Profile& p, long long main_pid) {
  // The Firefox Profiler's processed format, whose tables are columns: one string array for the
  // file, and per thread its samples, stacks (frame + prefix: a tree), frames, functions and
  // resources (here, the source files). Sample weights are counts of the shortest interval.
  using nlohmann::json;
  std::vector<std::string> strings;
  std::unordered_map<std::string, size_t> string_index;
  auto intern = [&](const std::string& s) {
    auto [it, added] = string_index.emplace(s, strings.size());
    if (added) strings.push_back(s);
    return it->second;
  };
  constexpr int kPython = 1;
  const std::vector<long long> counts = p.counts();
  std::map<long long, std::vector<size_t>> by_thread;  // thread -> indices into p.samples
  for (size_t i = 0; i < p.samples.size(); ++i)
    by_thread[p.merge_threads ? 0 : p.samples[i].thread].push_back(i);
  const double interval_ms = p.max_hz > 0 ? 1000.0 / p.max_hz : 10.0;
  json threads = json::array();
  for (const auto& [thread, indices] : by_thread) {
    json stack_frame = json::array(), stack_prefix = json::array(), stack_category = json::array();
    json frame_func = json::array(), frame_line = json::array();
    json func_name = json::array(), func_file = json::array(), func_resource = json::array();
    json resource_name = json::array();
    std::map<std::pair<long long, long long>, size_t> stacks;  // (frame, prefix or -1) -> stack
    std::map<std::tuple<std::string, std::string, long long>, size_t> frames;
    std::map<std::pair<std::string, std::string>, size_t> funcs;
    std::map<std::string, size_t> resources;
    auto frame_of = [&](const ProfileFrame& f) {
      auto fr = frames.find({f.func, f.file, f.line});
      if (fr != frames.end()) return fr->second;
      auto fn = funcs.find({f.func, f.file});
      if (fn == funcs.end()) {
        auto rs = resources.find(f.file);
        if (rs == resources.end()) {
          resource_name.push_back(intern(f.file.substr(f.file.rfind('/') + 1)));
          rs = resources.emplace(f.file, resource_name.size() - 1).first;
        }
        func_name.push_back(intern(f.func));
        func_file.push_back(intern(f.file));
        func_resource.push_back(rs->second);
        fn = funcs.emplace(std::make_pair(f.func, f.file), func_name.size() - 1).first;
      }
      frame_func.push_back(fn->second);
      frame_line.push_back(f.line > 0 ? json(f.line) : json(nullptr));
      return frames.emplace(std::make_tuple(f.func, f.file, f.line), frame_func.size() - 1).first->second;
    };
    json sample_stack = json::array(), sample_time = json::array(), sample_weight = json::array();
    for (size_t i : indices) {
      const ProfileSample& s = p.samples[i];
      const std::vector<ProfileFrame>& f = frames_of(p, s.stack);
      long long prefix = -1;
      for (auto it = f.rbegin(); it != f.rend(); ++it) {  // root first
        const long long frame = static_cast<long long>(frame_of(*it));
        auto st = stacks.find({frame, prefix});
        if (st == stacks.end()) {
          stack_frame.push_back(frame);
          stack_prefix.push_back(prefix < 0 ? json(nullptr) : json(prefix));
          stack_category.push_back(kPython);
          st = stacks.emplace(std::make_pair(frame, prefix), stack_frame.size() - 1).first;
        }
        prefix = static_cast<long long>(st->second);
      }
      sample_stack.push_back(prefix < 0 ? json(nullptr) : json(prefix));
      sample_time.push_back((s.time - p.since) * 1000.0);
      sample_weight.push_back(counts[i]);
    }
    const size_t n_stacks = stack_frame.size(), n_frames = frame_func.size(), n_funcs = func_name.size();
    const size_t n_resources = resource_name.size(), n_samples = sample_stack.size();
    auto filled = [](size_t n, const json& v) { return json(std::vector<json>(n, v)); };
    const ProfileThread* t = p.merge_threads ? nullptr : p.thread(thread);
    const long long pid = t != nullptr && t->pid != 0 ? t->pid : main_pid;
    std::string name = p.merge_threads ? std::string("all threads")
                       : t != nullptr  ? t->label()
                                       : "thread " + std::to_string(thread);
    threads.push_back({
        {"name", name},
        {"isMainThread", t != nullptr && t->name == "MainThread"},
        {"processType", "default"},
        {"processName", t != nullptr && !t->process.empty() ? t->process : "python " + std::to_string(pid)},
        {"processStartupTime", 0},
        {"processShutdownTime", nullptr},
        {"registerTime", 0},
        {"unregisterTime", nullptr},
        {"pausedRanges", json::array()},
        {"pid", std::to_string(pid)},
        {"tid", t != nullptr && t->tid != 0 ? t->tid : thread},
        {"samples",
         {{"stack", std::move(sample_stack)},
          {"time", std::move(sample_time)},
          {"weight", std::move(sample_weight)},
          {"weightType", "samples"},
          {"length", n_samples}}},
        {"stackTable",
         {{"frame", std::move(stack_frame)},
          {"prefix", std::move(stack_prefix)},
          {"category", std::move(stack_category)},
          {"subcategory", filled(n_stacks, 0)},
          {"length", n_stacks}}},
        {"frameTable",
         {{"address", filled(n_frames, -1)},
          {"inlineDepth", filled(n_frames, 0)},
          {"category", filled(n_frames, kPython)},
          {"subcategory", filled(n_frames, 0)},
          {"func", std::move(frame_func)},
          {"nativeSymbol", filled(n_frames, nullptr)},
          {"innerWindowID", filled(n_frames, nullptr)},
          {"implementation", filled(n_frames, nullptr)},
          {"line", std::move(frame_line)},
          {"column", filled(n_frames, nullptr)},
          {"optimizations", filled(n_frames, nullptr)},
          {"length", n_frames}}},
        {"funcTable",
         {{"name", std::move(func_name)},
          {"isJS", filled(n_funcs, true)},
          {"relevantForJS", filled(n_funcs, false)},
          {"resource", std::move(func_resource)},
          {"fileName", std::move(func_file)},
          {"lineNumber", filled(n_funcs, nullptr)},
          {"columnNumber", filled(n_funcs, nullptr)},
          {"length", n_funcs}}},
        {"resourceTable",
         {{"lib", filled(n_resources, nullptr)},
          {"name", std::move(resource_name)},
          {"host", filled(n_resources, nullptr)},
          {"type", filled(n_resources, 1)},
          {"length", n_resources}}},
        {"nativeSymbols",
         {{"libIndex", json::array()},
          {"address", json::array()},
          {"name", json::array()},
          {"functionSize", json::array()},
          {"length", 0}}},
        {"markers",
         {{"data", json::array()},
          {"name", json::array()},
          {"startTime", json::array()},
          {"endTime", json::array()},
          {"phase", json::array()},
          {"category", json::array()},
          {"length", 0}}},
    });
  }
  const json categories =
      json::array({{{"name", "Other"}, {"color", "grey"}, {"subcategories", {"Other"}}},
                   {{"name", "Python"}, {"color", "yellow"}, {"subcategories", {"Other"}}}});
  json doc = {
      {"meta",
       {{"version", 32},
        {"preprocessedProfileVersion", 57},
        {"interval", interval_ms},
        {"startTime", p.since * 1000.0},
        {"processType", 0},
        {"product", "probing (mode " + p.mode + ")"},
        {"importedFrom", "probing"},
        {"platform", "Linux"},
        {"stackwalk", 0},
        {"symbolicated", true},
        {"categories", categories},
        {"markerSchema", json::array()},
        {"extensions",
         {{"id", json::array()}, {"name", json::array()}, {"baseURL", json::array()}, {"length", 0}}}}},
      {"libs", json::array()},
      {"pages", json::array()},
      {"threads", std::move(threads)},
      {"shared",
       {{"stringArray", std::move(strings)},
        {"sources", {{"length", 0}, {"uuid", json::array()}, {"filename", json::array()}}}}},
  };
  return doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string render_svg(const Profile& p, const std::string& title) {
  constexpr double kWidth = 1180, kX0 = 10, kRow = 16, kTop = 60, kBottom = 30;
  const std::vector<Node> tree = call_tree(p);
  const double total = static_cast<double>(std::max(1LL, tree[0].value));
  // Depth-first: x (in counts) and depth of every node wide enough to see.
  struct Placed {
    size_t node;
    double x;
    int depth;
    bool thread;
  };
  std::vector<Placed> placed;
  int max_depth = 0;
  std::function<void(size_t, double, int)> place = [&](size_t n, double x, int depth) {
    if (tree[n].value / total * kWidth < 0.1) return;
    placed.push_back({n, x, depth, depth == 1 && !p.merge_threads});
    max_depth = std::max(max_depth, depth);
    double cx = x;
    for (const auto& [label, child] : tree[n].children) {
      place(child, cx, depth + 1);
      cx += static_cast<double>(tree[child].value);
    }
  };
  place(0, 0, 0);
  const double height = kTop + (max_depth + 1) * kRow + kBottom;
  const double seconds = std::max(0.0, p.until - p.since);
  std::ostringstream out;
  out << R"(<?xml version="1.0" standalone="no"?>)"
      << "\n"
      << R"(<svg version="1.1" width="1200" height=")" << height << R"(" viewBox="0 0 1200 )" << height
      << R"(" xmlns="http://www.w3.org/2000/svg" data-total=")" << tree[0].value << R"(">)"
      << "\n"
      << "<style>text{font-family:monospace;font-size:12px;fill:#000}g.f:hover "
         "rect{stroke:#000;stroke-width:0.5}"
         ".b{cursor:pointer;fill:#06c}#title{font-size:17px}</style>\n"
      << R"(<rect x="0" y="0" width="1200" height=")" << height << R"(" fill="#f8f8f8"/>)"
      << "\n"
      << R"(<text id="title" x="600" y="24" text-anchor="middle">)" << xml_escape(title) << "</text>\n"
      << R"(<text x="10" y="46">)"
      << xml_escape(std::to_string(p.samples.size()) + " samples, " + fixed(seconds, 1) + " s, mode " +
                    p.mode + (p.idle ? " with idle threads" : ""))
      << "</text>\n"
      << R"(<text id="unzoom" class="b" x="430" y="46" style="display:none">Reset zoom</text>)"
      << "\n"
      << R"(<text id="search" class="b" x="1090" y="24">Search</text>)"
      << "\n"
      << R"(<text id="reset" class="b" x="1090" y="46" style="display:none">Clear search</text>)"
      << "\n"
      << R"(<text id="matched" x="900" y="46"></text>)"
      << "\n"
      << R"(<text id="info" x="10" y=")" << height - 10 << R"("> </text>)"
      << "\n";
  for (const Placed& pl : placed) {
    const Node& n = tree[pl.node];
    const double x = kX0 + pl.x / total * kWidth;
    const double w = n.value / total * kWidth;
    const double y = height - kBottom - (pl.depth + 1) * kRow;
    const std::string colour = pl.depth == 0 ? "rgb(200,200,200)" : colour_for(n.label, pl.thread);
    const std::string tip = n.label + " (" + std::to_string(n.value) + " samples, " +
                            fixed(100.0 * static_cast<double>(n.value) / total, 2) + "%)";
    const size_t chars = w > 6 ? static_cast<size_t>((w - 6) / 7) : 0;
    std::string text;
    if (chars >= 3) text = n.label.size() <= chars ? n.label : n.label.substr(0, chars - 2) + "..";
    out << R"(<g class="f" data-x=")" << pl.x << R"(" data-w=")" << n.value << R"(" data-d=")" << pl.depth
        << R"(" data-l=")" << xml_escape(n.label) << R"("><title>)" << xml_escape(tip)
        << R"(</title><rect x=")" << fixed(x, 2) << R"(" y=")" << y << R"(" width=")" << fixed(w, 2)
        << R"(" height=")" << kRow - 1 << R"(" fill=")" << colour << R"(" data-fill=")" << colour
        << R"(" rx="2"/><text x=")" << fixed(x + 3, 2) << R"(" y=")" << y + 11.5 << R"(">)"
        << xml_escape(text) << "</text></g>\n";
  }
  out << "<script><![CDATA[\nvar TOTAL = " << tree[0].value << ";" << kSvgScript << "]]></script>\n</svg>\n";
  return out.str();
}

std::string render_top(const Profile& p, size_t rows, int width) {
  struct Row {
    double own = 0, total = 0;
  };
  std::map<std::pair<std::string, std::string>, Row> by_function;
  double all = 0;
  for (const ProfileSample& s : p.samples) {
    all += s.weight;
    const std::vector<ProfileFrame>& f = frames_of(p, s.stack);
    std::set<std::pair<std::string, std::string>> seen;
    for (size_t i = 0; i < f.size(); ++i) {
      auto key = std::make_pair(f[i].func, f[i].file);
      Row& r = by_function[key];
      if (i == 0) r.own += s.weight;
      if (seen.insert(key).second) r.total += s.weight;
    }
  }
  std::vector<std::pair<std::pair<std::string, std::string>, Row>> sorted(by_function.begin(),
                                                                          by_function.end());
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    return a.second.own != b.second.own ? a.second.own > b.second.own : a.second.total > b.second.total;
  });
  std::string out = "  %OWN %TOTAL   OWN(s) TOTAL(s)  FUNCTION (FILE)\n";
  for (size_t i = 0; i < sorted.size() && i < rows; ++i) {
    const auto& [key, r] = sorted[i];
    char head[64];
    std::snprintf(head, sizeof head, "%6.1f %6.1f %8.2f %8.2f  ", all > 0 ? 100 * r.own / all : 0.0,
                  all > 0 ? 100 * r.total / all : 0.0, r.own, r.total);
    std::string line = head + key.first + " (" + key.second + ")";
    if (width > 0) line = cut_to_width(line, static_cast<size_t>(width));
    out += line + "\n";
  }
  if (sorted.empty()) out += "  (no samples)\n";
  return out;
}

Result<std::string> profile_format_for(const std::string& format, const std::string& path) {
  if (!format.empty()) {
    if (format == "svg" || format == "speedscope" || format == "chrome" || format == "gecko" ||
        format == "folded" || format == "top") {
      return format;
    }
    if (format == "perfetto") return std::string("chrome");
    if (format == "collapsed") return std::string("folded");
    if (format == "firefox") return std::string("gecko");
    return Status(Code::kInvalidArgument,
                  "unknown format '" + format +
                      "': svg, speedscope, chrome (or perfetto), gecko (or firefox), folded or top");
  }
  if (path.empty() || path == "-") return std::string("top");
  auto ends = [&path](const std::string& s) { return path.size() >= s.size() && path.ends_with(s); };
  if (ends(".svg")) return std::string("svg");
  if (ends(".folded") || ends(".collapsed") || ends(".txt")) return std::string("folded");
  if (ends(".json")) {
    const std::string name = path.substr(path.rfind('/') + 1);  // not the directories': ~/traces/run.json
    for (const char* word : {"trace", "chrome", "perfetto"}) {
      if (name.find(word) != std::string::npos) return std::string("chrome");
    }
    for (const char* word : {"gecko", "firefox"}) {
      if (name.find(word) != std::string::npos) return std::string("gecko");
    }
    return std::string("speedscope");
  }
  return Status(Code::kInvalidArgument,
                "cannot tell the format from '" + path +
                    "': name it .svg, .json (speedscope), .trace.json (Chrome/Perfetto), "
                    ".gecko.json (Firefox Profiler) or .folded, or give --format");
}

}  // namespace probing::cli
