// probing TARGET profile [--seconds N | --last DURATION] [-o FILE] [--format F] and probing TARGET top:
// the agent's sampler (profile/sampler.h) asked to sample faster for a while, its samples fetched
// and written as a flamegraph, speedscope, Chrome or Firefox Profiler trace, folded stacks, or a
// table.
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "cli/commands/process_tree.h"
#include "cli/common.h"
#include "cli/format.h"
#include "cli/interrupt.h"
#include "cli/profile_format.h"
#include "inspect/process.h"
#include "native/native_stack.h"

namespace probing::cli {
namespace {

constexpr double kRequestTimeoutS = 30;
constexpr double kMaxHz = 1000;
constexpr double kMaxSeconds = 3600;
// --native stops each thread it reads: a lower rate, by default and at most.
constexpr double kNativeHz = 20;
constexpr double kMaxNativeHz = 100;

struct ProfileArgs {
  double seconds = 10;
  double hz = 100;
  std::string last;
  std::string mode = "wall";
  bool gil = false;
  bool idle = false;
  bool merge_threads = false;
  bool subprocesses = false;
  bool native = false;
  bool tasks = false;  // --async
  bool hz_given = false;
  std::string format;
  std::string output;
  // top
  double window = 5;
  size_t rows = 0;  // 0: fit the terminal
};

// "90", "90s", "5m", "1h", "1.5m" -> seconds.
Result<double> parse_duration(const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  const std::string unit = end != nullptr ? std::string(end) : "";
  double scale = 0;
  if (unit.empty() || unit == "s") scale = 1;
  if (unit == "m" || unit == "min") scale = 60;
  if (unit == "h") scale = 3600;
  if (text.empty() || end == text.c_str() || scale == 0 || !std::isfinite(v) || v <= 0) {
    return Status(Code::kInvalidArgument, "'" + text + "' is not a duration: say 90, 90s, 5m or 1h");
  }
  return v * scale;
}

std::string query_string(const ProfileArgs& args) {
  return "&mode=" + std::string(args.gil ? "gil" : args.mode) + "&idle=" + (args.idle ? "1" : "0") +
         (args.tasks ? "&tasks=1" : "");
}

// The body of POST /profile: sample at --hz for `seconds` (extending session `renew` when not 0).
std::string session_body(const ProfileArgs& args, double seconds, long long renew = 0) {
  nlohmann::json body{{"hz", args.hz}, {"seconds", seconds}};
  if (renew != 0) body["renew"] = renew;
  if (args.tasks) body["tasks"] = true;
  return body.dump();
}

Result<nlohmann::json> json_reply(client::Client& client, const std::string& method, const std::string& path,
                                  const std::string& body) {
  return agent_json(client, method, path, body, kRequestTimeoutS,
                    "this agent has no profiler (it is older than this probing): restart the process "
                    "with this version's agent");
}

// Thread names are Python objects, read with the GIL: one python.threads query has the agent
// remember them, so the samples carry them. Best effort: a busy GIL only costs the names.
void refresh_thread_names(client::Client& client) {
  (void)client.request("POST", "/query", R"({"sql": "SELECT count(*) FROM python.threads"})", 5);
}

// The target's agent, with the pid it reports (a host:port target's pid is its own), and its
// thread names refreshed.
struct Agent {
  std::unique_ptr<client::Client> client;
  long long pid = 0;
};

Result<Agent> open_agent(const Context& ctx) {
  auto connected = connect_target(ctx);
  if (!connected.is_ok()) return connected.status();
  Agent agent{std::move(*connected), 0};
  Result<nlohmann::json> health = json_reply(*agent.client, "GET", "/health", "");
  if (!health.is_ok()) return health.status();
  agent.pid = health->value("pid", 0LL);
  refresh_thread_names(*agent.client);
  return agent;
}

Result<Profile> fetch(client::Client& client, const std::string& path, const ProfileArgs& args) {
  Result<nlohmann::json> j = json_reply(client, "GET", path + query_string(args), "");
  if (!j.is_ok()) return j.status();
  Result<Profile> p = parse_profile(*j);
  if (p.is_ok()) p->merge_threads = args.merge_threads;
  return p;
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// "100", "0.5": a rate as people write it.
std::string hz_text(double hz) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", hz);
  return buf;
}

// Sleeps until `seconds` pass or Ctrl-C, with a progress line on a terminal. The seconds waited.
double wait_for(double seconds, const std::string& what, const SigintPipe& sigint) {
  const bool tty = ::isatty(STDERR_FILENO) == 1;
  const auto start = std::chrono::steady_clock::now();
  double waited = 0;
  while (waited < seconds) {
    if (tty) {
      std::cerr << "\r" << what << ": " << static_cast<int>(waited) << " of " << fixed(seconds, 0)
                << " s (Ctrl-C stops early) " << std::flush;
    }
    pollfd pfd{sigint.ok() ? sigint.fd() : -1, POLLIN, 0};
    const int wait_ms = static_cast<int>(std::min(1.0, seconds - waited) * 1000) + 1;
    if (::poll(&pfd, 1, wait_ms) > 0) {
      sigint.drain();
      waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      break;
    }
    waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  if (tty) std::cerr << "\r\x1b[K" << std::flush;
  return std::min(waited, seconds);
}

// Asks the agent to sample at --hz for `seconds`, waits (Ctrl-C stops early), and fetches them on
// a new connection: the agent closes one left idle for server.request_timeout_s.
Result<Profile> sample_for(const Context& ctx, client::Client& client, const ProfileArgs& args,
                           double seconds, const std::string& what, const SigintPipe& sigint) {
  Result<nlohmann::json> session = json_reply(client, "POST", "/profile", session_body(args, seconds));
  if (!session.is_ok()) return session.status();
  const double start = session->value("start", 0.0);
  const double waited = wait_for(seconds, what, sigint);
  auto fresh = connect_target(ctx);
  if (!fresh.is_ok()) return fresh.status();
  return fetch(**fresh, "/profile?since=" + fixed(start, 6) + "&until=" + fixed(start + waited + 0.001, 6),
               args);
}

Status check_args(const ProfileArgs& args) {
  if (!(args.hz > 0) || args.hz > kMaxHz)
    return {Code::kInvalidArgument, "--hz must be above 0 and at most 1000"};
  if (args.native && args.hz > kMaxNativeHz) {
    return {Code::kInvalidArgument,
            "with --native, --hz is at most 100: each sample stops each thread it reads"};
  }
  if (!(args.seconds > 0) || args.seconds > kMaxSeconds) {
    return {Code::kInvalidArgument, "--seconds must be above 0 and at most 3600"};
  }
  if (args.mode != "wall" && args.mode != "cpu" && args.mode != "gil") {
    return {Code::kInvalidArgument, "--mode is wall, cpu or gil"};
  }
  return {};
}

// A native frame of a --native sample, or "" for one of the interpreter's own (its executable or
// libpython) that is not at the innermost end of the stack: the eval loop's calls between Python
// frames and the startup below them say nothing the Python frames do not.
bool interpreter_frame(const native::Frame& f) {
  const std::string base = f.file.substr(f.file.rfind('/') + 1);
  return !f.python && (base.rfind("python", 0) == 0 || base.rfind("libpython", 0) == 0);
}

std::vector<ProfileFrame> profile_frames(const native::ThreadStack& t) {
  std::vector<ProfileFrame> out;
  bool inner = true;  // still in the innermost run of native frames
  for (const native::Frame& f : t.frames) {
    if (f.python) {
      inner = false;
      out.push_back({f.func, f.file, f.lineno});
    } else if (inner || !interpreter_frame(f)) {
      out.push_back({f.func, f.file.substr(f.file.rfind('/') + 1), 0});
    }
  }
  return out;
}

// --native: each thread stopped, unwound and read from outside (native/native_stack.h), one at a
// time, at --hz, on a thread of this process's own; a thread the mode leaves out is not stopped.
// The agent, when one answers, only names the threads. Threads of probing's agent are left out.
Result<Profile> sample_native(const Context& ctx, const ProfileArgs& args, pid_t pid,
                              const SigintPipe& sigint) {
  Profile p;
  p.mode = args.gil ? "gil" : args.mode;
  p.idle = args.idle;
  std::map<long, nlohmann::json> known = agent_threads(ctx, &p.notices);  // asked before: not sampled
  const double hz = args.hz_given ? args.hz : kNativeHz;
  std::atomic<bool> stop{false};
  Status status;
  double held_ms = 0, held_max_ms = 0;
  long long reads = 0;
  std::map<long long, std::string> names;  // tid -> thread name
  std::set<std::string> notes;
  std::thread sampler([&] {
    Result<native::Sampler> opened = native::Sampler::open(pid);
    if (!opened.is_ok()) {
      status = opened.status();
      return;
    }
    if (std::string note = opened->python_note(); !note.empty()) notes.insert(note);
    auto keep = [&](pid_t, char state, bool holds) {
      ++p.seen;
      const bool running = state == 'R';
      if ((p.mode == "gil" && !holds) || (p.mode == "cpu" && !running)) {
        ++p.other_mode;
        return false;
      }
      if (p.mode == "wall" && !p.idle && !running && !holds) {
        ++p.idle_left_out;
        return false;
      }
      return true;
    };
    std::map<std::vector<std::tuple<std::string, std::string, long long>>, long long> stacks;
    const auto interval = std::chrono::duration<double>(1 / hz);
    double last = 0;
    while (!stop.load()) {
      // The next read one interval after this one starts, never sooner: a late read does not
      // bring the next one closer (each sample's weight is the time since the one before).
      const auto next = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(interval);
      Result<std::vector<pid_t>> tids = inspect::list_threads(pid);
      if (!tids.is_ok() || tids->empty()) {
        notes.insert("process " + std::to_string(pid) + " ended while it was sampled");
        break;
      }
      std::vector<pid_t> wanted;
      for (pid_t tid : *tids) {
        std::ifstream comm("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/comm");
        std::string name;
        std::getline(comm, name);
        if (name.rfind("probing-", 0) != 0) wanted.push_back(tid);
      }
      const double now =
          std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
      const double weight = last == 0 ? interval.count() : now - last;
      if (last == 0) p.since = now;
      last = now;
      Result<native::Capture> cap = opened->sample(wanted, keep);
      if (!cap.is_ok()) {
        status = cap.status();
        break;
      }
      for (const std::string& n : cap->notes) notes.insert(n);
      for (const native::ThreadStack& t : cap->threads) {
        if (!t.note.empty() && t.frames.empty())
          notes.insert("thread " + std::to_string(t.tid) + ": " + t.note);
        if (t.frames.empty()) continue;
        ++reads;
        held_ms += t.stopped_ms;
        held_max_ms = std::max(held_max_ms, t.stopped_ms);
        std::vector<ProfileFrame> frames = profile_frames(t);
        std::vector<std::tuple<std::string, std::string, long long>> key;
        for (const ProfileFrame& f : frames) key.emplace_back(f.func, f.file, f.line);
        auto [it, added] = stacks.emplace(std::move(key), static_cast<long long>(stacks.size()) + 1);
        if (added) p.stacks[it->second] = std::move(frames);
        p.samples.push_back({now, t.tid, it->second, weight});
        if (!names.count(t.tid)) {
          auto k = known.find(t.tid);
          names[t.tid] = k != known.end()           ? k->second.value("name", t.comm)
                         : t.tid == pid && t.python ? std::string("MainThread")
                                                    : t.comm;
        }
      }
      std::this_thread::sleep_until(next);
    }
    p.until = last + (p.samples.empty() ? 0 : p.samples.back().weight);
  });
  wait_for(args.seconds, "profiling " + std::to_string(pid) + " natively at " + hz_text(hz) + " Hz", sigint);
  stop = true;
  sampler.join();  // threads that never stopped are let go as it ends
  if (!status.is_ok()) return status;
  for (const auto& [tid, name] : names) p.threads.push_back({tid, tid, name, 0, ""});
  double shortest = 0;
  for (const ProfileSample& s : p.samples) shortest = shortest == 0 ? s.weight : std::min(shortest, s.weight);
  p.max_hz = shortest > 0 ? 1 / shortest : 0;
  p.merge_threads = args.merge_threads;
  for (const std::string& n : notes) p.notices.push_back(n);
  if (reads > 0) {
    p.notices.push_back("each thread read was stopped for " + fixed(held_ms / static_cast<double>(reads), 2) +
                        " ms on average (at most " + fixed(held_max_ms, 2) + " ms), " + hz_text(hz) +
                        " times a second");
  }
  return p;
}

// "812 samples of 2 threads over 10.0 s at 100 Hz, mode wall", and what was left out.
std::string summary(const Profile& p) {
  std::string text = std::to_string(p.samples.size()) + " samples of " + std::to_string(p.threads.size()) +
                     (p.threads.size() == 1 ? " thread" : " threads") + " over " +
                     fixed(std::max(0.0, p.until - p.since), 1) + " s";
  if (p.max_hz > 0) text += " at up to " + hz_text(p.max_hz) + " Hz";
  text += ", mode " + p.mode;
  if (p.idle_left_out > 0) {
    text +=
        "; " + std::to_string(p.idle_left_out) + " samples of waiting threads left out (--idle keeps them)";
  }
  if (p.other_mode > 0) text += "; " + std::to_string(p.other_mode) + " samples outside the mode left out";
  return text;
}

void print_notices(const Profile& p) {
  for (const std::string& n : p.notices) std::cerr << "probing: note: " << n << "\n";
}

Result<std::string> render(const Profile& p, const std::string& format, long long pid) {
  if (format == "svg") return render_svg(p, "probing profile of " + std::to_string(pid) + ", mode " + p.mode);
  if (format == "speedscope") return render_speedscope(p, "probing profile of " + std::to_string(pid));
  if (format == "chrome") return render_chrome(p, pid);
  if (format == "gecko") return render_gecko(p, pid);
  if (format == "folded") return render_folded(p);
  const int width = terminal_width();
  return summary(p) + "\n" + render_top(p, 40, width);
}

// One process of a --subprocesses profile: its agent, its session's start, how to name it.
struct Part {
  Context ctx;
  Agent agent;
  std::string name;
  double start = 0;
};

// The processes of the tree under the target whose agents answer, the target first; the others
// are named on stderr.
Result<std::vector<Part>> open_tree(const Context& ctx) {
  Result<client::Target> target = client::parse_target(ctx.target);
  if (!target.is_ok()) return target.status();
  if (target->kind != client::Target::Kind::kPid) {
    return Status(Code::kInvalidArgument, "--subprocesses reads the process tree in /proc: give a local pid");
  }
  bool truncated = false;
  Result<std::vector<TreeMember>> tree = read_tree(target->pid, &truncated);
  if (!tree.is_ok()) return tree.status();
  std::vector<Part> parts;
  for (const TreeMember& m : *tree) {
    const std::string name = "pid " + std::to_string(m.p.pid) +
                             (m.p.depth == 0 ? "" : " (" + m.role + " of " + std::to_string(m.p.ppid) + ")");
    if (m.agent != AgentState::kServing) {
      if (m.p.python.empty()) continue;  // not Python: nothing to profile
      std::cerr << "probing: note: " << name << " has no agent (" << agent_text(m.agent)
                << "): not profiled; `probing " << m.p.pid << " inject` gives it one\n";
      continue;
    }
    Context one = ctx;
    one.target = std::to_string(m.p.pid);
    Result<Agent> agent = open_agent(one);
    if (!agent.is_ok()) {
      std::cerr << "probing: note: " << name << ": " << agent.status().message() << "\n";
      continue;
    }
    parts.push_back({one, std::move(*agent), name, 0});
  }
  if (parts.empty()) return Status(Code::kUnavailable, "no process of the tree has an agent that answers");
  return parts;
}

Result<Profile> profile_tree(const Context& ctx, const ProfileArgs& args, double last_s,
                             const SigintPipe& sigint) {
  Result<std::vector<Part>> parts = open_tree(ctx);
  if (!parts.is_ok()) return parts.status();
  // A process under the target may end meanwhile (a DataLoader makes new workers each epoch): it
  // is left out with a note; only the target's own failure fails the profile.
  auto lost = [&parts](size_t i, const Status& why) {
    if (i == 0) return why.with_context((*parts)[0].name);
    const Part& part = (*parts)[i];
    const bool ended = ::kill(static_cast<pid_t>(part.agent.pid), 0) != 0 && errno == ESRCH;
    std::cerr << "probing: note: " << part.name
              << (ended ? " ended while it was profiled" : " is not in the profile: " + why.message())
              << "\n";
    return Status();
  };
  std::vector<bool> gone(parts->size(), false);
  if (last_s <= 0) {
    for (size_t i = 0; i < parts->size(); ++i) {
      Part& part = (*parts)[i];
      Result<nlohmann::json> session =
          json_reply(*part.agent.client, "POST", "/profile", session_body(args, args.seconds));
      if (!session.is_ok()) {
        if (Status st = lost(i, session.status()); !st.is_ok()) return st;
        gone[i] = true;
        continue;
      }
      part.start = session->value("start", 0.0);
    }
  }
  const double waited = last_s > 0 ? 0
                                   : wait_for(args.seconds,
                                              "profiling " + std::to_string(parts->size()) +
                                                  " processes at " + hz_text(args.hz) + " Hz",
                                              sigint);
  std::vector<std::tuple<long long, std::string, Profile>> profiles;
  for (size_t i = 0; i < parts->size(); ++i) {
    if (gone[i]) continue;
    Part& part = (*parts)[i];
    auto fresh = connect_target(part.ctx);  // a new connection: the first idled through the wait
    Result<Profile> p = !fresh.is_ok() ? Result<Profile>(fresh.status())
                        : last_s > 0   ? fetch(**fresh, "/profile?last=" + fixed(last_s, 3), args)
                                       : fetch(**fresh,
                                               "/profile?since=" + fixed(part.start, 6) +
                                                   "&until=" + fixed(part.start + waited + 0.001, 6),
                                               args);
    if (!p.is_ok()) {
      if (Status st = lost(i, p.status()); !st.is_ok()) return st;
      continue;
    }
    profiles.emplace_back(part.agent.pid, part.name, std::move(*p));
  }
  Profile merged = merge_profiles(std::move(profiles));
  merged.merge_threads = args.merge_threads;
  return merged;
}

int run_profile(const Context& ctx, const ProfileArgs& args) {
  Result<std::string> format = profile_format_for(args.format, args.output);
  if (!format.is_ok()) return fail(format.status());
  if (Status st = check_args(args); !st.is_ok()) return fail(st);
  double last_s = 0;
  if (!args.last.empty()) {
    Result<double> d = parse_duration(args.last);
    if (!d.is_ok()) return fail(d.status());
    last_s = *d;
  }
  SigintPipe sigint;
  long long pid = 0;
  Result<Profile> profile = Status(Code::kInternal, "");
  if (args.native) {
    Result<pid_t> local = local_pid(ctx, "--native");
    if (!local.is_ok()) return fail(local.status());
    pid = *local;
    profile = sample_native(ctx, args, *local, sigint);
  } else if (args.subprocesses) {
    Result<client::Target> target = client::parse_target(ctx.target);
    pid = target.is_ok() ? target->pid : 0;
    profile = profile_tree(ctx, args, last_s, sigint);
  } else {
    Result<Agent> agent = open_agent(ctx);
    if (!agent.is_ok()) return fail(agent.status());
    pid = agent->pid;
    profile = last_s > 0 ? fetch(*agent->client, "/profile?last=" + fixed(last_s, 3), args)
                         : sample_for(ctx, *agent->client, args, args.seconds,
                                      "profiling " + std::to_string(pid) + " at " + hz_text(args.hz) + " Hz",
                                      sigint);
  }
  if (!profile.is_ok()) return fail(profile.status());
  Result<std::string> text = render(*profile, *format, pid);
  if (!text.is_ok()) return fail(text.status());
  if (args.output.empty() || args.output == "-") {
    std::cout << *text << std::flush;
  } else {
    std::ofstream out(args.output, std::ios::binary | std::ios::trunc);
    if (!out || !(out << *text) || !out.flush()) {
      return fail(Status(Code::kUnavailable, "cannot write " + args.output));
    }
  }
  print_notices(*profile);
  if (profile->samples.empty()) {
    std::cerr << "probing: no samples: " << summary(*profile) << "\n";
  } else if (!args.output.empty() && args.output != "-") {
    std::cerr << "probing: wrote " << args.output << " (" << *format << "): " << summary(*profile) << "\n";
  }
  return kExitOk;
}

int run_top(const Context& ctx, ProfileArgs args, bool seconds_given) {
  if (Status st = check_args(args); !st.is_ok()) return fail(st);
  if (!(args.window > 0) || args.window > 600) {
    return fail(Status(Code::kInvalidArgument, "--window must be above 0 and at most 600 seconds"));
  }
  const bool live = ::isatty(STDOUT_FILENO) == 1;
  SigintPipe sigint;
  if (!live) {  // once, for a pipe or a file
    args.seconds = seconds_given ? args.seconds : 2;
    long long pid = 0;
    Result<Profile> p = Status(Code::kInternal, "");
    if (args.subprocesses) {
      Result<client::Target> target = client::parse_target(ctx.target);
      pid = target.is_ok() ? target->pid : 0;
      p = profile_tree(ctx, args, 0, sigint);
    } else {
      Result<Agent> agent = open_agent(ctx);
      if (!agent.is_ok()) return fail(agent.status());
      pid = agent->pid;
      p = sample_for(ctx, *agent->client, args, args.seconds, "sampling " + std::to_string(pid), sigint);
    }
    if (!p.is_ok()) return fail(p.status());
    std::cout << "probing top: pid " << pid << ": " << summary(*p) << "\n"
              << render_top(*p, args.rows > 0 ? args.rows : 30, 0) << std::flush;
    print_notices(*p);
    return kExitOk;
  }
  std::vector<Part> parts;
  if (args.subprocesses) {
    Result<std::vector<Part>> tree = open_tree(ctx);
    if (!tree.is_ok()) return fail(tree.status());
    parts = std::move(*tree);
  } else {
    Result<Agent> agent = open_agent(ctx);
    if (!agent.is_ok()) return fail(agent.status());
    parts.push_back({ctx, std::move(*agent), "", 0});
  }
  const long long pid = parts.front().agent.pid;
  const std::string who =
      "pid " + std::to_string(pid) +
      (parts.size() > 1 ? " and " + std::to_string(parts.size() - 1) + " processes under it" : "");
  std::vector<long long> sessions(parts.size(), 0);
  const auto started = std::chrono::steady_clock::now();
  for (int round = 0;; ++round) {
    // Each round extends one short session per agent: when this command dies, the agent slows
    // down by itself, and a top holds one of the agent's 16 sessions.
    // A process under the target that ends (a DataLoader's worker, at an epoch's end) drops out.
    for (size_t i = 0; i < parts.size();) {
      Result<nlohmann::json> s =
          json_reply(*parts[i].agent.client, "POST", "/profile", session_body(args, 1.5, sessions[i]));
      if (!s.is_ok() && i == 0)
        return fail(s.status().with_context(parts[i].name.empty() ? who : parts[i].name));
      if (!s.is_ok()) {
        parts.erase(parts.begin() + static_cast<std::ptrdiff_t>(i));
        sessions.erase(sessions.begin() + static_cast<std::ptrdiff_t>(i));
        continue;
      }
      sessions[i++] = s->value("id", 0LL);
    }
    if (round > 0) {
      std::vector<std::tuple<long long, std::string, Profile>> profiles;
      for (size_t i = 0; i < parts.size(); ++i) {
        Part& part = parts[i];
        Result<Profile> p = fetch(*part.agent.client, "/profile?last=" + fixed(args.window, 3), args);
        if (!p.is_ok() && i == 0) return fail(p.status().with_context(part.name.empty() ? who : part.name));
        if (p.is_ok()) profiles.emplace_back(part.agent.pid, part.name, std::move(*p));
      }
      Profile p = profiles.size() == 1 ? std::move(std::get<2>(profiles.front()))
                                       : merge_profiles(std::move(profiles));
      const int width = terminal_width();
      const size_t rows = args.rows > 0 ? args.rows : 20;
      std::ostringstream screen;
      screen << "probing top: " << who << " (Ctrl-C quits)\n"
             << summary(p) << "\n\n"
             << render_top(p, rows, width);
      std::string text = screen.str();
      // Home, each line then cleared to its end, the rest of the screen cleared: no flicker.
      std::string frame = "\x1b[H";
      for (size_t at = 0; at < text.size();) {
        size_t nl = text.find('\n', at);
        frame += text.substr(at, nl - at) + "\x1b[K\n";
        at = nl == std::string::npos ? text.size() : nl + 1;
      }
      std::cout << frame << "\x1b[J" << std::flush;
    } else {
      std::cout << "\x1b[H\x1b[2J"
                << "probing top: " << who << ": sampling at " << hz_text(args.hz) << " Hz...\n"
                << std::flush;
    }
    pollfd pfd{sigint.ok() ? sigint.fd() : -1, POLLIN, 0};
    if (::poll(&pfd, 1, 1000) > 0) return kExitOk;
    if (seconds_given &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count() >= args.seconds) {
      return kExitOk;
    }
  }
}

// Adds --hz, --mode, --gil, --idle; returns --hz.
CLI::Option* add_mode_options(CLI::App* cmd, ProfileArgs& args) {
  CLI::Option* hz = cmd->add_option("--hz", args.hz, "samples a second, up to 1000 (default 100)");
  cmd->add_option("--mode", args.mode,
                  "wall: every thread that runs or holds the GIL (default); cpu: threads on a CPU; gil: "
                  "the thread holding the GIL");
  cmd->add_flag("--gil", args.gil, "only samples that hold the GIL (--mode gil)");
  cmd->add_flag("--idle", args.idle, "keep samples of waiting threads too (wall mode)");
  cmd->add_flag("--async", args.tasks,
                "asyncio-aware: a sample running a task ends in the task's name and in the tasks awaiting\n"
                "it (where each waits), not in the event loop; with --idle, waiting tasks count too");
  return hz;
}

}  // namespace

void add_profile_command(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<ProfileArgs>();
  CLI::App* cmd = app.add_subcommand(
      "profile",
      "Sample every Python thread's stack for a while, without stopping anything or taking the GIL,\n"
      "and write a flamegraph, a speedscope, Chrome/Perfetto or Firefox Profiler trace, folded\n"
      "stacks, or a table of the hottest functions. --last renders the flight recorder instead: what the "
      "process did in\n"
      "the minutes before now, even if it is stuck now.");
  CLI::Option* seconds =
      cmd->add_option("--seconds", args->seconds, "how long to sample (default 10); Ctrl-C stops early");
  cmd->add_option("--last", args->last, "no new sampling: the flight recorder's last DURATION (90s, 5m, 1h)");
  CLI::Option* hz = add_mode_options(cmd, *args);
  cmd->add_flag("--merge-threads", args->merge_threads, "one tree for all threads instead of one per thread");
  cmd->add_flag("--subprocesses", args->subprocesses,
                "also every process under the target that has an agent (DataLoader workers, pools), each "
                "thread labelled with its process (a local pid only)");
  cmd->add_flag("--native", args->native,
                "native (C/C++) frames too, merged with the Python frames they run: read from outside with\n"
                "ptrace by this command (a local pid; no agent needed), stopping each thread it reads for a\n"
                "moment, at 20 Hz unless --hz says (at most 100)");
  cmd->add_option("--format", args->format,
                  "svg, speedscope, chrome (or perfetto), gecko (or firefox), folded or top; by default from "
                  "-o's name, top without -o");
  cmd->add_option("-o,--output", args->output, "write to FILE (default: standard output)");
  cmd->footer(
      "Formats:\n"
      "  svg         a flamegraph: click to zoom, Search (or Ctrl-F) to highlight; no network needed\n"
      "  speedscope  for https://www.speedscope.app or `speedscope FILE`, one profile per thread\n"
      "  chrome      Chrome trace events: ui.perfetto.dev or chrome://tracing, a track per thread\n"
      "  gecko       the Firefox Profiler's format (https://profiler.firefox.com), a track per thread\n"
      "  folded      'thread;outer;...;inner count' lines for flamegraph.pl, inferno, speedscope\n"
      "  top         the functions with the most samples, own and total\n"
      "\n"
      "Examples:\n"
      "  probing 1234 profile --seconds 10 -o run.svg\n"
      "  probing 1234 profile --seconds 30 --hz 1000 --format speedscope -o run.json\n"
      "  probing 1234 profile --last 5m --idle -o before-hang.svg\n"
      "  probing 1234 profile --mode cpu --seconds 5\n"
      "  probing 1234 profile --async --seconds 10 -o tasks.svg\n"
      "  probing 1234 profile --native --seconds 10 -o native.svg");
  on_run(cmd, [&ctx, args, seconds, hz] {
    if (!args->last.empty() && (seconds->count() > 0 || hz->count() > 0)) {
      return fail(Status(Code::kInvalidArgument,
                         "--last renders what the recorder kept: --seconds and --hz do not apply to it"));
    }
    if (args->tasks && (args->native || !args->last.empty())) {
      return fail(
          Status(Code::kInvalidArgument,
                 std::string("--async names the tasks a profile sees while it runs: ") +
                     (args->native ? "not with --native" : "the recorder's samples do not name tasks")));
    }
    if (args->native && (!args->last.empty() || args->subprocesses)) {
      return fail(Status(
          Code::kInvalidArgument,
          std::string("--native samples one process now, from outside: ") +
              (args->subprocesses ? "not with --subprocesses" : "the recorder keeps Python frames only")));
    }
    args->hz_given = hz->count() > 0;
    return run_profile(ctx, *args);
  });

  auto top_args = std::make_shared<ProfileArgs>();
  auto seconds_given = std::make_shared<bool>(false);
  CLI::App* top = app.add_subcommand(
      "top",
      "The functions taking the most time now, like top: redrawn every second on a terminal over the\n"
      "last --window seconds; printed once (after --seconds, default 2) when the output is a pipe.");
  add_mode_options(top, *top_args);
  top->add_option("--window", top_args->window, "seconds of samples each screen sums (default 5)");
  top->add_option("--rows", top_args->rows, "functions shown (default 20 on a terminal, 30 piped)");
  top->add_flag(
      "--subprocesses", top_args->subprocesses,
      "also every process under the target that has an agent (DataLoader workers, pools; a local pid)");
  top->add_option("--seconds", top_args->seconds, "stop after this long (piped: sample this long)")
      ->each([seconds_given](const std::string&) { *seconds_given = true; });
  on_run(top, [&ctx, top_args, seconds_given] { return run_top(ctx, *top_args, *seconds_given); });
}

}  // namespace probing::cli
