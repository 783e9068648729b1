// probing TARGET backtrace [--all] [--thread TID] [--locals] [--native] [--tasks] [--json]
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <set>

#include "cli/commands/process_tree.h"
#include "cli/common.h"
#include "core/proc_files.h"
#include "inspect/process.h"
#include "native/native_stack.h"

namespace probing::cli {
namespace {

struct BacktraceArgs {
  bool all = false;
  long long thread = 0;
  bool locals = false;
  bool native = false;
  bool subprocesses = false;
  bool tasks = false;
  bool json = false;
};

std::string text_of(const nlohmann::json& v, const std::string& fallback = "") {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number()) return v.dump();
  return fallback;
}

// Thread 12345 "MainThread" (tid 678, daemon, holds the GIL)
void print_thread(const nlohmann::json& t) {
  std::cout << "Thread";
  if (!t.value("thread_id", nlohmann::json()).is_null()) std::cout << " " << text_of(t["thread_id"], "?");
  if (t.contains("name") && t["name"].is_string()) std::cout << " \"" << t["name"].get<std::string>() << "\"";
  std::vector<std::string> tags;
  if (t.contains("native_thread_id") && t["native_thread_id"].is_number())
    tags.push_back("tid " + t["native_thread_id"].dump());
  if (t.contains("state") && t["state"].is_string()) tags.push_back(t["state"].get<std::string>());
  if (t.value("daemon", nlohmann::json()).is_boolean() && t["daemon"].get<bool>()) tags.push_back("daemon");
  if (t.value("holds_gil", false)) tags.push_back("holds the GIL");
  if (t.value("python", true) == false) tags.push_back("not a Python thread");
  if (!tags.empty()) {
    std::cout << " (";
    for (size_t i = 0; i < tags.size(); ++i) std::cout << (i ? ", " : "") << tags[i];
    std::cout << ")";
  }
  std::cout << "\n";
  // waiting for threading.Lock `theirs` at 0x7f3a... (held by thread 1396 "loader")
  // waiting for thread 1396 "loader" to end
  // waiting for a notify on threading.Condition at 0x7f3a...
  if (const auto w = t.find("waiting_for"); w != t.end() && w->is_object()) {
    std::string owner;
    if (w->contains("owner") && (*w)["owner"].is_number()) {
      owner = "thread " + (*w)["owner"].dump();
      if (const auto name = w->find("owner_name"); name != w->end() && name->is_string())
        owner += " \"" + name->get<std::string>() + "\"";
    }
    const std::string kind = text_of(w->value("kind", nlohmann::json()), "a lock");
    if (kind == "thread_end") {
      std::cout << "  waiting for " << (owner.empty() ? "a thread" : owner) << " to end\n";
    } else if (kind == "threading.Condition") {
      std::cout << "  waiting for a notify on threading.Condition at "
                << text_of(w->value("address", nlohmann::json()), "?") << "\n";
    } else {
      std::cout << "  waiting for " << kind << " `" << text_of(w->value("expr", nlohmann::json())) << "` at "
                << text_of(w->value("address", nlohmann::json()), "?");
      if (!owner.empty()) std::cout << " (held by " << owner << ")";
      std::cout << "\n";
    }
  }
  for (const auto& f : t.value("frames", nlohmann::json::array())) {
    if (f.value("frame_type", "Python") == "Native") {  // clock_nanosleep+0x4b (libc.so.6) [Native]
      std::cout << "  " << text_of(f.value("func", nlohmann::json()), "??");
      if (f.value("offset", 0) > 0) std::cout << "+0x" << std::hex << f["offset"].get<uint64_t>() << std::dec;
      std::cout << " (" << text_of(f.value("library", nlohmann::json()), "?") << ") [Native]\n";
      continue;
    }
    std::cout << "  " << text_of(f.value("func", nlohmann::json()), "?") << " ("
              << text_of(f.value("file", nlohmann::json()), "?");
    if (f.value("lineno", -1) > 0) std::cout << ":" << f["lineno"].get<int>();
    std::cout << ")";
    if (f.value("frame_type", "Python") != "Python")
      std::cout << " [" << f["frame_type"].get<std::string>() << "]";
    std::cout << "\n";
    if (f.contains("source") && f["source"].is_string())
      std::cout << "      " << f["source"].get<std::string>() << "\n";
    // In the order the function declares them, arguments first and marked.
    for (const auto& local : f.value("locals", nlohmann::json::array())) {
      if (!local.is_object()) continue;
      std::string text = text_of(local.value("value", nlohmann::json()));
      // One line per local: a multi-line repr (a module, a DataFrame) keeps its newlines escaped.
      for (size_t at = text.find('\n'); at != std::string::npos; at = text.find('\n', at + 2))
        text.replace(at, 1, "\\n");
      std::cout << "          " << text_of(local.value("name", nlohmann::json())) << " = " << text
                << (local.value("kind", "") == "argument" ? "   (argument)" : "") << "\n";
    }
  }
  if (t.contains("note") && t["note"].is_string())
    std::cout << "  (" << t["note"].get<std::string>() << ")\n";
}

// asyncio's tasks (`--tasks`), one event loop at a time, as a tree: a task that another awaits
// (directly, through a gather, or started by its TaskGroup) is shown under it; sibling tasks with
// nothing under them that wait at the same place are shown once, with their count and names.
class TaskTree {
 public:
  TaskTree(const nlohmann::json& loop, std::string thread) : thread_(std::move(thread)) {
    for (const auto& row : loop.value("tasks", nlohmann::json::array())) {
      if (!row.is_array() || row.size() < 6) continue;
      Task t;
      t.id = row[0].get<uint64_t>();
      t.name = text_of(row[2]);
      t.running = row[3].get<bool>();
      for (const auto& p : row[4]) t.parents.push_back(p.get<uint64_t>());
      t.chain = row[5].is_array() ? row[5] : nlohmann::json::array();
      index_[t.id] = tasks_.size();
      tasks_.push_back(std::move(t));
    }
    for (size_t i = 0; i < tasks_.size(); ++i) {
      bool awaited = false;
      for (uint64_t p : tasks_[i].parents) {
        if (auto it = index_.find(p); it != index_.end() && it->second != i) {
          children_[it->second].push_back(i);
          awaited = true;
        }
      }
      if (!awaited) roots_.push_back(i);
    }
  }

  void print() {
    size_t running = 0;
    for (const Task& t : tasks_) running += t.running;
    std::cout << "asyncio event loop in thread " << thread_ << ": " << tasks_.size()
              << (tasks_.size() == 1 ? " task" : " tasks");
    if (running > 0) std::cout << ", " << running << " running";
    std::cout << "\n";
    print_siblings(roots_, 2);
    std::vector<size_t> rest;  // in a cycle: tasks that await each other, none awaited from outside
    for (size_t i = 0; i < tasks_.size(); ++i)
      if (!shown_.count(i)) rest.push_back(i);
    if (!rest.empty()) std::cout << "  tasks that await each other (a cycle: none of them can finish):\n";
    for (size_t i : rest)
      if (!shown_.count(i)) print_siblings({i}, 2);
  }

 private:
  struct Task {
    uint64_t id = 0;
    std::string name;
    bool running = false;
    std::vector<uint64_t> parents;
    nlohmann::json chain;  // [func, file, line, source], innermost first; empty when running
  };

  // Where a task is, as a key: tasks with equal keys and no children are shown as one.
  std::string place(const Task& t) const {
    std::string key = t.running ? "running" : "waiting";
    for (const auto& f : t.chain) key += '\0' + text_of(f[0]) + '\0' + text_of(f[1]) + '\0' + text_of(f[2]);
    return key;
  }

  void print_siblings(const std::vector<size_t>& siblings, int indent) {
    // Leaves grouped by place; the largest group first, then by the first name.
    std::map<std::string, std::vector<size_t>> by_place;
    std::vector<std::vector<size_t>> groups;
    for (size_t i : siblings) {
      if (shown_.count(i)) continue;
      if (children_.count(i)) {
        groups.push_back({i});
      } else {
        by_place[place(tasks_[i])].push_back(i);
      }
    }
    auto name_less = [this](size_t a, size_t b) {  // Task-9 before Task-10
      const std::string &x = tasks_[a].name, &y = tasks_[b].name;
      return x.size() != y.size() ? x.size() < y.size() : x < y;
    };
    for (auto& [key, group] : by_place) {
      std::sort(group.begin(), group.end(), name_less);
      groups.push_back(std::move(group));
    }
    std::stable_sort(groups.begin(), groups.end(), [&](const auto& a, const auto& b) {
      return a.size() != b.size() ? a.size() > b.size() : name_less(a.front(), b.front());
    });
    for (const auto& group : groups) print_group(group, indent);
  }

  void print_group(const std::vector<size_t>& group, int indent) {
    const Task& first = tasks_[group.front()];
    const std::string pad(indent, ' ');
    std::cout << pad << (indent > 2 ? "awaits " : "");
    if (group.size() == 1) {
      std::cout << "Task \"" << first.name << "\"";
    } else {
      std::cout << group.size() << " tasks (";
      for (size_t k = 0; k < group.size() && k < 3; ++k)
        std::cout << (k ? ", " : "") << "\"" << tasks_[group[k]].name << "\"";
      std::cout << (group.size() > 3 ? ", ...)" : ")");
    }
    for (size_t i : group) shown_.insert(i);
    if (first.running) {
      std::cout << ", running: the stack of thread " << thread_ << " shows where\n";
    } else {
      std::cout << ", waiting:\n";
      for (const auto& f : first.chain) {
        std::cout << pad << "    " << text_of(f[0], "?") << " (" << text_of(f[1], "?");
        if (f[2].is_number() && f[2].get<long long>() > 0) std::cout << ":" << f[2].get<long long>();
        std::cout << ")\n";
        if (f.size() > 3 && f[3].is_string())
          std::cout << pad << "        " << f[3].get<std::string>() << "\n";
      }
    }
    if (group.size() == 1) {
      auto it = children_.find(group.front());
      if (it == children_.end()) return;
      for (size_t c : it->second) {  // awaited by more than one task: shown under the first only
        if (shown_.count(c)) std::cout << pad << "  awaits Task \"" << tasks_[c].name << "\" (shown above)\n";
      }
      print_siblings(it->second, indent + 2);
    }
  }

  std::string thread_;
  std::vector<Task> tasks_;
  std::map<uint64_t, size_t> index_;
  std::map<size_t, std::vector<size_t>> children_;
  std::vector<size_t> roots_;
  std::set<size_t> shown_;
};

// The `tasks` part of an agent's answer: each event loop's tasks, and notes on what is missing.
void print_tasks(const nlohmann::json& j, std::vector<std::string>* notes) {
  if (j.contains("tasks_error") && j["tasks_error"].is_string()) {
    notes->push_back(j["tasks_error"].get<std::string>());
    return;
  }
  const nlohmann::json& tasks = j.value("tasks", nlohmann::json());
  if (!tasks.is_object()) return;
  // The threads shown above, by ident: their order and name. The loops go in that order (the main
  // thread's first), then loops of threads not shown.
  std::map<unsigned long, std::pair<size_t, std::string>> shown;
  for (const auto& t : j.value("threads", nlohmann::json::array())) {
    const nlohmann::json& id = t.value("thread_id", nlohmann::json());
    const nlohmann::json& name = t.value("name", nlohmann::json());
    if (id.is_number_unsigned())
      shown.emplace(id.get<unsigned long>(),
                    std::make_pair(shown.size(), name.is_string() ? name.get<std::string>() : ""));
  }
  const nlohmann::json& loops = tasks.value("loops", nlohmann::json::array());
  std::vector<const nlohmann::json*> ordered;
  for (const auto& loop : loops) ordered.push_back(&loop);
  auto rank = [&shown](const nlohmann::json* loop) {
    auto it = shown.find(loop->value("thread", 0UL));
    return it == shown.end() ? shown.size() : it->second.first;
  };
  std::stable_sort(ordered.begin(), ordered.end(),
                   [&rank](const nlohmann::json* a, const nlohmann::json* b) { return rank(a) < rank(b); });
  for (const nlohmann::json* loop : ordered) {
    const unsigned long ident = loop->value("thread", 0UL);
    std::string thread = std::to_string(ident);
    if (auto it = shown.find(ident); it != shown.end() && !it->second.second.empty())
      thread += " \"" + it->second.second + "\"";
    std::cout << "\n";
    TaskTree(*loop, thread).print();
  }
  if (!tasks.value("asyncio", false)) {
    notes->push_back("no asyncio tasks: the process has not imported asyncio");
  } else if (loops.empty()) {
    notes->push_back("no asyncio tasks: no thread is running an event loop (in run_forever) now");
  }
  if (tasks.value("truncated", false))
    notes->push_back("the tasks were cut at 5000: the others are not shown");
}

// The text of line `lineno` of `file` as process `pid` sees it, stripped; "" when unreadable.
std::string source_line(pid_t pid, const std::string& file, int lineno) {
  static std::map<std::string, std::vector<std::string>> cache;
  if (lineno <= 0 || file.empty() || file[0] != '/') return "";
  auto it = cache.find(file);
  if (it == cache.end()) {
    // A regular file only (a FIFO would block, /dev/zero never ends), its first 16 MiB.
    std::vector<std::string> lines;
    const std::string path = "/proc/" + std::to_string(pid) + "/root" + file;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    struct stat st {};
    if (fd >= 0 && ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
      std::string text(static_cast<size_t>(std::min<off_t>(st.st_size, 16 << 20)), '\0');
      const ssize_t n = ::pread(fd, text.data(), text.size(), 0);
      text.resize(n > 0 ? static_cast<size_t>(n) : 0);
      for (size_t at = 0; at < text.size();) {
        size_t eol = std::min(text.find('\n', at), text.size());
        lines.push_back(text.substr(at, eol - at));
        at = eol + 1;
      }
    }
    if (fd >= 0) ::close(fd);
    it = cache.emplace(file, std::move(lines)).first;
  }
  if (static_cast<size_t>(lineno) > it->second.size()) return "";
  const std::string& line = it->second[lineno - 1];
  const size_t first = line.find_first_not_of(" \t");
  const size_t last = line.find_last_not_of(" \t\r");
  return first == std::string::npos ? "" : line.substr(first, last - first + 1);
}

// A backtrace as the command shows it: the answer's JSON, and the notes that go to stderr.
struct Answer {
  nlohmann::json j;
  std::vector<std::string> notes;
  bool any_frames = true;  // false: nothing could be read at all (a failure)
};

// The threads `args` asks for, as kernel tids of `pid`.
Result<std::vector<pid_t>> tids_to_read(pid_t pid, const BacktraceArgs& args) {
  std::vector<pid_t> tids;
  if (args.all) {
    Result<std::vector<pid_t>> all = inspect::list_threads(pid);
    if (!all.is_ok()) return all.status();
    tids = std::move(*all);
  } else if (args.thread != 0) {
    struct stat st {};
    const std::string task = "/proc/" + std::to_string(pid) + "/task/" + std::to_string(args.thread);
    pid_t tid = args.thread > 0 && args.thread < (1 << 22) && ::stat(task.c_str(), &st) == 0
                    ? static_cast<pid_t>(args.thread)
                    : native::tid_for_ident(pid, static_cast<unsigned long>(args.thread));
    if (tid == 0) {
      return Status(Code::kNotFound, "process " + std::to_string(pid) + " has no thread " +
                                         std::to_string(args.thread) +
                                         " (give a kernel tid or a threading ident)");
    }
    tids.push_back(tid);
  } else {
    tids.push_back(pid);
  }
  if (tids.empty()) return Status(Code::kNotFound, "no process " + std::to_string(pid));
  return tids;
}

// The stacks of local process `pid` read from outside (native/native_stack.h); its agent, when
// `ctx` reaches one, only names the threads. `no_agent`: for a process without an agent, only the
// Python frames (the answer plain `backtrace` gives then).
Result<Answer> outside_answer(const Context& ctx, pid_t pid, const BacktraceArgs& args, bool no_agent) {
  Result<std::vector<pid_t>> tids = tids_to_read(pid, args);
  if (!tids.is_ok()) return tids.status();
  Result<native::Capture> cap = native::capture(pid, *tids);
  const std::string no_agent_text = "process " + std::to_string(pid) +
                                    " has no probing agent (attach one with: probing " + std::to_string(pid) +
                                    " inject), and its Python stacks could not be read from outside: ";
  if (!cap.is_ok())
    return no_agent ? Status(Code::kUnavailable, no_agent_text + cap.status().message()) : cap.status();
  if (no_agent && cap->python_version.empty()) {
    const bool no_python =
        cap->notes.empty() || cap->notes.front().find("no CPython found") != std::string::npos;
    if (no_python) {  // inject would refuse it too: suggest nothing
      return Status(Code::kUnavailable,
                    "process " + std::to_string(pid) +
                        " is not a Python process (no CPython runtime is mapped in it), so it " +
                        "has no Python stack; `probing " + std::to_string(pid) +
                        " backtrace --native` shows its native one");
    }
    return Status(Code::kUnavailable, no_agent_text + cap->notes.front());
  }
  // Asked after the capture, so that the agent's work does not show in the stacks.
  Answer a;
  std::map<long, nlohmann::json> known;
  if (no_agent) {
    a.notes.push_back("process " + std::to_string(pid) +
                      " has no agent: its Python stacks were read from outside (ptrace), without locals" +
                      (args.tasks ? " or asyncio tasks" : "") +
                      (args.locals || args.tasks ? " (they need the agent)" : "") + "; `probing " +
                      std::to_string(pid) + " inject` attaches one");
  } else {
    known = agent_threads(ctx, &a.notes);
  }
  a.any_frames = false;
  a.j = {{"native", !no_agent},
         {"from_outside", true},
         {"python", cap->python_version},
         {"threads", nlohmann::json::array()}};
  for (const native::ThreadStack& t : cap->threads) {
    if (no_agent && !t.python && args.all) continue;  // a thread Python does not know
    nlohmann::json thread = {{"thread_id", t.python ? nlohmann::json(t.thread_id) : nlohmann::json()},
                             {"native_thread_id", t.tid},
                             {"name", t.comm},
                             {"daemon", nullptr},
                             {"is_main", t.tid == pid},
                             {"holds_gil", t.holds_gil},
                             {"python", t.python},
                             {"stopped_ms", t.stopped_ms},
                             {"truncated", t.truncated},
                             {"frames", nlohmann::json::array()}};
    if (auto it = known.find(t.tid); it != known.end()) {
      thread["name"] = it->second.value("name", nlohmann::json(t.comm));
      thread["daemon"] = it->second.value("daemon", nlohmann::json());
    } else if (t.tid == pid && t.python) {
      thread["name"] = "MainThread";
    }
    int depth = 0;
    for (const native::Frame& f : t.frames) {
      if (no_agent && !f.python) continue;
      a.any_frames = true;
      nlohmann::json frame = {{"depth", depth++}, {"func", f.func}, {"file", f.file}};
      if (f.python) {
        frame["lineno"] = f.lineno;
        std::string source = source_line(pid, f.file, f.lineno);
        frame["source"] = source.empty() ? nlohmann::json() : nlohmann::json(source);
        frame["frame_type"] = "Python";
      } else {
        frame["lineno"] = nullptr;
        frame["source"] = nullptr;
        frame["frame_type"] = "Native";
        frame["library"] = f.file.substr(f.file.rfind('/') + 1);
        frame["address"] = f.address;
        frame["offset"] = f.offset;
      }
      thread["frames"].push_back(std::move(frame));
    }
    if (!t.note.empty()) thread["note"] = t.note;
    if (std::string state = thread_activity(pid, t.tid); !state.empty()) thread["state"] = state;
    a.j["threads"].push_back(std::move(thread));
  }
  for (const std::string& n : cap->notes) a.notes.push_back(n);
  a.j["notes"] = a.notes;
  return a;
}

// The agent's own answer (GET /backtrace), with the GIL where it can be had.
Result<Answer> agent_answer(client::Client& client, const BacktraceArgs& args) {
  std::string path = "/backtrace?";
  if (args.all) path += "all=1&";
  if (args.thread != 0) path += "thread=" + std::to_string(args.thread) + "&";
  if (args.locals) path += "locals=1&";
  if (args.tasks) path += "tasks=1&";
  path.pop_back();
  Result<client::Response> reply = client.request("GET", path, "", 15);
  if (!reply.is_ok()) return reply.status();
  Answer a;
  a.j = reply->json();
  if (reply->status != 200) return Status(Code::kUnavailable, reply->error_message());
  if (a.j.is_discarded() || !a.j.is_object()) {
    return Status(Code::kInternal, "the agent sent a reply that is not JSON: " + reply->body.substr(0, 200));
  }
  for (const auto& n : a.j.value("notes", nlohmann::json::array())) {
    if (n.is_string()) a.notes.push_back(n.get<std::string>());
  }
  return a;
}

// The answer as text: how it was read, each thread, then the notes on stderr.
void print_answer(const Answer& a) {
  const nlohmann::json& j = a.j;
  if (j.value("from_outside", false) && !j.value("native", false))
    std::cout << "(no agent: read from outside)\n";
  if (j.value("gil_free", false)) {
    std::cout << "(read without the GIL";
    const nlohmann::json& h = j.value("gil_holder", nlohmann::json());
    if (h.is_object()) {
      std::cout << "; thread " << text_of(h.value("thread_id", nlohmann::json()), "?");
      if (h.value("name", nlohmann::json()).is_string())
        std::cout << " \"" << h["name"].get<std::string>() << "\"";
      std::cout << " holds it";
    }
    std::cout << ")\n";
  }
  bool first = true;
  for (const auto& t : j.value("threads", nlohmann::json::array())) {
    if (!first) std::cout << "\n";
    first = false;
    print_thread(t);
  }
  std::vector<std::string> notes = a.notes;
  print_tasks(j, &notes);
  for (const std::string& n : notes) std::cerr << "probing: note: " << n << "\n";
}

int print_result(const Result<Answer>& a, const BacktraceArgs& args) {
  if (!a.is_ok()) return fail(a.status());
  if (args.json) {
    std::cout << a->j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    print_answer(*a);
  }
  // Nothing read at all (the thread would not stop, another tracer holds it): a failure.
  return a->any_frames ? kExitOk : kExitFailed;
}

// Whether `status` (from connecting to `ctx`'s target) means a local process with no agent that
// can be read from outside instead: still there, and not stopped (its threads could not be
// stopped for the read; the client's message says how to resume it).
bool readable_without_agent(const Context& ctx, const Status& status) {
  Result<client::Target> target = client::parse_target(ctx.target);
  if (status.code() != Code::kUnavailable || !target.is_ok() || target->kind != client::Target::Kind::kPid) {
    return false;
  }
  std::optional<ProcStat> st = read_proc_stat(target->pid);
  return !client::process_exited(target->pid, 0) && !(st && st->state() == 'T');
}

// One process's answer: from its agent, else (or with --native) read from outside.
Result<Answer> answer_for(const Context& ctx, const BacktraceArgs& args) {
  if (args.native) {
    Result<pid_t> pid = local_pid(ctx, "--native");
    if (!pid.is_ok()) return pid.status();
    return outside_answer(ctx, *pid, args, /*no_agent=*/false);
  }
  auto client = connect_target(ctx);
  if (client.is_ok()) return agent_answer(**client, args);
  if (!readable_without_agent(ctx, client.status())) return client.status();
  Result<pid_t> pid = local_pid(ctx, "backtrace");
  if (!pid.is_ok()) return pid.status();
  return outside_answer(ctx, *pid, args, /*no_agent=*/true);
}

// --subprocesses: every process of the tree under the target, each labelled, each read as a
// plain `backtrace` of it would be (its agent, else from outside). Zombies and processes that
// are not Python are listed, not read.
int run_tree(const Context& ctx, const BacktraceArgs& args) {
  Result<pid_t> root = local_pid(ctx, "--subprocesses");
  if (!root.is_ok()) return fail(root.status());
  bool truncated = false;
  Result<std::vector<TreeMember>> tree = read_tree(*root, &truncated);
  if (!tree.is_ok()) return fail(tree.status());
  nlohmann::json processes = nlohmann::json::array();
  int read = 0;
  for (const TreeMember& m : *tree) {
    nlohmann::json entry = m.to_json();
    std::string skipped;
    if (m.p.state == 'Z' || m.p.state == 'X') {
      skipped = "a zombie: it has exited, and its parent has not collected it";
    } else if (m.p.python.empty()) {
      skipped = "not a Python process";
    }
    Context sub = ctx;
    sub.target = std::to_string(m.p.pid);
    Result<Answer> a =
        skipped.empty() ? answer_for(sub, args) : Result<Answer>(Status(Code::kUnavailable, skipped));
    if (a.is_ok()) {
      ++read;
      entry["backtrace"] = a->j;
    } else {
      entry["error"] = a.status().message();
    }
    if (!args.json) {
      if (!processes.empty()) std::cout << "\n";
      std::cout << "Process " << m.p.pid << " (" << m.role
                << (m.p.depth > 0 ? " of " + std::to_string(m.p.ppid) : std::string())
                << ", agent: " << agent_text(m.agent) << ") " << m.command() << "\n";
      if (a.is_ok()) {
        print_answer(*a);
      } else {
        std::cout << "  (not read: " << a.status().message() << ")\n";
      }
    }
    processes.push_back(std::move(entry));
  }
  if (args.json) {
    nlohmann::json out = {{"processes", std::move(processes)}, {"truncated", truncated}};
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  if (truncated)
    std::cerr << "probing: note: the tree was cut at " << kTreeLimits.max_processes << " processes\n";
  return read > 0 ? kExitOk : kExitFailed;
}

int run_backtrace(const Context& ctx, const BacktraceArgs& args) {
  if (args.native && args.locals) {
    return fail(Status(Code::kInvalidArgument,
                       "--locals cannot be combined with --native (locals are read in "
                       "the target with the GIL; native frames from outside)"));
  }
  if (args.native && args.tasks) {
    return fail(Status(Code::kInvalidArgument,
                       "--tasks cannot be combined with --native (asyncio's tasks are read in the target "
                       "with the GIL; native frames from outside)"));
  }
  if (args.subprocesses) return run_tree(ctx, args);
  return print_result(answer_for(ctx, args), args);
}

}  // namespace

Result<nlohmann::json> native_backtrace(const Context& ctx, pid_t pid, bool all) {
  BacktraceArgs args;
  args.all = all;
  args.native = true;
  Result<Answer> a = outside_answer(ctx, pid, args, /*no_agent=*/false);
  if (!a.is_ok()) return a.status();
  return a->j;
}

void add_backtrace_command(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<BacktraceArgs>();
  CLI::App* cmd = app.add_subcommand(
      "backtrace",
      "Print the target's Python stack, innermost frame first: the main thread by default.\n"
      "Answers within 50 ms even when another thread holds the GIL. A local process with\n"
      "no agent has its Python stacks read from outside (ptrace; no locals), and the answer says so.");
  cmd->add_flag("--all", args->all, "every thread, with its name, tid and daemon flag");
  cmd->add_option("--thread", args->thread, "one thread, by threading ident or kernel tid");
  cmd->add_flag("--locals", args->locals, "show each frame's local variables (briefly)");
  cmd->add_flag("--native", args->native,
                "native (C/C++) frames too, merged with the Python frames they run; read from outside with\n"
                "ptrace (each thread is stopped for a few ms), so the target must be a local pid");
  cmd->add_flag(
      "--subprocesses", args->subprocesses,
      "every process of the tree under the target too (DataLoader workers, multiprocessing pools),\n"
      "each labelled with its pid and role, each read from its agent or else from outside");
  cmd->add_flag(
      "--tasks", args->tasks,
      "asyncio's tasks too: each event loop's tasks, where each waits (its await chain), which task\n"
      "awaits which; the stacks of the threads running a loop are shown beside the one asked for");
  cmd->add_flag("--json", args->json, "print the stacks as JSON");
  on_run(cmd, [&ctx, args] { return run_backtrace(ctx, *args); });
}

}  // namespace probing::cli
